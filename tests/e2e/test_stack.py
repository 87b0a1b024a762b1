"""The whole car stack as real processes over DDS, started through the launch file.

One stack per module (starting it costs ~10 s of CPU): sim_car in lockstep,
estimator, dynamics_server, controller, data_logger and trainer, in a ROS domain
of their own with discovery kept on this host. The test process watches with
plain rclpy and standard messages only (diagnostics, lifecycle services).
"""

from __future__ import annotations

import os

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import GetState

from mbrl_ros.stack_run import StackRun, prepare_config
from mbrl_ros.ros_env import REPO_ROOT, free_domain_id

NODES = ("launch_check", "sim_car", "estimator", "dynamics_server", "controller", "data_logger",
         "trainer")
# Less exploration than the repository's config, so a model arrives within a minute.
SMALL = {"trainer": {"random_transitions": 500, "poll_period": 1.0},
         "controller": {"random_transitions": 500},
         "data_logger": {"split_duration": 10.0}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    config = prepare_config(REPO_ROOT / "config", folder / "config", "car", "parking", SMALL)
    domain = free_domain_id("e2e-stack")
    # Standard messages only in this process (it cannot import mbrl_interfaces): no timing topic.
    run = StackRun(folder, {"robot": "car", "hardware": "sim", "task": "parking", "lockstep": "true",
                            "run_dir": str(folder / "run"), "config_dir": str(config)},
                   domain, watch_timing=False)
    try:
        yield run
    finally:
        run.stop()


def test_every_node_comes_up(stack):
    assert set(stack.runner.pids) == set(NODES), stack.runner.pids
    watcher = stack.watcher
    reporting = ("estimator", "dynamics_server", "controller", "data_logger", "trainer")
    stack.wait_for(lambda: all(watcher.node_status(n) for n in reporting), 120, "diagnostics from every node")


def test_the_car_learns_and_parks_in_lockstep(stack):
    watcher = stack.watcher
    stack.wait_for(lambda: watcher.model_version() >= 1, 300, "the first trained model to reach the controller")
    first_controlled = len(watcher.reports) + 1  # the episode running now may have started randomly

    def parked() -> bool:
        controlled = watcher.reports[first_controlled:]
        return len(controlled) >= 3 and sum(e["success"] == "True" for e in controlled) >= 3
    stack.wait_for(parked, 300, "three parked episodes under the learned model")
    controlled = watcher.reports[first_controlled:]
    assert all(e["success"] == "True" for e in controlled[:3]), controlled
    assert list((stack.out / "run" / "checkpoints").glob("model_v*.pt")), "the trainer saved no checkpoint"


def test_lifecycle_transitions_from_another_process(stack):
    watcher = stack.watcher
    name = "/car/controller"

    def state() -> str:
        return watcher.call(GetState, f"{name}/get_state", GetState.Request()).current_state.label

    assert state() == "active"
    watcher.transition(name, Transition.TRANSITION_DEACTIVATE)
    assert state() == "inactive"
    cycles = int(watcher.node_status("controller").get("cycles", "0"))
    watcher.spin(2.5)
    assert int(watcher.node_status("controller").get("cycles", "0")) == cycles, "an inactive controller kept cycling"
    watcher.transition(name, Transition.TRANSITION_CLEANUP)
    assert state() == "unconfigured"
    watcher.transition(name, Transition.TRANSITION_CONFIGURE)
    watcher.transition(name, Transition.TRANSITION_ACTIVATE)
    assert state() == "active"


def test_stopping_the_state_stream_gives_the_safe_command(stack):
    watcher = stack.watcher
    watcher.diagnostics.clear()  # only reports from now on count
    stack.wait_for(lambda: int(watcher.node_status("controller").get("cycles_plan", "0")) > 0, 60,
                   "the controller to be planning on a live state stream")
    stack.expect_exits = True  # from here on a node exiting is the point of the test
    for pid in stack.runner.pids["sim_car"]:
        os.kill(pid, 9)  # the hardware goes away: no more odometry, so no more state

    def safe() -> bool:
        c = watcher.node_status("controller")
        return "stale" in c.get("last_reason", "") and int(c.get("cycles_safe", "0")) > 0
    stack.wait_for(safe, 30, "the controller to report stale state and send its safe command")
