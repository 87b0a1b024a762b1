"""Helpers of the hardware e2e tests (test_real_car, test_hand): device emulators as separate
processes beside the stack (``mbrl_ros.stack_run.StackRun``, through the launch file).

The test process uses plain rclpy with standard messages only (it cannot import
mbrl_interfaces or ackermann_msgs): /diagnostics from every node and emulator
carry what the tests check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from mbrl_ros.stack_run import StackRun
from mbrl_ros.ros_env import REPO_ROOT, free_domain_id, workspace_env


def domain_for(name: str) -> int:
    return free_domain_id(name)


def start_emulator(domain: int, module: str, params: dict[str, object], log: Path) -> subprocess.Popen:
    """A device emulator as its own process, as a user would have the vendor driver running."""
    argv = [sys.executable, "-m", module, "--ros-args"]
    for name, value in params.items():
        argv += ["-p", f"{name}:={value}"]
    with open(log, "w") as out:
        return subprocess.Popen(argv, env=workspace_env(domain_id=domain), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def emulated_robot(folder: Path, name: str, emulator_module: str, emulator_params: dict[str, object],
                   args: dict[str, str]):
    """A device emulator (its own process, started first, as a vendor driver would be) and the stack
    with ``args`` talking to it; yields the StackRun and stops everything at the end."""
    domain = domain_for(name)
    emulator = start_emulator(domain, emulator_module, emulator_params, folder / f"{name}-emulator.log")
    try:
        run = StackRun(folder, {**args, "run_dir": str(folder / "run")}, domain, namespace=args["robot"],
                       watch_timing=False, processes={"emulator": emulator})
        try:
            yield run
        finally:
            run.stop()
    finally:
        stop_process(emulator)


def small_hand_config(folder: Path, random_transitions: int = 200, small_model: bool = True) -> Path:
    """The repository's hand config with less exploration (and, with ``small_model``, a smaller ensemble,
    shorter training and fewer MPPI samples), so that a model comes sooner."""
    shutil.copytree(REPO_ROOT / "config", folder)
    changes = [("random_transitions: 1000", f"random_transitions: {random_transitions}"),
               ("poll_period: 1.0", "poll_period: 0.5"), ("split_duration: 5.0", "split_duration: 2.0")]
    if small_model:
        changes += [("ensemble_size: 5", "ensemble_size: 2"), ("num_elites: 5", "num_elites: 2"),
                    ("hidden_sizes: [200, 200]", "hidden_sizes: [64, 64]"), ("epochs: 100", "epochs: 10")]
    hand = folder / "hand.yaml"
    text = hand.read_text()
    for old, new in changes:
        assert old in text, f"config/hand.yaml no longer has '{old}'"
        text = text.replace(old, new)
    hand.write_text(text)
    reach = folder / "hand_reach.yaml"
    text = reach.read_text()
    # Eager: the shipped config compiles the planning step, minutes on a clean machine (the compiled step is
    # tested in tests/core/test_mppi.py and test_compile_cache.py, at the node in tests/ros/test_controller_compile.py).
    assert "compile: true" in text, "config/hand_reach.yaml no longer has 'compile: true'"
    text = text.replace("compile: true", "compile: false")
    if small_model:
        text = re.sub(r"num_samples: \d+", "num_samples: 100", text)
    reach.write_text(text)
    return folder
