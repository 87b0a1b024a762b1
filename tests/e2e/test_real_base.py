"""hardware:=real for the base: the stack through bringup.launch.yaml, real_base bridging to an
emulated TurtleBot/Clearpath-style driver (base_emulator, its own process: /cmd_vel in, /odom out,
with latency, noise and drops) over DDS.

One stack for the module. The controller explores (no model yet): its commands must reach the
emulator as twists within the base's limits, and the emulator's /odom must come back as the
estimator's state. Then the controller is deactivated: real_base's watchdog must send a zero
twist and the emulated base must come to a stop (braking within its acceleration limits).
"""

from __future__ import annotations

import pytest
from lifecycle_msgs.msg import Transition

from hardware_stack import emulated_robot

MAX_SPEED, MAX_YAW_RATE = 0.8, 2.0  # config/base_real.yaml


@pytest.fixture(scope="module")
def real_base(tmp_path_factory):
    with emulated_robot(tmp_path_factory.mktemp("real_base"), "e2e-real-base", "mbrl_ros_hardware.base.emulator",
                        {"latency": 0.03, "odom_drop_rate": 0.1, "cmd_vel_drop_rate": 0.05, "seed": 3},
                        {"robot": "base", "hardware": "real", "task": "goal"}) as run:
        yield run


def test_twists_reach_the_emulator_and_odometry_comes_back_as_state(real_base):
    watcher = real_base.watcher
    pids = real_base.runner.pids
    assert "real_base" in pids and "sim_base" not in pids, pids
    commands_seen: set[tuple[str, str]] = set()

    def flowing() -> bool:
        emulator, bridge = watcher.status("base_emulator"), watcher.status("/base/real_base")
        estimator, controller = watcher.status("/base/estimator"), watcher.status("/base/controller")
        if emulator:
            commands_seen.add((emulator["last_linear_x_command"], emulator["last_angular_z_command"]))
        return (int(emulator.get("twists_received", "0")) > 50
                and int(bridge.get("commands", "0")) > 10 and int(bridge.get("odom_relayed", "0")) > 50
                and int(estimator.get("accepted", "0")) > 50
                and int(controller.get("cycles_explore", "0")) > 10
                and len(commands_seen) > 3 and abs(float(emulator["v"])) > 0.05)
    real_base.wait_for(flowing, 120, "exploration twists to drive the emulated base and its odometry to become "
                       "the estimator's state")
    emulator = watcher.status("base_emulator")
    assert int(emulator["odom_dropped"]) > 0
    assert all(abs(float(v)) <= MAX_SPEED + 1e-4 and abs(float(w)) <= MAX_YAW_RATE + 1e-4
               for v, w in commands_seen), commands_seen
    assert "stale" not in watcher.status("/base/controller").get("last_reason", "")
    assert watcher.status("/base/real_base")["stopped_by_watchdog"] == "False"


def test_the_watchdog_stops_the_base_when_commands_stop(real_base):
    watcher = real_base.watcher
    watcher.transition("/base/controller", Transition.TRANSITION_DEACTIVATE)

    def stopped() -> bool:
        bridge, emulator = watcher.status("/base/real_base"), watcher.status("base_emulator")
        return (bridge.get("stopped_by_watchdog") == "True" and int(bridge.get("watchdog_stops", "0")) >= 1
                and float(emulator.get("last_linear_x_command", "nan")) == 0.0
                and float(emulator.get("last_angular_z_command", "nan")) == 0.0
                and abs(float(emulator.get("v", "nan"))) < 0.02 and abs(float(emulator.get("w", "nan"))) < 0.05)
    real_base.wait_for(stopped, 20, "real_base's watchdog to send a zero twist and the base to stop")

    watcher.transition("/base/controller", Transition.TRANSITION_ACTIVATE)
    real_base.wait_for(lambda: watcher.status("/base/real_base").get("stopped_by_watchdog") == "False", 20,
                       "commands to resume after reactivation")
