"""The car's stop in the simulated car (highway-env parking-v0), ROS-free: from cruising speed to a
standstill at the configured deceleration, then held. The numbers are the report's stop distance
and time (printed with -s)."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.robots import get_robot
from mbrl_ros_hardware.car.parking import ParkingSim

ACCEL_PER_UNIT, DECELERATION, DT = 5.0, 4.0, 0.2  # config/car.yaml's controller section, highway-env's step


def test_the_simulated_car_brakes_to_a_standstill_and_stays_there():
    car = get_robot("car")
    stop = car.stop({"dt": DT, "state_names": list(car.state_names), "action_names": list(car.action_names),
                     "safe_action": [0.0, 0.0], "accel_per_unit": ACCEL_PER_UNIT,
                     "stop_deceleration": DECELERATION}, "controller")
    sim = ParkingSim(max_episode_steps=200)
    state = sim.reset(seed=0)
    for _ in range(4):  # cruise: 4 steps of u_accel 1 -> 5 m/s^2 for 0.8 s
        state = sim.step(np.array([1.0, 0.0])).state
    for _ in range(3):  # and hold that speed
        state = sim.step(np.array([0.0, 0.0])).state
    cruising = float(state[3])
    assert cruising == pytest.approx(4.0, abs=0.05)
    start, speeds, commands = state[:2].copy(), [], 0
    for _ in range(40):  # 8 s of stop commands, computed from the measured state each cycle
        action = stop.command(state, None)
        commands += int(action[0] != 0.0)
        state = sim.step(action).state
        speeds.append(float(state[3]))
    stopped_at = next(i for i, v in enumerate(speeds) if abs(v) < 0.01)
    distance = float(np.hypot(*(state[:2] - start)))
    stop_time = (stopped_at + 1) * DT
    print(f"\nstop from {cruising:.2f} m/s: {distance:.2f} m, {stop_time:.1f} s, {commands} braking commands")
    assert max(abs(v) for v in speeds[stopped_at:]) < 0.01  # stays stopped: never creeps nor reverses
    assert stop_time == pytest.approx(np.ceil(cruising / DECELERATION / DT) * DT)  # at the set deceleration
    assert distance == pytest.approx(cruising ** 2 / (2 * DECELERATION), rel=0.35)
    # The old safe command, zero acceleration, kept the car going.
    old = sim.step(np.array([0.5, 0.0])).state
    for _ in range(5):
        old = sim.step(np.zeros(2)).state
    assert old[3] > 0.4


def test_the_real_time_simulator_holds_the_controllers_last_stop_as_braking_to_a_standstill():
    from mbrl_ros.robots.car.stop import held_stop

    sim = ParkingSim(max_episode_steps=200)
    state = sim.reset(seed=0)
    for _ in range(4):
        state = sim.step(np.array([1.0, 0.0])).state
    last_stop = np.array([-0.8, 0.0])  # the controller's stop, then nothing more (deactivated, shut down)
    speeds = []
    for _ in range(20):
        state = sim.step(held_stop(float(state[3]), last_stop, sim.accel_per_unit, sim.dt)).state  # sim_car's
        speeds.append(float(state[3]))
    assert speeds[4:] == pytest.approx([0.0] * 16, abs=0.01)  # stands still; held as is it would reverse
    assert min(speeds) > -0.01
    for _ in range(5):  # the same command held as it is (zero-order hold) drives the car backwards
        state = sim.step(last_stop).state
    assert state[3] < -1.0
