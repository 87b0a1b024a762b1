"""Stop means stop, with real processes over DDS: the car stack (sim_car in lockstep, estimator,
controller, ...) through the launch file, watched with standard messages only.

The controller explores (no model yet), so the car moves; an e-stop brings it to a standstill and
holds it there; ``e_stop: false`` does not release it, only the service does; a SIGTERM'd
controller's last command is a stop.
"""

from __future__ import annotations

import math

import pytest
from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from mbrl_ros.ros_env import REPO_ROOT, free_domain_id
from mbrl_ros.stack_run import StackRun, prepare_config

# Exploration without a limit and no model: the car drives around at random until stopped.
OVERRIDES = {"controller": {"random_transitions": 0, "exploration_smoothing": 0.9},
             "trainer": {"random_transitions": 1_000_000}, "sim_car": {"max_episode_steps": 100_000}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stop")
    config = prepare_config(REPO_ROOT / "config", folder / "config", "car", "parking", OVERRIDES)
    domain = free_domain_id("e2e-stop")
    run = StackRun(folder, {"robot": "car", "hardware": "sim", "task": "parking", "lockstep": "true",
                            "run_dir": str(folder / "run"), "config_dir": str(config)}, domain, watch_timing=False)
    try:
        yield run
    finally:
        run.stop()


def speeds(odometry, last: int) -> list[float]:
    """Speeds (m/s) between the last ``last`` odometry messages, from positions and stamps."""
    odom = sorted(set(odometry))[-(last + 1):]
    return [math.hypot(b[1] - a[1], b[2] - a[2]) / ((b[0] - a[0]) * 1e-9) for a, b in zip(odom, odom[1:])]


def count(watcher, key: str) -> int:
    return int(watcher.node_status("controller").get(key, "0"))


def test_e_stop_brings_the_car_to_a_standstill_latched_until_released(stack):
    watcher = stack.watcher
    stack.wait_for(lambda: count(watcher, "cycles_explore") > 30 and max(speeds(watcher.odometry, 5)) > 0.5, 120,
                   "the car driving around (exploring) at over 0.5 m/s")
    e_stop = watcher.node.create_publisher(Bool, "/car/e_stop", 10)
    e_stop.publish(Bool(data=True))
    stack.wait_for(lambda: watcher.node_status("controller").get("e_stop") == "True", 30, "the e-stop to engage")
    # Standing still: 25 odometry messages (5 s of simulated time) without movement.
    stack.wait_for(lambda: len(watcher.odometry) > 30 and max(speeds(watcher.odometry, 25)) < 0.01, 60,
                   "the car to stand still for 5 s")
    explored = count(watcher, "cycles_explore")
    e_stop.publish(Bool(data=False))  # not a release
    watcher.spin(3.0)
    status = watcher.node_status("controller")
    assert status["e_stop"] == "True" and count(watcher, "cycles_explore") == explored
    assert "e-stop" in status["last_reason"] and max(speeds(watcher.odometry, 25)) < 0.01
    response = watcher.call(Trigger, "/car/controller/release_e_stop", Trigger.Request())
    assert response.success and response.message == "e-stop released"
    stack.wait_for(lambda: count(watcher, "cycles_explore") > explored + 10, 60, "control to resume after release")
    assert watcher.node_status("controller")["e_stop"] == "False"
