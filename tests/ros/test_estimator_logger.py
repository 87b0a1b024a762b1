"""The estimator and the data_logger as real processes over DDS, against a stand-in simulator/controller.

Needs the workspace built (setup.sh runs scripts/build_ros_ws.sh). The processes
run in a ROS domain of their own, discovery kept on this host, in sim time
driven by the stand-in's /clock (estimator_logger_peers.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from mbrl_ros.io.bags import list_bags, transitions_from_bags
from child_output import wait_for_line

PEERS = Path(__file__).with_name("estimator_logger_peers.py")
STEPS, NAN_STEP, JUMP_STEP = 24, 8, 16
DT_NS, T0_NS = 200_000_000, 1_000_000_000
STEER_GAIN = 0.7853981633974483


def node(module: str, *ros_args: str) -> list[str]:
    return ["-c", f"import sys; from mbrl_ros.nodes.{module} import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/car", "-p", "use_sim_time:=true", *ros_args]


def stop(proc: subprocess.Popen, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{proc.args[-6:]} did not stop on signal {sig}")
    return proc.returncode, proc.stderr.read()


def wrap(angle: float) -> float:
    return math.pi - (math.pi - angle) % (2 * math.pi)


def steer_command(k: int) -> float:
    return round(math.sin(0.7 * k), 6)


def test_estimator_states_and_logged_transitions(spawn, tmp_path):
    out_dir = tmp_path / "bags"
    estimator = spawn(*node("estimator", "-p", "log_throttle:=0.0"))
    logger = spawn(*node("data_logger", "-p", f"output_dir:={out_dir}", "-p", "prefix:=log",
                         "-p", "split_duration:=1.0", "-p", "niceness:=5"))
    driver = spawn(str(PEERS), "drive", str(STEPS), str(NAN_STEP), str(JUMP_STEP))
    wait_for_line(driver, "ready", timeout=90, others=(estimator, logger))
    # The recorder yields a core to the control path (its niceness on top of ours), the estimator does not.
    assert os.getpriority(os.PRIO_PROCESS, logger.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    assert os.getpriority(os.PRIO_PROCESS, estimator.pid) == os.getpriority(os.PRIO_PROCESS, 0)
    got = json.loads(wait_for_line(driver, "result ", timeout=90, others=(estimator, logger)))
    assert "error" not in got, got
    assert got["missing"] == [], f"states never came for steps {got['missing']}"

    # --- the estimator's states: values, yaw wrapped, steering from the last command ---
    states = {int(stamp): value for stamp, value in got["states"].items()}
    assert T0_NS + NAN_STEP * DT_NS not in states, "the NaN odometry gave a state"
    assert len(states) == STEPS - 1
    last_steer_command = 0.0
    for k in range(STEPS):
        if k == NAN_STEP:
            continue
        names, values, valid, frame_id = states[T0_NS + k * DT_NS]
        assert names == ["x", "y", "yaw", "v", "steer"] and valid and frame_id == "map"
        yaw = wrap(0.4 * k)
        assert -math.pi < values[2] <= math.pi
        expected = [0.5 * k + (50.0 if k >= JUMP_STEP else 0.0), -0.25 * k, yaw, 1.0 + 0.1 * k,
                    STEER_GAIN * last_steer_command]
        np.testing.assert_allclose(values, expected, atol=1e-9, err_msg=f"step {k}")
        last_steer_command = steer_command(k)
    diagnostics = got["diagnostics"]
    assert diagnostics is not None, "no /diagnostics from /car/estimator"
    assert int(diagnostics["rejected_inputs"]) >= 1 and "non-finite x" in diagnostics["last_rejection"]
    assert got["warned"], "no WARN diagnostics after the rejected odometry"

    # --- the logger: bags closed while it runs, the last one on SIGTERM ---
    logger_diagnostics = got["logger"]
    assert logger_diagnostics is not None, "no /diagnostics from /car/data_logger"
    written = {k: v for k, v in logger_diagnostics.items() if k.startswith(("written", "publishers"))}
    assert int(written["written /car/state"]) == len(states), written
    assert int(written["written /car/hw/command"]) == len(got["commands"]), written
    closed_while_running = list_bags(out_dir)
    assert len(closed_while_running) >= 2
    rc, logger_err = stop(logger, signal.SIGTERM)
    assert rc == 0, logger_err
    bags = list_bags(out_dir)
    assert len(bags) > len(closed_while_running)
    assert sorted(p for p in out_dir.iterdir()) == bags, "a bag was left without metadata.yaml"
    for bag in bags:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert info["storage_identifier"] == "mcap"
        with Reader(bag) as reader:
            types = {c.topic: c.msgtype for c in reader.connections}
            counts = {c.topic: c.msgcount for c in reader.connections}
        assert types == {
            "/car/hw/odom": "nav_msgs/msg/Odometry", "/car/hw/command": "mbrl_interfaces/msg/CommandVector",
            "/car/state": "mbrl_interfaces/msg/StateVector", "/car/goal_pose": "geometry_msgs/msg/PoseStamped",
            "/car/sim/episodes": "diagnostic_msgs/msg/DiagnosticArray",
        }
        assert counts["/car/goal_pose"] == 1, f"{bag}: the latched goal is not repeated in every bag"

    # --- the bags read back as the transitions that happened ---
    report = {}
    data = transitions_from_bags(bags, "state", "hw/command", dt=0.2, report=report)
    steps_of = [(-4 * data.states[first:end, 1]).round().int().tolist() for _, first, end in data.episodes()]
    assert steps_of == [list(range(0, NAN_STEP - 1)), list(range(NAN_STEP + 1, JUMP_STEP - 1)),
                        list(range(JUMP_STEP, STEPS - 1))], report
    ks = (-4 * data.states[:, 1]).round().int().tolist()
    np.testing.assert_allclose(data.actions.numpy(), [[0.1, steer_command(k)] for k in ks], atol=1e-6)
    np.testing.assert_allclose(data.next_states[:, 4].numpy(), [STEER_GAIN * steer_command(k) for k in ks], atol=1e-6)

    rc, estimator_err = stop(estimator, signal.SIGINT)
    assert rc == 0, estimator_err


def test_estimator_refuses_a_steering_gain_other_than_the_real_cars(spawn, tmp_path):
    """Issue 9 §2: on hardware:=real the estimator reads car_real.yaml too; a steer_gain that is not the bridge's
    max_steer stops it at startup (exit 1) with both keys named."""
    config = Path(__file__).parents[2] / "config"
    (edited := tmp_path / "edited.yaml").write_text("/**/estimator:\n  ros__parameters:\n    steer_gain: 0.7\n")
    files = [arg for path in (config / "car.yaml", config / "car_parking.yaml", config / "car_real.yaml", edited)
             for arg in ("--params-file", str(path))]
    estimator = spawn(*node("estimator", *files))
    assert estimator.wait(timeout=60) == 1
    error = estimator.stderr.read()
    assert "'steer_gain' is 0.7, but it follows from 'max_steer' (0.4189)" in error, error


@pytest.mark.parametrize("task", ["parking", "race"])
@pytest.mark.parametrize("node_name, gain, bridge_gain", [("estimator", "steer_gain", "max_steer"),
                                                         ("controller", "accel_per_unit", "max_accel")])
def test_the_shipped_real_car_config_gives_each_node_the_bridges_gain(task, node_name, gain, bridge_gain):
    """The estimator's steering angle and the controller's stop (its braking) are in the bridge's units."""
    from mbrl_ros.io.config import launch_parameters, merge, node_parameters

    config = Path(__file__).parents[2] / "config"
    node_params = merge(launch_parameters(config, "car", task, node_name),
                        node_parameters(config / "car_real.yaml", node_name))
    bridge = merge(launch_parameters(config, "car", task, "real_car"),
                   node_parameters(config / "car_real.yaml", "real_car"))
    assert node_params[gain] == node_params[bridge_gain] == bridge[bridge_gain]


