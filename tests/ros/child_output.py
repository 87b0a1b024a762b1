"""Reading the stdout of the ROS tests' child processes (imported by the tests of this folder)."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
import weakref

import pytest

# Bytes read from a child's stdout but not yet returned as a line, per process. Read from the pipe
# unbuffered: a buffered readline can hold complete lines the selector no longer reports (two lines that
# arrive together: the second waits in Python's buffer while select sees an empty pipe).
_unread: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float, others=()) -> str:
    """The first stdout line of proc starting with prefix; fails with the stderr of all if none in time."""
    deadline = time.monotonic() + timeout
    pending = _unread.get(proc, b"")
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(prefix):
                    _unread[proc] = pending
                    return text[len(prefix):].strip()
            if time.monotonic() >= deadline:
                break
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(fd, 1 << 16)
                if not chunk:  # EOF: the process ended
                    break
                pending += chunk
    _unread[proc] = pending
    report = []
    for p in (proc, *others):
        if p.poll() is None:
            p.kill()
        report.append(f"--- {' '.join(p.args[-6:])} (rc {p.wait()}):\n{p.stderr.read()}")
    pytest.fail(f"no '{prefix}' line in {timeout} s\n" + "\n".join(report))
