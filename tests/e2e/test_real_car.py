"""hardware:=real for the car: the stack through bringup.launch.yaml, real_car bridging to an
emulated F1TENTH driver (car_emulator, its own process, with latency, noise and drops) over DDS.

One stack for the module. The controller explores (no model yet): its commands must reach the
emulator as /drive, and the emulator's /odom must come back as the estimator's state (the
controller only explores on a fresh state). Then the controller is deactivated: real_car's
watchdog must bring the drive to zero speed and the emulated car to a stop.
"""

from __future__ import annotations

import pytest
from lifecycle_msgs.msg import Transition

from hardware_stack import emulated_robot

MAX_STEER = 0.4189  # config/car_real.yaml


@pytest.fixture(scope="module")
def real_car(tmp_path_factory):
    with emulated_robot(tmp_path_factory.mktemp("real_car"), "e2e-real-car", "mbrl_ros_hardware.car.emulator",
                        {"latency": 0.03, "odom_drop_rate": 0.1, "drive_drop_rate": 0.05, "position_noise": 0.01,
                         "seed": 3},
                        {"robot": "car", "hardware": "real", "task": "parking"}) as run:
        yield run


def test_commands_reach_the_emulator_and_odometry_comes_back_as_state(real_car):
    watcher = real_car.watcher
    pids = real_car.runner.pids
    assert "real_car" in pids and "sim_car" not in pids, pids
    steering_seen: set[str] = set()

    def flowing() -> bool:
        emulator, bridge = watcher.status("car_emulator"), watcher.status("/car/real_car")
        estimator, controller = watcher.status("/car/estimator"), watcher.status("/car/controller")
        if emulator:
            steering_seen.add(emulator["last_steering_command"])
        return (int(emulator.get("drives_received", "0")) > 50
                and int(bridge.get("commands", "0")) > 10 and int(bridge.get("odom_relayed", "0")) > 50
                and int(estimator.get("accepted", "0")) > 50
                and int(controller.get("cycles_explore", "0")) > 10
                and len(steering_seen) > 3 and abs(float(emulator["speed"])) > 0.05)
    real_car.wait_for(flowing, 120, "exploration commands to drive the emulated car and its odometry to "
                      "become the estimator's state")
    bridge = watcher.status("/car/real_car")
    # Issue 9 §2: the controller plans on a timer at the model's rate 1/dt (5 Hz), not once per odometry
    # message (50 Hz from the emulator, which the default trigger:=state did).
    assert int(bridge["commands"]) < 0.3 * int(bridge["odom_relayed"]), bridge
    emulator = watcher.status("car_emulator")
    assert int(emulator["odom_dropped"]) > 0 and int(emulator["drives_dropped"]) >= 0
    assert all(abs(float(s)) <= MAX_STEER + 1e-4 for s in steering_seen), steering_seen
    # The controller explores only on a fresh, valid state: odometry made it through the estimator.
    assert "stale" not in watcher.status("/car/controller").get("last_reason", "")
    assert watcher.status("/car/real_car")["stopped_by_watchdog"] == "False"


def test_the_watchdog_stops_the_car_when_commands_stop(real_car):
    watcher = real_car.watcher
    watcher.transition("/car/controller", Transition.TRANSITION_DEACTIVATE)

    def stopped() -> bool:
        bridge, emulator = watcher.status("/car/real_car"), watcher.status("car_emulator")
        return (bridge.get("stopped_by_watchdog") == "True" and int(bridge.get("watchdog_stops", "0")) >= 1
                and float(emulator.get("last_speed_command", "nan")) == 0.0
                and abs(float(emulator.get("speed", "nan"))) < 0.1)
    real_car.wait_for(stopped, 20, "real_car's watchdog to command zero speed and the car to stop")
    assert float(watcher.status("car_emulator")["last_steering_command"]) == 0.0

    watcher.transition("/car/controller", Transition.TRANSITION_ACTIVATE)
    real_car.wait_for(lambda: watcher.status("/car/real_car").get("stopped_by_watchdog") == "False", 20,
                      "commands to resume after reactivation")
