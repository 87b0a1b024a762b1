"""Reading the stdout of the ROS tests' child processes (imported by the tests of this folder)."""

from __future__ import annotations

import selectors
import subprocess
import time

import pytest


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float, others=()) -> str:
    """The first stdout line of proc starting with prefix; fails with the stderr of all if none in time."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                line = proc.stdout.readline()
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
                if not line:  # EOF: the process ended
                    break
    report = []
    for p in (proc, *others):
        if p.poll() is None:
            p.kill()
        report.append(f"--- {' '.join(p.args[-6:])} (rc {p.wait()}):\n{p.stderr.read()}")
    pytest.fail(f"no '{prefix}' line in {timeout} s\n" + "\n".join(report))
