"""Two hosts on one machine: network namespaces "robot" and "workstation" joined by a veth pair.

Shared by the partition test (issue 9 §3) and the roles test (issue 13 §1). Processes are put in a
namespace with ``ip netns exec``; DDS discovers across the link with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET
in a ROS domain of the test's own. Needs root (CAP_NET_ADMIN) and iproute2: where namespaces cannot be
made the test is skipped with the reason; CI on the project's machines runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest

from mbrl_ros.ros_env import REPO_ROOT, workspace_env
from peer_client import Peer

PEER = Path(__file__).with_name("dynamics_peers.py")


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


def host_tag(label: str) -> int:
    """A number of this test's own (0..249): the namespaces' names, addresses and ROS domain."""
    return zlib.crc32(f"{os.getpid()}:{label}".encode()) % 250


def subnet_env(tag: int, log_dir: Path) -> dict[str, str]:
    """The workspace environment in a ROS domain of the test's own, discovering across the veth link."""
    env = workspace_env(domain_id=1 + tag % 200)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET"  # across the veth link, not only this host's loopback
    env["ROS_LOG_DIR"] = str(log_dir)
    return env


def exec_in(namespace: str, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


@contextmanager
def two_hosts(tag: int):
    """Network namespaces robot and workstation, joined by a veth pair (10.213.<tag>.1 and .2, /24);
    yields (robot, workstation, the robot's end of the link)."""
    if shutil.which("ip") is None:
        pytest.skip("network namespaces: the 'ip' command (iproute2) is not installed")
    robot, workstation = f"mbrl-robot-{tag}", f"mbrl-ws-{tag}"
    made = ip("netns", "add", robot)
    if made.returncode != 0:
        pytest.skip(f"network namespaces: cannot create one ('ip netns add {robot}': "
                    f"{made.stderr.strip()}); it needs root or CAP_NET_ADMIN")
    try:
        link = f"mbrl-r{tag}"
        steps = [("netns", "add", workstation),
                 ("link", "add", link, "type", "veth", "peer", "name", f"mbrl-w{tag}"),
                 ("link", "set", link, "netns", robot), ("link", "set", f"mbrl-w{tag}", "netns", workstation),
                 ("-n", robot, "addr", "add", f"10.213.{tag}.1/24", "dev", link),
                 ("-n", workstation, "addr", "add", f"10.213.{tag}.2/24", "dev", f"mbrl-w{tag}"),
                 ("-n", robot, "link", "set", "lo", "up"), ("-n", workstation, "link", "set", "lo", "up"),
                 ("-n", robot, "link", "set", link, "up"), ("-n", workstation, "link", "set", f"mbrl-w{tag}", "up")]
        for step in steps:
            done = ip(*step)
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr}"
        yield robot, workstation, link
    finally:
        ip("netns", "del", robot)  # takes the veth pair with it
        ip("netns", "del", workstation)


def set_link(namespace: str, link: str, state: str) -> None:
    done = ip("-n", namespace, "link", "set", link, state)
    assert done.returncode == 0, done.stderr


@contextmanager
def peers(env: dict[str, str], ros_namespace: str):
    """``start(netns)``: a dynamics_peers.py process (the test's hands on DDS) in that network namespace."""
    procs: list[subprocess.Popen] = []

    def start(namespace: str) -> Peer:
        proc = subprocess.Popen(exec_in(namespace, [sys.executable, str(PEER), ros_namespace]),
                                env=env, cwd=REPO_ROOT, text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        return Peer(proc)

    try:
        yield start
    finally:
        for proc in procs:
            proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
