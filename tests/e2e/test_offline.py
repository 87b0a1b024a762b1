"""Offline learning and replay against a bag the real stack recorded.

One recording per module (the costly part): the car stack through the launch
file in lockstep (sim_car, estimator, controller exploring, data_logger; the
trainer is told to wait for more data than the run has, so no model is involved)
until about 750 states are logged. Then:

- ``mbrl-ros fit`` on those bags gives a checkpoint; a second stack whose
  dynamics_server loads it through its ``checkpoint`` parameter parks the car;
- ``mbrl-ros replay`` of the raw topics (hw/odom, hw/command, goal_pose) into a
  fresh estimator and data_logger gives a bag with the recorded transitions.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_stack import Watcher

from mbrl_ros import launcher
from mbrl_ros.io.bags import list_bags
from mbrl_ros.offline.fit import read_transitions, trainer_parameters
from mbrl_ros.ros_env import REPO_ROOT, workspace_env

STATES_TO_RECORD = 750


def domain_for(label: str) -> int:
    return 1 + zlib.crc32(f"{os.getpid()}:{label}".encode()) % 200


def config_copy(folder: Path, extra: str = "") -> Path:
    """config/ with a trainer that never trains (the models here come from `mbrl-ros fit`), plus ``extra``."""
    shutil.copytree(REPO_ROOT / "config", folder)
    car = folder / "car.yaml"
    text = car.read_text()  # edited as text: a YAML round trip would unquote "y"
    assert "random_transitions: 2000" in text, "config/car.yaml no longer has 'random_transitions: 2000'"
    car.write_text(text.replace("random_transitions: 2000", "random_transitions: 100000000") + extra)
    return folder


def start_stack(folder: Path, config: Path, domain: int, lines: list[str]):
    description = launcher.load_launch_file(
        REPO_ROOT / "launch" / "bringup.launch.yaml",
        {"robot": "car", "hardware": "sim", "task": "parking", "lockstep": "true",
         "run_dir": str(folder / "run"), "config_dir": str(config)},
        environment=workspace_env(domain_id=domain))
    runner = launcher.make_runner(description, output=lambda label, stream, text: lines.append(f"[{label}] {text}"),
                                  log_directory=folder / "log").start()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return runner, Watcher(domain, runner, lines)


def logged_states(watcher: Watcher) -> int:
    logger = next((v for k, v in watcher.diagnostics.items() if k.endswith("/car/data_logger")), {})
    return int(logger.get("written /car/state", "0"))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(folder of the recorded bags, the config used) from the stack exploring in lockstep."""
    folder = tmp_path_factory.mktemp("recording")
    config = config_copy(folder / "config")
    lines: list[str] = []
    runner, watcher = start_stack(folder, config, domain_for("offline-recording"), lines)
    try:
        watcher.spin_until(lambda: logged_states(watcher) >= STATES_TO_RECORD, 300,
                           f"{STATES_TO_RECORD} states in the data_logger's bags")
    finally:
        watcher.close()
        runner.stop(timeout=60)  # the data_logger closes its bag on the way out
    bags = folder / "run" / "bags"
    assert list_bags(bags), f"no closed bag in {bags}:\n" + "\n".join(lines[-30:])
    return bags, config


def recorded_transitions(bags: Path, config: Path):
    params, _ = trainer_parameters("car", "parking", config)
    return read_transitions(list_bags(bags), params, {})


def mbrl_ros(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrl_ros.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_a_model_fitted_offline_parks_the_car(recording, tmp_path):
    bags, config = recording
    assert len(recorded_transitions(bags, config)) >= 600
    out = tmp_path / "fit"
    fitted = mbrl_ros("fit", str(bags), "--robot", "car", "--model", "parametric", "--only", "--task", "parking",
                      "--config-dir", str(config), "--out", str(out), "--json", str(tmp_path / "fit.json"))
    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    errors = json.loads((tmp_path / "fit.json").read_text())["models"]["parametric"]["val_rmse"]
    assert errors["1"] is not None and errors["1"] < 0.05, errors

    # The dynamics_server loads the checkpoint through its parameter (set in the params file the launch gives it).
    serve = f"\n/**/dynamics_server:\n  ros__parameters:\n    checkpoint: {out / 'model.pt'}\n"
    lines: list[str] = []
    runner, watcher = start_stack(tmp_path, config_copy(tmp_path / "config", serve), domain_for("offline-park"), lines)
    try:
        watcher.spin_until(lambda: int(watcher.controller().get("model_version", "0")) >= 1, 120,
                           "the fitted model to reach the controller")
        first_controlled = len(watcher.episodes) + 1  # the episode running now may have started without it
        watcher.spin_until(lambda: any(e["success"] == "True" for e in watcher.episodes[first_controlled:]), 300,
                           "a parked episode under the offline-fitted model")
        server = next(v for k, v in watcher.diagnostics.items() if k.endswith("/car/dynamics_server"))
        assert server["model_kind"] == "parametric" and server["model_version"] == "1", server
    finally:
        watcher.close()
        runner.stop(timeout=60)
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt")), "the trainer trained: the model was not ours"


def test_replaying_the_raw_topics_reproduces_the_recorded_transitions(recording, tmp_path):
    bags, config = recording
    domain = domain_for("offline-replay")
    env = workspace_env(domain_id=domain)
    node_args = ["--ros-args", "-r", "__ns:=/car", "--params-file", str(config / "car.yaml"),
                 "--params-file", str(config / "car_parking.yaml"), "-p", "use_sim_time:=true"]
    replayed = tmp_path / "bags"
    commands = {"estimator": node_args, "data_logger": [*node_args, "-p", f"output_dir:={replayed}"]}
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    nodes = {name: subprocess.Popen([sys.executable, "-m", f"mbrl_ros.nodes.{name}", *args], env=env,
                                    stdout=logs[name].open("w"), stderr=subprocess.STDOUT)
             for name, args in commands.items()}
    watcher = Watcher(domain, None, [])
    try:
        watcher.spin_until(lambda: sum(k.endswith(("/car/estimator", "/car/data_logger"))
                                       for k in watcher.diagnostics) == 2, 60, "the estimator and data_logger")
        played = mbrl_ros("replay", str(bags), "--rate", "8", "--wait-for-subscribers", "1", "--delay", "1",
                          "--topics", "hw/odom", "hw/command", "goal_pose", env=env, timeout=300)
        assert played.returncode == 0, played.stdout + played.stderr
        assert "published" in played.stdout, played.stdout
        time.sleep(2.0)  # the last messages on their way to the data_logger
    finally:
        watcher.close()
        for proc in nodes.values():
            proc.send_signal(signal.SIGINT)  # the data_logger closes its bag
        for proc in nodes.values():
            proc.wait(timeout=30)

    original = recorded_transitions(bags, config)
    again = recorded_transitions(replayed, config)
    assert len(again) == len(original), (len(again), len(original), logs["data_logger"].read_text()[-2000:])
    np.testing.assert_allclose(again.states.numpy(), original.states.numpy(), atol=1e-6)
    np.testing.assert_allclose(again.actions.numpy(), original.actions.numpy(), atol=1e-6)
    np.testing.assert_allclose(again.next_states.numpy(), original.next_states.numpy(), atol=1e-6)
    assert [e[1:] for e in again.episodes()] == [e[1:] for e in original.episodes()]
