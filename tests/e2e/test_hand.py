"""robot:=hand: the whole stack through bringup.launch.yaml over DDS, simulated and real.

hardware:=sim, in lockstep:
sim_hand (HandReach-v3, MuJoCo) -> estimator (joint states + fingertips -> 63-entry state) ->
controller (explores, then MPPI on the identified physics prior) -> sim_hand; the data_logger records,
the trainer identifies the hand's prior from the bags and the dynamics_server deploys it. One stack for the
module, with a small exploration budget and short training so that it fits in about a minute.

hardware:=real: real_hand bridges to hand_emulator (the MuJoCo hand behind a Shadow-style driver,
its own process, with latency, noise and drops): the controller's exploration commands must reach
it as JointTrajectory, and its joint states must come back as the estimator's state.
"""

from __future__ import annotations

import time

import pytest

from hardware_stack import domain_for, emulated_robot, small_hand_config
from mbrl_ros.stack_run import StackRun
from mbrl_ros.io.bags import list_bags, transitions_from_bags

RANDOM = 200  # small_hand_config's exploration budget
NODES = ("launch_check", "sim_hand", "estimator", "dynamics_server", "controller", "data_logger",
         "trainer")


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    domain = domain_for("e2e-hand")
    folder = tmp_path_factory.mktemp("hand")
    config = small_hand_config(folder / "config", random_transitions=RANDOM)
    run = StackRun(folder, {"robot": "hand", "hardware": "sim", "lockstep": "true",
                            "run_dir": str(folder / "run"), "config_dir": str(config)},
                   domain, namespace="hand", watch_timing=False)
    try:
        yield run, folder
    finally:
        run.stop()


def test_the_hand_explores_learns_and_plans_with_the_learned_model(hand):
    run, folder = hand
    watcher = run.watcher
    assert set(run.runner.pids) == set(NODES), run.runner.pids
    run.wait_for(lambda: int(watcher.status("/hand/controller").get("cycles_explore", "0")) > 20, 120,
                 "the controller to explore on the hand's state")
    run.wait_for(lambda: int(watcher.status("/hand/controller").get("cycles_explore", "0")) >= RANDOM, 120,
                 "the controller to spend its exploration budget")
    waiting_from, safe_before = time.monotonic(), int(watcher.status("/hand/controller")["cycles_safe"])
    run.wait_for(lambda: int(watcher.status("/hand/controller").get("model_version", "0")) >= 1, 180,
                 "the first identified model to reach the controller")
    # Waiting for it, lockstep ran at most at the control rate (pace_while_waiting), not as fast as the
    # simulator steps: the stop's cycles over the wait's wall time (plus the one diagnostics period by
    # which the first count may lag) at 25 Hz, with a 20 % margin.
    waited = time.monotonic() - waiting_from
    stops = int(watcher.status("/hand/controller")["cycles_safe"]) - safe_before
    assert stops <= 1.2 * 25 * (waited + 1.0) + 5, (stops, waited)
    cycles = int(watcher.status("/hand/controller").get("cycles_plan", "0"))
    run.wait_for(lambda: int(watcher.status("/hand/controller").get("cycles_plan", "0")) > cycles + 20, 60,
                 "the controller to plan with the identified model")
    assert watcher.status("/hand/controller")["model_kind"] == "parametric"
    assert list((folder / "run" / "checkpoints").glob("model_v*.pt")), "the trainer saved no checkpoint"
    assert len(watcher.reports) >= 3, watcher.reports
    # Each report's success is HandReach's own verdict on its final distance (1 cm); whether the learned
    # model reaches closer than random actions is tests/e2e/test_demo.py's hand test.
    for report in watcher.reports:
        assert (report["success"] == "True") == (float(report["final_goal_distance_m"]) < 0.01), report


def test_the_logger_records_joint_states_that_read_back_as_hand_transitions(hand):
    _, folder = hand
    bags = [b for b in list_bags(folder / "run" / "bags") if (b / "metadata.yaml").exists()]
    assert bags, "no closed bag"
    report: dict = {}
    data = transitions_from_bags(bags, "/hand/state", "/hand/hw/command", 0.04, report=report)
    assert data.state_dim == 63 and data.action_dim == 20 and len(data) >= 100, report
    assert report["episodes"] >= 2, report  # the simulator's gap between episodes splits them
    from rosbags.highlevel import AnyReader

    with AnyReader(bags) as reader:
        joint_states = [c for c in reader.connections if c.topic == "/hand/hw/joint_states"]
        assert joint_states and joint_states[0].msgtype == "sensor_msgs/msg/JointState"
        assert sum(c.msgcount for c in joint_states) >= 100


@pytest.fixture(scope="module")
def real_hand(tmp_path_factory):
    with emulated_robot(tmp_path_factory.mktemp("real_hand"), "e2e-real-hand", "mbrl_ros_hardware.hand.emulator",
                        {"latency": 0.03, "joint_states_drop_rate": 0.1, "trajectory_drop_rate": 0.05, "seed": 2},
                        {"robot": "hand", "hardware": "real"}) as run:
        yield run


def test_real_hand_commands_reach_the_emulator_and_joint_states_come_back_as_state(real_hand):
    watcher = real_hand.watcher
    pids = real_hand.runner.pids
    assert "real_hand" in pids and "sim_hand" not in pids, pids
    actions_seen: set[str] = set()

    def flowing() -> bool:
        emulator, bridge = watcher.status("hand_emulator"), watcher.status("/hand/real_hand")
        estimator, controller = watcher.status("/hand/estimator"), watcher.status("/hand/controller")
        if emulator:
            actions_seen.add(emulator["action_in_effect"])
        return (int(emulator.get("trajectories_received", "0")) > 30 and int(bridge.get("commands", "0")) > 30
                and int(bridge.get("joint_states", "0")) > 30 and int(estimator.get("accepted", "0")) > 30
                and int(controller.get("cycles_explore", "0")) > 30 and len(actions_seen) > 3)
    real_hand.wait_for(flowing, 120, "exploration commands to reach the emulated hand and its joint states to "
                       "become the estimator's state")
    emulator = watcher.status("hand_emulator")
    assert emulator["trajectories_rejected"] == "0", emulator["last_rejection"]
    assert int(emulator["joint_states_dropped"]) > 0
    assert watcher.status("/hand/real_hand")["rejected_joint_states"] == "0"
    assert "stale" not in watcher.status("/hand/controller").get("last_reason", "")
