"""The test side of tests/ros/dynamics_peers.py: one JSON command in, one result line out."""

from __future__ import annotations

import json
import selectors
import subprocess
import time

import pytest


RESULT_MARGIN = 30.0  # s beyond an op's own wait for its result line (a loaded machine, a slow service call)


class Peer:
    """dynamics_peers.py: one JSON command in, one result out."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.expect("ready", timeout=60)

    def do(self, op: str, timeout: float = 60.0, **args) -> dict:
        """``timeout``: how long a waiting op (wait_model, wait_diagnostics) waits, and, with a margin, how long
        its result may take (without passing it on, those ops waited their own 20 s whatever the caller asked)."""
        self.proc.stdin.write(json.dumps({"op": op, "timeout": timeout, **args}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.expect("result ", timeout + RESULT_MARGIN))

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    line = self.proc.stdout.readline()
                    if line.startswith(prefix):
                        return line[len(prefix):].strip()
                    if not line:
                        break
        self.proc.kill()
        pytest.fail(f"dynamics_peers.py: no '{prefix}' line within {timeout} s; stderr:\n{self.proc.stderr.read()}")
