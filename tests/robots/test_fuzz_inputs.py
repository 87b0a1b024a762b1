"""Property-based fuzzing (hypothesis) of what the estimator and controller nodes hand their cores, message by
message: NaN, inf, huge values, wrong sizes, missing or repeated names, out-of-order, duplicate and future
stamps. Whatever comes in, nothing raises, every state estimated is finite, and every command is finite and
within the action bounds. The same through DDS, with the processes: tests/ros/test_controller_safety.py."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbrl_ros.core.control import RecedingHorizonController
from mbrl_ros.core.estimation import Rejection, StateEstimate
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.car.bicycle import KinematicBicycle
from mbrl_ros.robots.hand import JOINTS
from mbrl_ros.robots.hand.estimator import HandStateEstimator

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any float a message can carry: NaN, +-inf, huge, tiny, ordinary.
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, 1.0, -1.0, 1e300, -1e300, 5e-324]), st.floats(-10, 10))
# Stamps: ordinary, repeated, going back, far in the future (a builtin_interfaces/Time holds int32 seconds).
stamps = st.one_of(st.integers(0, 10**10), st.sampled_from([0, 1, 10**9, (2**31 - 1) * 10**9]))


def check_estimate(out, state_dim: int) -> None:
    assert out is None or isinstance(out, (StateEstimate, Rejection))
    if isinstance(out, StateEstimate):
        assert out.values.shape == (state_dim,) and np.all(np.isfinite(out.values)), out


@FUZZ
@given(st.lists(st.tuples(st.booleans(), stamps, st.lists(floats, min_size=7, max_size=7)), max_size=40))
def test_car_estimator_takes_any_odometry_and_command(inputs):
    car = get_robot("car")
    estimator = car.estimator({"state_names": list(car.state_names), "action_names": list(car.action_names),
                               "steer_gain": 0.4, "steer_lag": 0.1, "steer_rate_limit": 0.4, "dt": 0.05,
                               "speed_filter_alpha": 0.5, "resync_after": 3}, "estimator")
    for is_command, stamp_ns, values in inputs:  # what the node's hw/command and hw/odom callbacks call
        if is_command:
            check_estimate(estimator.command(stamp_ns, values[0]), 5)
        else:
            x, y, qx, qy, qz, qw, speed = values
            check_estimate(estimator.update(stamp_ns, x, y, (qx, qy, qz, qw), speed), 5)
    assert estimator.pending_commands <= 1000


names_strategy = st.one_of(st.just(list(JOINTS[:3])), st.permutations(JOINTS[:3]).map(list),
                           st.lists(st.sampled_from([*JOINTS[:3], "extra", ""]), max_size=5))


@FUZZ
@given(st.lists(st.tuples(st.booleans(), stamps, names_strategy, st.lists(floats, max_size=5),
                          st.lists(floats, max_size=5)), max_size=40))
def test_hand_estimator_takes_any_joint_state_and_fingertips(inputs):
    estimator = HandStateEstimator(list(JOINTS[:3]), fingertips=1, resync_after=3)
    for tips, stamp_ns, names, positions, velocities in inputs:
        if tips:
            out = estimator.fingertip_positions(stamp_ns, np.asarray(positions[:3] + [0.0] * (3 - len(positions[:3])))
                                                .reshape(1, 3) if len(positions) != 4 else positions)
        else:
            out = estimator.joints(stamp_ns, names, positions, velocities)
        check_estimate(out, estimator.state_dim)


def fuzz_controller() -> RecedingHorizonController:
    car = get_robot("car")
    params = {"action_low": [-1.0, -1.0], "action_high": [1.0, 1.0], "safe_action": [0.0, 0.0],
              "max_rate": [0.3, 0.3], "explore_without_model": True, "exploration_smoothing": 0.8, "seed": 0,
              "exploration_steps": 0, "needs_goal": True, "failure_tolerance": 0.5,
              "state_names": list(car.state_names), "action_names": list(car.action_names), "dt": 0.2,
              "accel_per_unit": 5.0, "stop_deceleration": 4.0, "planner": "mppi",
              "mppi": {"horizon": 5, "num_samples": 16, "compile": False},
              "cost": {"goal_pose": {"form": "quadratic"}, "effort": {"weight": 0.01}}}
    controller = RecedingHorizonController.from_config(params, term_kinds=car.term_kinds(),
                                                       stop=car.stop(params, "controller"))
    return controller


events = st.one_of(
    st.tuples(st.just("state"), st.lists(floats, min_size=0, max_size=7)),
    st.tuples(st.just("problem"), st.sampled_from(["state is stale", "state invalid: odometry lost"])),
    st.tuples(st.just("goal"), st.lists(floats, min_size=5, max_size=5)),
    st.tuples(st.just("e_stop"), st.booleans()),
    st.tuples(st.just("model"), st.just(None)),
)


@FUZZ
@given(st.lists(events, max_size=30))
def test_controller_commands_are_finite_and_within_bounds_whatever_comes_in(sequence):
    torch.manual_seed(0)
    controller = fuzz_controller()
    for kind, payload in sequence:
        if kind == "goal":
            try:
                controller.set_context("goal", torch.tensor(payload, dtype=torch.float32), goal=True)
            except ValueError:
                pass  # refused (non-finite): the node counts it; the controller goes on
            continue
        if kind == "e_stop":
            controller.engage_e_stop() if payload else controller.release_e_stop()
            continue
        if kind == "model":
            controller.set_model(KinematicBicycle())
            continue
        out = (controller.step(np.asarray(payload, dtype=float)) if kind == "state"
               else controller.step(None, payload))
        assert out.action.shape == (2,) and np.all(np.isfinite(out.action)), (kind, payload, out)
        assert np.all(np.abs(out.action) <= 1.0), (kind, payload, out)
