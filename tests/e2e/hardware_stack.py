"""Helpers of the hardware e2e tests (test_real_car, test_hand): a stack through the launch
file, device emulators as separate processes, and a watcher in the test process.

The test process uses plain rclpy with standard messages only (it cannot import
mbrl_interfaces or ackermann_msgs): /diagnostics from every node and emulator
carry what the tests check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_ros import launcher
from mbrl_ros.ros_env import REPO_ROOT, workspace_env


def domain_for(name: str) -> int:
    return 1 + zlib.crc32(f"{os.getpid()}:{name}".encode()) % 200


def start_stack(domain: int, folder: Path, args: dict[str, str], lines: list[str]):
    """bringup.launch.yaml with ``args`` in ``domain``; output lines go to ``lines``."""
    description = launcher.load_launch_file(REPO_ROOT / "launch" / "bringup.launch.yaml", args,
                                            environment=workspace_env(domain_id=domain))
    return launcher.make_runner(description, output=lambda label, stream, text: lines.append(f"[{label}] {text}"),
                                log_directory=folder / "log").start()


def start_emulator(domain: int, module: str, params: dict[str, object], log: Path) -> subprocess.Popen:
    """A device emulator as its own process, as a user would have the vendor driver running."""
    argv = [sys.executable, "-m", module, "--ros-args"]
    for name, value in params.items():
        argv += ["-p", f"{name}:={value}"]
    with open(log, "w") as out:
        return subprocess.Popen(argv, env=workspace_env(domain_id=domain), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Watcher:
    """Collects /diagnostics (by status name) and calls lifecycle services, in the test process."""

    def __init__(self, domain: int, runner, lines: list[str], processes: dict[str, subprocess.Popen]) -> None:
        self.runner, self.lines, self.processes = runner, lines, processes
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("e2e_hardware_watcher", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.history: dict[str, list[dict[str, str]]] = {}
        self.episodes: list[dict[str, str]] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def watch_episodes(self, topic: str) -> None:
        """Keep the simulator's latched episode reports (every episode so far) in ``self.episodes``."""
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(DiagnosticArray, topic, self._on_episodes, latched)

    def _on_episodes(self, msg: DiagnosticArray) -> None:
        self.episodes = [{kv.key: kv.value for kv in s.values} for s in msg.status]

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            values["_message"] = status.message
            self.diagnostics[status.name] = values
            self.history.setdefault(status.name, []).append(values)

    def of(self, name: str) -> dict[str, str]:
        """The latest diagnostics of the node whose status name ends with ``name``."""
        return next((v for k, v in self.diagnostics.items() if k.endswith(name)), {})

    def spin_until(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)
            self.check_alive(what)
            result = condition()
            if result:
                return result
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; diagnostics: "
                             f"{ {k: v for k, v in self.diagnostics.items()} }\n" + "\n".join(self.lines[-30:]))

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.1)

    def check_alive(self, what: str) -> None:
        failed = {name: codes for name, codes in self.runner.exit_codes.items() if any(codes)}
        failed.update({name: p.returncode for name, p in self.processes.items() if p.poll() is not None})
        if failed:
            raise AssertionError(f"process(es) ended {failed} while waiting for {what}:\n" + "\n".join(self.lines[-40:]))

    def transition(self, node: str, transition_id: int, timeout: float = 20.0) -> None:
        client = self.node.create_client(ChangeState, f"{node}/change_state")
        assert client.wait_for_service(timeout_sec=timeout), f"service {node}/change_state not available"
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        assert future.done() and future.result().success, f"{node}: transition {transition_id} refused"

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@contextmanager
def emulated_robot(folder: Path, name: str, emulator_module: str, emulator_params: dict[str, object],
                   args: dict[str, str]):
    """A device emulator (its own process, started first, as a vendor driver would be) and the stack
    with ``args`` talking to it; yields (runner, watcher) and stops everything at the end."""
    domain = domain_for(name)
    emulator = start_emulator(domain, emulator_module, emulator_params, folder / f"{name}-emulator.log")
    lines: list[str] = []
    runner = start_stack(domain, folder, {**args, "run_dir": str(folder / "run")}, lines)
    watcher = Watcher(domain, runner, lines, {"emulator": emulator})
    try:
        yield runner, watcher
    finally:
        watcher.close()
        runner.stop(timeout=60)
        stop_process(emulator)
