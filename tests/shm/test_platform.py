"""The platform guard: only a 64-bit interpreter on x86-64 runs the lock-free rings."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from mycelium.errors import MyceliumError, UnsupportedPlatform
from mycelium.shm import ordering


def test_this_machine_passes() -> None:
    ordering.check_platform()


@pytest.mark.parametrize("machine", ["aarch64", "armv7l", "ppc64le", "i686", "x86"])
def test_other_cpus_are_refused(monkeypatch: pytest.MonkeyPatch, machine: str) -> None:
    monkeypatch.setattr(ordering.platform, "machine", lambda: machine)
    with pytest.raises(UnsupportedPlatform, match=machine):
        ordering.check_platform()


def test_a_32_bit_interpreter_on_a_64_bit_kernel_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ordering.platform, "machine", lambda: "x86_64")
    real = struct.calcsize
    monkeypatch.setattr(ordering.struct, "calcsize", lambda f: 4 if f == "P" else real(f))
    with pytest.raises(UnsupportedPlatform, match="32-bit"):
        ordering.check_platform()


def test_a_small_maxsize_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordering.sys, "maxsize", 2**31 - 1)
    with pytest.raises(UnsupportedPlatform, match="32-bit") as info:
        ordering.check_platform()
    assert isinstance(info.value, MyceliumError)


def test_the_cli_prints_one_line_on_a_refused_platform() -> None:
    code = (
        "import platform, sys; platform.machine = lambda: 'aarch64'; "
        "sys.argv = ['mycelium', 'cleanup', '--dry-run']; "
        "from mycelium.cli import main; main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "x86-64" in lines[0] and "aarch64" in lines[0], out.stderr
    assert "Traceback" not in out.stderr
