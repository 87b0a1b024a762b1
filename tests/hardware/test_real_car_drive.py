"""The real car's ROS-free parts: command mapping, the emulator's delay line and car model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mbrl_ros_hardware.emulation import DelayLine
from mbrl_ros_hardware.car.drive import DriveMapper
from mbrl_ros_hardware.car.emulated_car import EmulatedCar


def test_integrate_mode_accumulates_speed_and_scales_steering():
    mapper = DriveMapper(max_steer=0.4, max_accel=2.0, max_speed=1.0, max_reverse_speed=0.5, control_period=0.1)
    drive = mapper.command(1.0, -0.5)
    assert drive.speed == pytest.approx(0.2) and drive.acceleration == pytest.approx(2.0)
    assert drive.steering_angle == pytest.approx(-0.2)
    for _ in range(10):
        drive = mapper.command(1.0, 0.0)
    assert drive.speed == pytest.approx(1.0)  # clipped at max_speed
    assert mapper.command(0.0, 0.0).speed == pytest.approx(1.0)  # no acceleration: speed holds
    for _ in range(30):
        drive = mapper.command(-1.0, 2.0)  # inputs beyond [-1, 1] are clipped
    assert drive.speed == pytest.approx(-0.5) and drive.steering_angle == pytest.approx(0.4)


def test_integrate_mode_integrates_over_the_real_time_between_commands():
    """Issue 9 §2: commands at 50 Hz with a 0.2 s control period ramp the speed at max_accel, not 10x faster."""
    mapper = DriveMapper(max_accel=2.0, max_speed=10.0, control_period=0.2)
    drive = mapper.command(1.0, 0.0)  # the first: one control period
    for _ in range(50):  # one second of commands at 50 Hz
        drive = mapper.command(1.0, 0.0, elapsed=0.02)
    assert drive.speed == pytest.approx(0.4 + 2.0 * 1.0)
    assert mapper.command(1.0, 0.0, elapsed=5.0).speed == pytest.approx(2.4 + 0.4)  # a gap counts one period at most
    assert mapper.command(1.0, 0.0, elapsed=-1.0).speed == pytest.approx(2.8)  # a clock step back adds nothing


def test_acceleration_mode_heads_for_the_speed_limit_with_a_bounded_acceleration():
    mapper = DriveMapper(max_accel=4.0, max_speed=3.0, max_reverse_speed=1.0, speed_mode="acceleration")
    drive = mapper.command(0.25, 0.0)
    assert (drive.speed, drive.acceleration) == pytest.approx((3.0, 1.0))
    assert mapper.command(-1.0, 0.0).speed == pytest.approx(-1.0)
    assert mapper.command(0.0, 0.0, measured_speed=1.7).speed == pytest.approx(1.7)  # coast: hold what is measured


def test_stop_is_zero_speed_straight_wheels_and_restarts_integration_from_zero():
    mapper = DriveMapper(control_period=0.5, max_accel=1.0)
    mapper.command(1.0, 1.0)
    stop = mapper.stop()
    assert (stop.speed, stop.acceleration, stop.steering_angle) == (0.0, 0.0, 0.0)
    assert mapper.command(1.0, 0.0).speed == pytest.approx(0.5)


def test_bad_commands_and_settings_are_refused_with_their_name():
    with pytest.raises(ValueError, match="non-finite command"):
        DriveMapper().command(float("nan"), 0.0)
    with pytest.raises(ValueError, match="speed_mode must be one of"):
        DriveMapper(speed_mode="torque")
    with pytest.raises(ValueError, match="max_steer"):
        DriveMapper(max_steer=0.0)


def test_delay_line_delivers_after_the_latency_and_drops_the_given_fraction():
    line = DelayLine(0.05, 0.0, np.random.default_rng(0))
    line.put(1.0, "a")
    line.put(1.01, "b")
    assert line.due(1.04) == [] and line.due(1.05) == ["a"] and line.due(2.0) == ["b"]
    lossy = DelayLine(0.0, 0.2, np.random.default_rng(1))
    for i in range(5000):
        lossy.put(0.0, i)
    delivered = lossy.due(0.0)
    assert lossy.dropped + len(delivered) == 5000 and 0.17 < lossy.dropped / 5000 < 0.23
    assert delivered == sorted(delivered)  # order kept
    with pytest.raises(ValueError, match="drop_rate"):
        DelayLine(0.0, 1.0, np.random.default_rng(0))


def test_emulated_car_tracks_speed_within_its_acceleration_and_turns_left_on_positive_steering():
    car = EmulatedCar(max_accel=2.0, max_steer=0.4, max_steer_rate=2.0)
    car.step(0.5, speed=5.0, acceleration=0.0, steering_angle=1.0)
    assert car.state[3] == pytest.approx(1.0, abs=1e-6)  # 0.5 s at the 2 m/s^2 limit
    assert car.state[4] == pytest.approx(0.4)  # steering reaches the end stop at 2 rad/s
    for _ in range(40):
        car.step(0.05, speed=1.0, acceleration=0.0, steering_angle=0.4)
    assert car.state[3] == pytest.approx(1.0, abs=1e-3)
    assert car.state[1] > 0.1  # yaw grew: the car turned left
    radius = car.wheelbase / math.tan(0.4)
    x0 = car.state.copy()
    steps = 200
    for _ in range(steps):
        car.step(0.01, speed=1.0, acceleration=0.0, steering_angle=0.4)
    turned = (car.state[2] - x0[2]) % (2 * math.pi)
    assert turned == pytest.approx(steps * 0.01 * 1.0 / radius % (2 * math.pi), rel=0.02)


def test_the_stop_is_zero_speed_braking_at_the_stops_deceleration_in_every_mode():
    for mode in ("integrate", "acceleration"):
        mapper = DriveMapper(max_accel=3.0, speed_mode=mode)
        for _ in range(5):
            mapper.command(1.0, 0.3, measured_speed=2.0)
        stop = mapper.stop(-0.8)
        assert (stop.speed, stop.steering_angle) == (0.0, 0.0) and stop.acceleration == pytest.approx(2.4)
        assert mapper.command(0.0, 0.0, measured_speed=0.0).speed == pytest.approx(0.0)  # and holds it
