"""The controller's stop brakes the car to rest also when the controller has never had a state.

The car's command is an acceleration, and its stop brakes from the speed the controller measured. A controller
that has no state yet (started, or respawned, while the car moves; its estimator not up) has no speed to brake
from: its stop says zero acceleration, marked as the stop (``mbrl_ros.ros.commands``). The real car's bridge
commands speed zero on that mark and the real-time simulator brakes on it (``hold_stop``), but the lockstep
sim_car applied it as sent and the car coasted on at its speed for as long as the stops came.

Over DDS: the lockstep sim_car (parking), a stand-in that drives it to 4 m/s and falls silent
(car_stop_peers.py), then the real controller with no estimator, whose stops alone step the simulator.
"""

from __future__ import annotations

import json
from pathlib import Path

from child_output import wait_for_line

CONFIG = Path(__file__).parents[2] / "config"
PARAMS = ["--params-file", str(CONFIG / "car.yaml"), "--params-file", str(CONFIG / "car_parking.yaml")]
PEERS = Path(__file__).with_name("car_stop_peers.py")
ACCELERATING_STEPS = 4  # u_accel 1 at 5 m/s^2 for 0.8 s: 4 m/s
STOP_STEPS = 15  # 3 s of the controller's stops at 5 Hz


def node(module: str, *ros_args: str) -> list[str]:
    return ["-c", f"import sys; from {module} import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/car", *PARAMS, *ros_args]


def test_the_controllers_stop_before_any_state_brakes_the_lockstep_car_to_rest(spawn):
    sim = spawn(*node("mbrl_ros_hardware.car.sim", "-p", "lockstep:=true", "-p", "wait_for_recorder:=false"))
    peer = spawn(str(PEERS), str(ACCELERATING_STEPS))
    speeds, commands = [], []

    def read(until, timeout: float, others) -> None:
        while not until():
            kind, _, body = wait_for_line(peer, "", timeout=timeout, others=others).partition(" ")
            if kind == "odom":
                speeds.append(json.loads(body)["v"])
            elif kind == "command":
                commands.append(json.loads(body))

    read(lambda: len(speeds) == ACCELERATING_STEPS + 1, 90, (sim,))
    cruising = speeds[-1]
    assert 3.9 < cruising < 4.1, speeds  # held there: the lockstep simulator waits for the next command
    # The controller on its timer, no estimator: it never has a state, and every command it sends is its stop.
    controller = spawn(*node("mbrl_ros.nodes.controller", "-r", "__node:=controller", "-p", "trigger:=timer",
                             "-p", "random_transitions:=0"))
    read(lambda: len(speeds) == ACCELERATING_STEPS + 1 + STOP_STEPS, 90, (sim, controller))
    stopping = speeds[ACCELERATING_STEPS + 1:]
    print(f"\nfrom {cruising:.2f} m/s on the controller's stops before any state: {[round(v, 3) for v in stopping]}")
    assert commands and all(c["frame_id"] == "stop" for c in commands), commands[:5]
    assert all(c["values"] == [0.0, 0.0] for c in commands), commands[:5]  # no speed to brake from: zero
    # Braked at once (full braking: the stop has no deceleration of its own to give), never on into reverse.
    at_rest = next((k for k, v in enumerate(stopping) if abs(v) < 0.01), None)
    assert at_rest is not None and at_rest <= 4, (cruising, stopping)
    assert all(abs(v) < 0.01 for v in stopping[at_rest:]), stopping
    assert all(a >= b - 1e-9 for a, b in zip([cruising] + stopping, stopping)), stopping  # slowing, only