def test_the_car_stop_refuses_an_acceleration_gain_other_than_the_real_cars():
    from mbrl_ros.robots import get_robot

    params = {"state_names": ["x", "y", "yaw", "v", "steer"], "action_names": ["u_accel", "u_steer"],
              "accel_per_unit": 5.0, "stop_deceleration": 2.0, "dt": 0.2, "max_accel": 3.0}
    with pytest.raises(ValueError, match=r"'accel_per_unit' is 5.0, but it follows from 'max_accel' \(3.0\)"):
        get_robot("car").stop(params, "controller")
    assert get_robot("car").stop({**params, "accel_per_unit": 3.0}, "controller") is not None


def test_data_logger_split_closes_the_open_bag_for_the_trainer(spawn, tmp_path, ros_env):
    """~/split (issue 10 §2): a held lockstep simulation stops the clock, so no bag would close by its duration;
    the demo closes the bag of the episode it wants the trainer to learn from."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import Trigger

    from mbrl_ros.ros.qos import EPISODE_REPORTS
    from mbrl_ros.stack_run import StackWatcher

    out_dir = tmp_path / "bags"
    logger = spawn(*node("data_logger", "-p", f"output_dir:={out_dir}", "-p", "topics:=['sim/episodes']",
                         "-p", "use_sim_time:=false", "-p", "split_duration:=3600.0"))
    watcher = StackWatcher(int(ros_env["ROS_DOMAIN_ID"]), "car", timing=False)
    split = "/car/data_logger/split"
    try:
        answer = watcher.call(Trigger, split, Trigger.Request(), timeout=60.0)
        assert not answer.success and answer.message == "no open bag", answer.message
        publisher = watcher.node.create_publisher(DiagnosticArray, "/car/sim/episodes", EPISODE_REPORTS)
        deadline = time.monotonic() + 60
        while watcher.node_status("data_logger").get("written /car/sim/episodes", "0") == "0":
            assert time.monotonic() < deadline and logger.poll() is None, logger.poll()
            publisher.publish(DiagnosticArray())
            watcher.spin(0.2)
        assert list_bags(out_dir) == []  # open: the trainer does not read it yet
        answer = watcher.call(Trigger, split, Trigger.Request())
        assert answer.success and answer.message == f"closed {out_dir / 'bag_0000'}", answer.message
        assert list_bags(out_dir) == [out_dir / "bag_0000"]
        assert not watcher.call(Trigger, split, Trigger.Request()).success
    finally:
        watcher.close()
