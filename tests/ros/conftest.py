"""Fixtures of the ROS tests: a ROS domain of each test's own, and child processes in it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mbrl_ros.ros_env import free_domain_id, workspace_env


@pytest.fixture
def ros_env(request) -> dict[str, str]:
    """The workspace environment, in a ROS domain (1..200) derived from the pid and test name."""
    domain = free_domain_id(request.node.nodeid)
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
