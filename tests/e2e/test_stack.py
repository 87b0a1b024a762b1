"""The whole car stack as real processes over DDS, started through the launch file.

One stack per module (starting it costs ~10 s of CPU): sim_car in lockstep,
estimator, dynamics_server, controller, data_logger and trainer, in a ROS domain
of their own with discovery kept on this host. The test process watches with
plain rclpy and standard messages only (diagnostics, lifecycle services).
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_ros import launcher
from mbrl_ros.ros_env import REPO_ROOT, workspace_env

NODES = ("sim_car", "estimator", "dynamics_server", "controller", "data_logger", "trainer")


def small_config(folder: Path) -> Path:
    """The repository's config with less exploration, so a model arrives within a minute."""
    shutil.copytree(REPO_ROOT / "config", folder)
    car = folder / "car.yaml"
    text = car.read_text()
    # Edited as text: a YAML round trip would unquote "y", which rcl then reads as a boolean.
    for old, new in (("random_transitions: 2000", "random_transitions: 500"),
                     ("poll_period: 5.0", "poll_period: 1.0"),
                     ("split_duration: 20.0", "split_duration: 10.0")):
        assert old in text, f"config/car.yaml no longer has '{old}'"
        text = text.replace(old, new)
    car.write_text(text)
    return folder


class Watcher:
    """Collects /diagnostics and the simulator's episode results in the test process."""

    def __init__(self, domain_id: int, runner, lines: list[str]) -> None:
        self.runner, self.lines = runner, lines
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("e2e_watcher", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.episodes: list[dict[str, str]] = []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.node.create_subscription(DiagnosticArray, "/car/sim/episodes", self._on_episodes, latched)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def _on_episodes(self, msg: DiagnosticArray) -> None:
        self.episodes = [{kv.key: kv.value for kv in s.values} for s in msg.status]

    def spin_until(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.2)
            failed = {} if self.runner is None else {
                name: codes for name, codes in self.runner.exit_codes.items() if any(codes)}
            if failed:
                raise AssertionError(f"node(s) died {failed} while waiting for {what}:\n"
                                     + "\n".join(self.lines[-40:]))
            result = condition()
            if result:
                return result
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                             f"diagnostics from {sorted(self.diagnostics)}, {len(self.episodes)} episodes; "
                             f"controller: {self.controller()}; estimator: "
                             f"{next((v for k, v in self.diagnostics.items() if k.endswith('estimator')), {})}\n" + "\n".join(self.lines[-30:]))

    def controller(self) -> dict[str, str]:
        return next((v for k, v in self.diagnostics.items() if k.endswith("/car/controller")), {})

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        self.executor.spin_until_future_complete(future, timeout_sec=timeout)
        assert future.done(), f"no answer from {name}"
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    domain = 1 + zlib.crc32(f"{os.getpid()}:e2e-stack".encode()) % 200
    folder = tmp_path_factory.mktemp("stack")
    config = small_config(folder / "config")
    env = workspace_env(domain_id=domain)
    description = launcher.load_launch_file(
        REPO_ROOT / "launch" / "bringup.launch.yaml",
        {"robot": "car", "hardware": "sim", "task": "parking", "lockstep": "true",
         "run_dir": str(folder / "run"), "config_dir": str(config)},
        environment=env)
    lines: list[str] = []
    runner = launcher.make_runner(description, output=lambda label, stream, text: lines.append(f"[{label}] {text}"),
                                  log_directory=folder / "log").start()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    watcher = Watcher(domain, runner, lines)
    try:
        yield runner, watcher, folder, lines
    finally:
        watcher.close()
        runner.stop(timeout=60)


def test_every_node_comes_up(stack):
    runner, watcher, _, lines = stack
    assert set(runner.pids) == set(NODES), runner.pids
    reporting = ("estimator", "dynamics_server", "controller", "data_logger", "trainer")
    watcher.spin_until(lambda: all(any(k.endswith(f"/car/{n}") or k.endswith(f"car/{n}") or n in k
                                       for k in watcher.diagnostics) for n in reporting),
                       120, "diagnostics from every node")


def test_the_car_learns_and_parks_in_lockstep(stack):
    runner, watcher, folder, lines = stack
    watcher.spin_until(lambda: int(watcher.controller().get("model_version", "0")) >= 1, 300,
                       "the first trained model to reach the controller")
    first_controlled = len(watcher.episodes) + 1  # the episode running now may have started randomly

    def parked() -> bool:
        controlled = watcher.episodes[first_controlled:]
        return len(controlled) >= 3 and sum(e["success"] == "True" for e in controlled) >= 3
    watcher.spin_until(parked, 300, "three parked episodes under the learned model")
    controlled = watcher.episodes[first_controlled:]
    assert all(e["success"] == "True" for e in controlled[:3]), controlled
    assert list((folder / "run" / "checkpoints").glob("model_v*.pt")), "the trainer saved no checkpoint"


def test_lifecycle_transitions_from_another_process(stack):
    _, watcher, _, _ = stack
    name = "/car/controller"

    def transition(transition_id: int) -> None:
        response = watcher.call(ChangeState, f"{name}/change_state",
                                ChangeState.Request(transition=Transition(id=transition_id)))
        assert response.success, f"transition {transition_id} refused"

    def state() -> str:
        return watcher.call(GetState, f"{name}/get_state", GetState.Request()).current_state.label

    assert state() == "active"
    transition(Transition.TRANSITION_DEACTIVATE)
    assert state() == "inactive"
    cycles = int(watcher.controller().get("cycles", "0"))
    time.sleep(1.5)
    watcher.spin_until(lambda: True, 1.0, "")
    assert int(watcher.controller().get("cycles", "0")) == cycles, "an inactive controller kept cycling"
    transition(Transition.TRANSITION_CLEANUP)
    assert state() == "unconfigured"
    transition(Transition.TRANSITION_CONFIGURE)
    transition(Transition.TRANSITION_ACTIVATE)
    assert state() == "active"


def test_stopping_the_state_stream_gives_the_safe_command(stack):
    runner, watcher, _, _ = stack
    watcher.diagnostics.clear()  # only reports from now on count
    watcher.spin_until(lambda: int(watcher.controller().get("cycles_plan", "0")) > 0, 60,
                       "the controller to be planning on a live state stream")
    watcher.runner = None  # from here on a node exiting is the point of the test
    for pid in runner.pids["sim_car"]:
        os.kill(pid, 9)  # the hardware goes away: no more odometry, so no more state

    def safe() -> bool:
        c = watcher.controller()
        return "stale" in c.get("last_reason", "") and int(c.get("cycles_safe", "0")) > 0
    watcher.spin_until(safe, 30, "the controller to report stale state and send its safe command")
