"""Starting a broker from Python: the same validation as TOML, and ``Broker`` (a real
coordinator in a child process) leaves no process, segment or directory behind, whether
its block ends normally, raises with a client still open, or its parent is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from harness import wait_for

import mycelium
from mycelium import Broker, BrokerConfig, TopicConfig, run_broker
from mycelium.config import Routing
from mycelium.errors import BrokerUnavailable, ConfigError
from mycelium.shm.segment import broker_id_for, list_segments, unlink_quietly

CONFIG = BrokerConfig(
    topics=(TopicConfig(name="ticks"), TopicConfig(name="jobs", routing=Routing.QUEUE))
)
GONE_TIMEOUT_S = 15.0


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _assert_nothing_left(socket_path: str, pid: int) -> None:
    assert _gone(pid), f"broker {pid} still runs"
    left = list_segments(broker_id_for(socket_path))
    for name in left:
        unlink_quietly(name)
    assert not left, f"left behind: {left}"
    assert not Path(socket_path).parent.exists(), "the private directory stayed"


def test_a_broker_in_a_block_serves_and_leaves_nothing() -> None:
    with Broker(CONFIG) as b:
        assert b.running and b.pid is not None
        pid, socket_path = b.pid, b.socket_path
        assert oct(os.stat(Path(socket_path).parent).st_mode & 0o777) == "0o700"
        with b.consumer("ticks") as c, b.producer() as p:
            p.publish("ticks", b"tick")
            assert c.recv(timeout=5.0) == b"tick"
        with b.consumer("jobs", group="workers") as c, b.producer() as p:
            p.publish("jobs", b"job")
            assert c.recv(timeout=5.0) == b"job"
        assert list_segments(broker_id_for(socket_path))  # it did make some
    assert not b.running and b.pid is None
    _assert_nothing_left(socket_path, pid)


def test_an_error_in_the_block_with_a_client_left_open_still_leaves_nothing() -> None:
    with pytest.raises(RuntimeError, match="boom"), Broker(CONFIG) as b:
        pid, socket_path = b.pid, b.socket_path
        assert pid is not None
        c = b.consumer("ticks")  # never closed before the broker goes
        p = b.producer()
        p.publish("ticks", b"x")
        raise RuntimeError("boom")
    _assert_nothing_left(socket_path, pid)
    c.close()  # a client outliving its broker closes quietly
    p.close()


def test_a_bad_python_config_is_refused_as_toml_would_be(tmp_path: Path) -> None:
    bad = BrokerConfig(topics=(TopicConfig(name="ticks", buffer_size=0),))
    with pytest.raises(ConfigError) as info:
        Broker(bad)
    assert info.value.path == "topics[0].buffer_size"
    with pytest.raises(ConfigError, match="expected one of: fanout, queue") as info:
        run_broker(
            BrokerConfig(topics=(TopicConfig(name="ticks", routing="broadcast"),)),  # type: ignore[arg-type]
            tmp_path / "never.sock",
        )
    assert info.value.path == "topics[0].routing"
    with pytest.raises(ConfigError, match="duplicate topic name"):
        Broker(BrokerConfig(topics=(TopicConfig(name="a"), TopicConfig(name="a"))))
    assert not (tmp_path / "never.sock").exists()


def test_a_broker_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    with Broker(CONFIG) as first:
        second = Broker(CONFIG, socket_path=first.socket_path, start_timeout=10.0)
        with pytest.raises(BrokerUnavailable, match="already running"):
            second.start()
        assert not second.running
        with first.consumer("ticks") as c, first.producer() as p:  # the first serves on
            p.publish("ticks", b"still")
            assert c.recv(timeout=5.0) == b"still"


def test_the_broker_stops_when_its_parent_dies(tmp_path: Path) -> None:
    """The lifeline: a notebook kernel killed with SIGKILL takes its broker with it."""
    script = textwrap.dedent(
        """
        import sys, mycelium
        b = mycelium.Broker().start()
        print(b.pid, b.socket_path, flush=True)
        sys.stdin.read()
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid_text, socket_path = parent.stdout.readline().split()
        pid = int(pid_text)
        assert not _gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(GONE_TIMEOUT_S)
        wait_for(lambda: _gone(pid), GONE_TIMEOUT_S, f"broker {pid} to stop")
        wait_for(
            lambda: not list_segments(broker_id_for(socket_path)),
            GONE_TIMEOUT_S,
            "the broker's segments to go",
        )
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if "pid" in locals() and not _gone(pid):
            os.kill(pid, signal.SIGKILL)
        if "socket_path" in locals():
            for name in list_segments(broker_id_for(socket_path)):
                unlink_quietly(name)
            for leftover in Path(socket_path).parent.glob("*"):
                leftover.unlink()
            Path(socket_path).parent.rmdir()


def test_the_launch_names_are_exported() -> None:
    for name in ("Broker", "BrokerConfig", "TopicConfig", "run_broker"):
        assert name in mycelium.__all__ and getattr(mycelium, name) is not None
