"""Another local user (uid ``nobody``, from a forked child) against a root broker.

Squatting the names a broker used to derive, planting a segment for it to adopt, and
running ``mycelium cleanup`` on its objects: each is refused or ignored clearly, and no
segment the broker uses is owned by another uid or writable by others.
"""

from __future__ import annotations

import os
import stat
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import posix_ipc
import pytest
from broker_helpers import BrokerProcess

from mycelium import Consumer, Producer
from mycelium.cli.broker import cleanup
from mycelium.coordinator import cleanup as _cleanup_module  # noqa: F401 - imported for the child
from mycelium.coordinator.state_file import check_runtime_dir, state_path, write_registry_name
from mycelium.errors import BrokerUnavailable, SegmentError
from mycelium.shm.layout import KIND_LANE, KIND_REGISTRY, REGISTRY_SEGMENT_BYTES
from mycelium.shm.segment import SHM_DIR, Segment, check_doorbell, unlink_quietly

NOBODY = 65534


def as_nobody(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child that became uid/gid ``nobody``; fail if it fails."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the hostile child failed"


def _squat(name: str, kind: int = KIND_REGISTRY, size: int = REGISTRY_SEGMENT_BYTES) -> None:
    def plant() -> None:
        Segment.create(name, size, kind, mode=0o666).close()

    as_nobody(plant)


@pytest.fixture
def squatted() -> Iterator[list[str]]:
    """Names planted by ``nobody``; removed afterwards whatever happens."""
    names: list[str] = []
    yield names
    for name in names:
        unlink_quietly(name)


def _stat(name: str) -> os.stat_result:
    entry = ("sem." if name.startswith("sem:") else "") + name.removeprefix("sem:").lstrip("/")
    return os.stat(SHM_DIR / entry)


def test_a_segment_of_another_uid_is_refused(squatted: list[str]) -> None:
    name = f"/myc-trust{os.getpid()}-L1.x"
    squatted.append(name)
    _squat(name, KIND_LANE, 1 << 16)
    assert _stat(name).st_uid == NOBODY
    with pytest.raises(SegmentError, match="owned by uid 65534"):
        Segment.attach(name, KIND_LANE)


def test_a_segment_wider_than_configured_is_refused() -> None:
    name = f"/myc-trust{os.getpid()}-L2.x"
    seg = Segment.create(name, 1 << 16, KIND_LANE, mode=0o666)
    try:
        with pytest.raises(SegmentError, match="mode 0666"):
            Segment.attach(name, KIND_LANE)
    finally:
        seg.close()
        seg.unlink()


def test_a_doorbell_of_another_uid_is_refused(squatted: list[str]) -> None:
    name = f"/myc-trust{os.getpid()}-D3.x"
    squatted.append("sem:" + name)
    as_nobody(lambda: posix_ipc.Semaphore(name, posix_ipc.O_CREX, 0o666, 0).close())
    with pytest.raises(SegmentError, match="owned by uid 65534"):
        check_doorbell(name)


def test_a_squatted_broker_starts_on_segments_of_its_own(
    make_broker: Callable[..., BrokerProcess], squatted: list[str]
) -> None:
    b = make_broker(start=False)
    # The name a broker used to derive from its socket path, and one "adoptable" name
    # the attacker managed to get into the state file.
    for name in (f"/myc-{b.broker_id}-R", f"/myc-{b.broker_id}-R.planted"):
        squatted.append(name)
        _squat(name)
    write_registry_name(b.socket, squatted[1])
    b.start()
    with Consumer("signals", socket_path=b.socket) as c, Producer(socket_path=b.socket) as p:
        p.publish("signals", b"ours")
        assert c.recv(timeout=5.0) == b"ours"
        stats = b.stats()
        assert stats["broker"]["refused_segments"] >= 1
        ours = [n for n in b.leftovers() if n not in squatted]
        assert len(ours) >= 3  # registry, lane, consumer state (+ doorbell)
        for name in ours:
            st = _stat(name)
            assert st.st_uid == os.geteuid(), name
            assert not stat.S_IMODE(st.st_mode) & 0o077, name
    assert "not adopting registry" in b.log()
    state = os.stat(state_path(b.socket))
    assert state.st_uid == os.geteuid() and stat.S_IMODE(state.st_mode) == 0o600
    for name in squatted:  # the attacker's objects are refused, never removed or used
        assert _stat(name).st_uid == NOBODY


def _cleanup_as_nobody() -> tuple[int, str]:
    """Run the ``cleanup`` command in a forked child that became ``nobody``: its exit code
    and everything it printed. (No new interpreter, nor typer's lazy imports: the
    interpreter's files may be unreadable to ``nobody``.)"""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            sys.stdout = sys.stderr = os.fdopen(write_fd, "w")  # pytest replaced both
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            cleanup(socket=None, dry_run=False)
            code = 0
        except BaseException:
            traceback.print_exc()  # shown in the failing assertion
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as out:
        text = out.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


def test_cleanup_as_another_uid_prints_one_clear_line(broker: BrokerProcess) -> None:
    with Consumer("signals", socket_path=broker.socket):
        code, out = _cleanup_as_nobody()
        assert code == 0, out
        assert "Traceback" not in out
        lines = [line for line in out.splitlines() if "other users" in line]
        assert len(lines) == 1 and lines[0].startswith("skipped"), out
        assert broker.answers()


def test_the_runtime_directory_must_be_the_brokers_own(tmp_path: Path) -> None:
    check_runtime_dir(tmp_path / "new")
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(BrokerUnavailable, match="writable by other users"):
        check_runtime_dir(open_dir)
    open_dir.chmod(0o1777)  # sticky, as /tmp: others cannot replace our files
    check_runtime_dir(open_dir)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(BrokerUnavailable, match="belongs to uid 65534"):
        check_runtime_dir(foreign)
