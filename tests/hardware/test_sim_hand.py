"""The hand's ROS-free parts: the MuJoCo HandReach wrapper and the hand's state estimator."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.core.estimation import Rejection
from mbrl_ros.robots.hand import fingertip_state_names
from mbrl_ros.robots.hand.estimator import HandStateEstimator
from mbrl_ros_hardware.hand.shadow_hand import HandSim

JOINTS = ["J0", "J1", "J2"]


def test_hand_sim_state_goal_and_success_are_handreachs():
    sim = HandSim("reach")
    state = sim.reset(seed=3)
    assert len(sim.joint_names) == 24 and "robot0" not in sim.joint_names[0] and sim.action_dim == 20
    assert state.positions.shape == (24,) and state.velocities.shape == (24,) and state.fingertips.shape == (5, 3)
    assert sim.dt == pytest.approx(0.04) and sim.goal.shape == (5, 3)
    step = sim.step(np.zeros(20))
    assert step.goal_distance == pytest.approx(np.linalg.norm(step.state.fingertips - sim.goal))
    assert step.success == (step.goal_distance < 0.01)
    again = HandSim("reach")
    again.reset(seed=3)
    assert np.array_equal(again.goal, sim.goal)  # seeded goals
    assert len(fingertip_state_names()) == 15
    with pytest.raises(ValueError, match="parameter .task. must be one of"):
        HandSim("juggle")


def test_hand_estimator_orders_joints_by_name_and_joins_fingertips_of_the_same_stamp():
    est = HandStateEstimator(JOINTS, fingertips=2)
    tips = np.arange(6.0).reshape(2, 3)
    assert est.joints(10, ["J2", "J0", "J1", "extra"], [2.0, 0.0, 1.0, 9.0], [20.0, 0.5, 10.0, 9.0]) is None
    out = est.fingertip_positions(10, tips)
    assert out.stamp_ns == 10 and est.state_dim == 12
    assert out.values.tolist() == [0.0, 1.0, 2.0, 0.5, 10.0, 20.0, *tips.reshape(-1).tolist()]
    # The other order of arrival, and a fingertip message of an older stamp waiting to be replaced.
    assert est.fingertip_positions(15, tips) is None
    assert est.joints(20, JOINTS, [0, 0, 0], [0, 0, 0]) is None
    assert est.fingertip_positions(20, tips).stamp_ns == 20


def test_hand_estimator_differentiates_positions_without_velocities_and_rejects_bad_input():
    est = HandStateEstimator(JOINTS, fingertips=0)
    first = est.joints(0, JOINTS, [0.0, 0.0, 0.0], [])
    assert first.values.tolist() == [0, 0, 0, 0, 0, 0]
    second = est.joints(500_000_000, JOINTS, [1.0, 0.5, 0.0], [])
    assert second.values[3:].tolist() == pytest.approx([2.0, 1.0, 0.0])
    for bad, reason in (((1, ["J0", "J1"], [0, 0], []), "missing joint"),
                        ((1, JOINTS, [0, np.nan, 0], []), "non-finite J1"),
                        ((1, JOINTS, [0, 0], []), "3 names, 2 positions"),
                        ((100, JOINTS, [0, 0, 0], []), "out-of-order")):
        out = est.joints(*bad)
        assert isinstance(out, Rejection) and reason in out.reason, (bad, out)
    repeat = est.joints(500_000_000, JOINTS, [1.0, 0.5, 0.0], [])
    assert isinstance(repeat, Rejection) and repeat.repeat_of is second and est.repeats == 1
    with pytest.raises(ValueError, match="joint_names"):
        HandStateEstimator([])
    tips = HandStateEstimator(JOINTS, fingertips=5)
    assert "expected 5 positions" in tips.fingertip_positions(0, np.zeros((4, 3))).reason


def test_robot_description_maps_actions_to_actuator_ranges_and_fingertips_by_kinematics():
    sim = HandSim("reach")
    low, high = sim.unwrapped.model.actuator_ctrlrange.T
    assert np.allclose(sim.actuator_targets(-np.ones(20)), low) and np.allclose(sim.actuator_targets(np.ones(20)), high)
    action = np.random.default_rng(0).uniform(-1, 1, 20)
    assert np.allclose(sim.actions_for(sim.actuator_targets(action)), action)
    sim.reset(seed=0)
    for _ in range(5):
        step = sim.step(action)
    # The observation's fingertips are computed before the last substep's integration: within 2 mm.
    assert np.abs(sim.fingertips_at(step.state.positions) - step.state.fingertips).max() < 0.002


def test_the_hand_stop_knows_the_actuator_ranges_and_holds_the_hand_where_it_is():
    from mbrl_ros.robots import get_robot
    from mbrl_ros.robots.hand.stop import CTRL_RANGE

    sim = HandSim("reach")
    assert list(CTRL_RANGE) == sim.actuator_names
    np.testing.assert_allclose(list(CTRL_RANGE.values()), sim.unwrapped.model.actuator_ctrlrange, atol=1e-3)
    hand = get_robot("hand")
    stop = hand.stop({"state_names": list(hand.state_names), "action_names": list(hand.action_names),
                      "safe_action": [0.0] * 20}, "controller")
    rng = np.random.default_rng(0)
    drift = {}
    for name, hold in (("stop", True), ("mid-range", False)):
        state = sim.reset(seed=1)
        for _ in range(10):  # move somewhere away from mid-range first
            state = sim.step(rng.uniform(-1, 1, 20) * 0.8 + 0.5).state
        held = state.positions.copy()
        for _ in range(25):  # one second
            values = np.concatenate([state.positions, state.velocities, state.fingertips.reshape(-1)])
            state = sim.step(stop.command(values, None) if hold else np.zeros(20)).state
        drift[name] = float(np.abs(state.positions - held).max())
    assert drift["stop"] < 0.1 < drift["mid-range"], drift


def test_hand_estimator_ends_the_state_with_the_blocks_odometry_of_the_same_stamp():
    from mbrl_ros.robots.hand.estimator import BLOCK_STATE_NAMES

    est = HandStateEstimator(JOINTS, fingertips=0, block=True)
    assert est.state_dim == 6 + len(BLOCK_STATE_NAMES)
    assert est.joints(10, JOINTS, [0.0, 1.0, 2.0], [3.0, 4.0, 5.0]) is None  # the block of this stamp is missing
    out = est.block_odometry(10, (1.0, 2.0, 3.0), (0.0, 0.0, 0.0, -2.0), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    # The quaternion normalised with its sign kept (HandManipulate tells q from -q).
    assert out.values.tolist() == [0, 1, 2, 3, 4, 5, 1, 2, 3, 0, 0, 0, -1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    for bad, reason in ((((1, 2, 3), (0, 0, 0, 0), (0, 0, 0), (0, 0, 0)), "zero-length orientation"),
                        (((1, 2, np.nan), (1, 0, 0, 0), (0, 0, 0), (0, 0, 0)), "non-finite block_z"),
                        (((1, 2, 3), (1, 0, 0, 0), (0, 0, 0), (0, np.inf, 0)), "non-finite block_wy"),
                        (((1, 2, 3), (1, 0, 0), (0, 0, 0), (0, 0, 0)), "expected 13 values")):
        rejection = est.block_odometry(20, *bad)
        assert isinstance(rejection, Rejection) and reason in rejection.reason, (bad, rejection)
    without = HandStateEstimator(JOINTS, fingertips=0)
    assert "parameter 'block' is false" in without.block_odometry(0, (0, 0, 0), (1, 0, 0, 0), (0, 0, 0), (0, 0, 0)).reason


def test_the_hand_plugin_checks_the_block_state_names():
    from mbrl_ros.robots import get_robot

    hand = get_robot("hand")
    params = {"joint_names": JOINTS, "fingertips": 0, "resync_after": 10, "block": True}
    names = [*JOINTS, *(f"{j}_vel" for j in JOINTS)]
    with pytest.raises(ValueError, match="'state_names' has 6 names, but 3 joints .* and the block make 19"):
        hand.estimator({**params, "state_names": names}, "/hand/estimator")
    with pytest.raises(ValueError, match="'state_names' must end with the block's"):
        hand.estimator({**params, "state_names": names + [f"b{i}" for i in range(13)]}, "/hand/estimator")
