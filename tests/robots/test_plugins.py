"""Robots as plug-ins: found by name, robot-free core, and what each plug-in gives the generic stack."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mbrl_ros.robots import available_robots, get_robot
from mbrl_ros.robots.robot import Robot


def test_robots_are_found_by_name_and_an_unknown_name_lists_them():
    assert {"car", "hand"} <= set(available_robots())
    for name in available_robots():
        robot = get_robot(name)
        assert isinstance(robot, Robot) and robot.name == name
        assert len(robot.state_units) == len(robot.state_names)
        assert len(robot.action_units) == len(robot.action_names)
        assert all(0 <= d < len(robot.state_names) for d in robot.angle_dims)
    with pytest.raises(ValueError, match=r"controller: parameter 'robot': unknown robot 'boat'; robots: \[.*'car'.*\]"):
        get_robot("boat", "controller: parameter 'robot'")


def test_parametric_is_the_robots_physics_prior():
    car = get_robot("car").build_model({"type": "parametric", "dt": 0.1})
    assert type(car).__name__ == "KinematicBicycle" and car.physics_robot == "car" and car.dt == 0.1
    semi = get_robot("car").build_model({"type": "semiparametric", "prior": {"type": "parametric"},
                                         "residual": {"ensemble_size": 1, "hidden_sizes": [4]}})
    assert semi.physics_robot == "car"
    hand = get_robot("hand").build_model({"type": "semiparametric", "prior": {"type": "parametric", "dt": 0.04},
                                          "residual": {"ensemble_size": 1, "hidden_sizes": [4]}})
    assert type(hand.prior).__name__ == "LaggedJoints" and hand.physics_robot == "hand" and hand.state_dim == 63
    ensemble = get_robot("hand").build_model({"type": "ensemble", "state_dim": 63, "action_dim": 20,
                                              "ensemble_size": 1, "hidden_sizes": [4]})
    assert ensemble.physics_robot == ""

    class Arm(Robot):  # a robot without a physics prior runs ensembles only
        name = "arm"

    assert Arm().model_kinds() == ("ensemble",)
    with pytest.raises(ValueError, match="robot 'arm' has no physics prior, so model kind 'parametric'"):
        Arm().build_model({"type": "parametric"})
    with pytest.raises(ValueError, match="robot 'arm' has no physics prior"):
        Arm().build_model({"type": "semiparametric", "prior": {"type": "parametric"}})


def test_robot_cost_terms_extend_the_cores():
    car, hand = get_robot("car"), get_robot("hand")
    assert "parking_reward" in car.term_kinds()["goal_pose"].forms
    assert "fingertip_target" in hand.term_kinds() and "fingertip_target" not in car.term_kinds()
    cost = hand.build_cost({"tips": {"type": "fingertip_target", "indices": list(range(48, 63))}}, 63, 20)
    assert cost.set_context("fingertip_target", np.zeros(15)) == 1 and cost.set_context("goal", np.zeros(63)) == 0


def stop_params(robot, **extra) -> dict:
    return {"dt": 0.2, "state_names": list(robot.state_names), "action_names": list(robot.action_names),
            "safe_action": [0.0] * len(robot.action_names), **extra}


# Each robot's own stop parameters, as its controller declares them (the names may mean different things
# per robot: the base's max_accel is its acceleration limit, the car's the real bridge's gain).
OWN_STOP_PARAMS = {"car": {"accel_per_unit": 5.0, "stop_deceleration": 4.0},
                   "base": {"max_accel": 1.0, "max_yaw_accel": 4.0}}


def test_every_robot_has_a_stop_and_the_default_holds_the_configured_command():
    for name in available_robots():
        robot = get_robot(name)
        params = stop_params(robot, **OWN_STOP_PARAMS.get(name, {}))
        stop = robot.stop(params, "controller")
        action = stop.command(None, None)
        assert np.asarray(action).shape == (len(robot.action_names),) and np.all(np.isfinite(action))
    hold = Robot.stop(get_robot("car"), {"safe_action": [0.5, 0.0]}, "controller")
    assert hold.command(np.zeros(5), None).tolist() == [0.5, 0.0]


def test_the_car_stop_brakes_from_the_measured_speed_without_passing_zero():
    car = get_robot("car")
    stop = car.stop(stop_params(car, accel_per_unit=5.0, stop_deceleration=4.0), "controller")
    state = np.array([0.0, 0.0, 0.0, 3.0, 0.1])
    assert stop.command(state, None).tolist() == pytest.approx([-0.8, 0.0])  # 4 m/s^2 of 5 at u = 1
    # Stale state: it goes on from its own estimate (3 - 0.8 = 2.2 m/s), then lands on zero and holds.
    speeds, v = [], 2.2
    for _ in range(5):
        u = stop.command(None, None)[0]
        v += u * 5.0 * 0.2
        speeds.append(v)
    assert speeds[:2] == pytest.approx([1.4, 0.6]) and speeds[2:] == pytest.approx([0.0, 0.0, 0.0])
    reverse = stop.command(np.array([0.0, 0.0, 0.0, -0.5, 0.0]), None)
    assert reverse[0] == pytest.approx(0.5 / 0.2 / 5.0)  # brakes a reversing car forward
    with pytest.raises(ValueError, match="controller: parameter 'stop_deceleration'.*more than the car can brake"):
        car.stop(stop_params(car, accel_per_unit=3.0, stop_deceleration=4.0), "controller")


def test_the_hand_stop_holds_the_measured_joints():
    hand = get_robot("hand")
    stop = hand.stop(stop_params(hand), "controller")
    state = np.zeros(len(hand.state_names))
    state[hand.state_names.index("FFJ2")] = 1.571  # top of A_FFJ2's range
    state[hand.state_names.index("THJ0")] = -0.7855  # middle of A_THJ0's range
    action = stop.command(state, None)
    names = list(hand.action_names)
    assert action[names.index("A_FFJ2")] == pytest.approx(1.0)
    assert action[names.index("A_THJ0")] == pytest.approx(0.0, abs=1e-6)
    assert action[names.index("A_FFJ3")] == pytest.approx(0.0)  # FFJ3 at 0, the middle of its range
    assert stop.command(state * 0.5, None).tolist() == action.tolist()  # held where the stop began
    stop.reset()
    last = np.full(20, 0.3)
    assert stop.command(None, last).tolist() == last.tolist()  # no state: the command sent last holds
    with pytest.raises(ValueError, match="controller: the hand's stop"):
        hand.stop({**stop_params(hand), "action_names": ["A_XXJ1"]}, "controller")


def python_prints(code: str) -> str:
    """What a fresh interpreter running ``code`` prints (a fresh one: nothing imported before)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_core_imports_neither_rclpy_nor_a_robot():
    code = ("import importlib, pkgutil, sys, mbrl_ros.core as core\n"
            "for m in pkgutil.walk_packages(core.__path__, 'mbrl_ros.core.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] == 'rclpy' or n.startswith('mbrl_ros.robots'))\n"
            "print(bad)\n")
    assert python_prints(code) == "[]"


def test_an_estimating_node_loads_no_torch():
    code = ("import sys\nfrom mbrl_ros.robots import available_robots, get_robot\n"
            "for name in available_robots():\n"
            "    robot = get_robot(name)\n"
            "    robot.estimator({'state_names': robot.state_names, 'action_names': robot.action_names, 'dt': 0.2,\n"
            "                     'resync_after': 10, 'steer_gain': 0.5, 'steer_lag': 0.0, 'steer_rate_limit': 0.0,\n"
            "                     'speed_filter_alpha': 1.0, 'velocity_filter_alpha': 1.0,\n"
            "                     'joint_names': ['WRJ1', 'WRJ0', 'FFJ3', 'FFJ2', 'FFJ1',\n"
            "                     'FFJ0', 'MFJ3', 'MFJ2', 'MFJ1', 'MFJ0', 'RFJ3', 'RFJ2', 'RFJ1', 'RFJ0', 'LFJ4', 'LFJ3',\n"
            "                     'LFJ2', 'LFJ1', 'LFJ0', 'THJ4', 'THJ3', 'THJ2', 'THJ1', 'THJ0'], 'fingertips': 5}, name)\n"
            "print('torch' in sys.modules)\n")
    assert python_prints(code) == "False"
