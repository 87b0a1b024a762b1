"""`mbrl-ros demo` stopped by SIGTERM or Ctrl-C at any moment, as a service manager, a CI timeout or a user stops it:
the demo says so, exits with the shell's code for the signal, and only once every process of its stack has ended.

Before, SIGTERM killed the demo at once (Python's default): no cleanup ran, the nodes were left to the kernel's
parent-death signal and the busy ones (the niced trainer in an epoch) ran on, re-parented to pid 1, after the demo
had gone. The processes of a run are found by its run folder, which every node's command line names (its
parameter files), whichever process group or parent they have.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbrl_ros.ros_env import free_domain_id

NODES = ("launch_check", "sim_car", "estimator", "dynamics_server", "controller", "data_logger", "trainer")


def run_processes(marker: str) -> dict[int, str]:
    """Live processes (zombies aside) whose command line contains ``marker``: pid -> command line."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state not in (b"Z", b"X"):
            found[int(entry)] = cmdline
    return found


def node_processes(marker: str) -> dict[int, str]:
    """The stack's node processes of the run (every node gets --ros-args), by pid: the node's executable."""
    return {pid: next((n for n in NODES if f"/{n} " in cmd), cmd[:80])
            for pid, cmd in run_processes(marker).items() if "--ros-args" in cmd}


def wait_until(condition, timeout: float, what: str, demo: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        if demo.poll() is not None:
            pytest.fail(f"the demo exited ({demo.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("sig, moment", [(signal.SIGTERM, "starting"), (signal.SIGTERM, "training"),
                                         (signal.SIGINT, "starting"), (signal.SIGINT, "training")],
                         ids=["SIGTERM-starting", "SIGTERM-training", "SIGINT-starting", "SIGINT-training"])
def test_a_signal_ends_the_demo_and_every_process_of_its_stack(tmp_path, sig, moment):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "MBRL_ROS_IN"))}
    env["ROS_DOMAIN_ID"] = str(free_domain_id(f"e2e-demo-stop-{sig}-{moment}"))
    log = tmp_path / "demo.log"
    with open(log, "w") as output:
        # In a session of its own, as from a terminal or a service manager: only the demo gets the signal.
        demo = subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "demo", "car", "--episodes", "2",
                                 "--random-transitions", "400", "--out", str(out)],
                                cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    marker = str(out)
    try:
        if moment == "starting":  # the first node processes exist, the stack is far from up (imports, rclpy)
            wait_until(lambda: node_processes(marker), 120, "the first node process", demo, log)
        else:  # every node up, the trainer reading the bags of the exploration and fitting (niced, busy)
            wait_until(lambda: set(node_processes(marker).values()) >= set(NODES), 180, "every node", demo, log)
            stack_log = out / "stack.log"
            wait_until(lambda: stack_log.is_file() and "new bag(s)" in stack_log.read_text(), 180,
                       "the trainer's first bags", demo, log)
        before = node_processes(marker)
        demo.send_signal(sig)
        try:
            demo.wait(timeout=60)  # the launcher's SIGINT, SIGTERM, SIGKILL to a node: 12 s at most
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not end within 60 s of {sig.name}:\n{log.read_text()[-3000:]}")
        # The demo has ended: nothing of its stack may outlive it, not even for a moment.
        left = {pid: cmd[:160] for pid, cmd in run_processes(marker).items()}
        text = log.read_text()
        assert not left, f"{len(left)} process(es) of the run outlived the demo ({sig.name} while {moment}): {left}"
        assert demo.returncode == 128 + sig, (demo.returncode, text[-3000:])
        assert f"mbrl-ros demo: stopped by {sig.name}; every process of the stack has ended" in text, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert before, "no node process was running when the signal was sent"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        for pid in run_processes(marker):  # never leave a test's processes behind, whatever failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
