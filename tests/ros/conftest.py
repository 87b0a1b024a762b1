"""Fixtures of the ROS tests: a ROS domain of each test's own, and child processes in it."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import pytest

from mbrl_ros.ros_env import workspace_env


@pytest.fixture
def ros_env(request) -> dict[str, str]:
    """The workspace environment, in a ROS domain (1..200) derived from the pid and test name."""
    domain = 1 + zlib.crc32(f"{os.getpid()}:{request.node.nodeid}".encode()) % 200
    return workspace_env(domain_id=domain)


@pytest.fixture
def spawn(ros_env):
    """Start Python processes with the workspace environment; whatever still runs at the end is stopped."""
    procs: list[subprocess.Popen] = []

    def start(*argv: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, *argv], env=ros_env, text=True, stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
