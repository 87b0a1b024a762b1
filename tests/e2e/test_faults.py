"""Issue 9 §3: SIGKILL of one node of the running car stack, each in its own test, real processes over DDS.

The stack runs through bringup.launch.yaml (every node but the hardware driver has ``respawn``),
in real time, serving a model from the start (``checkpoint:=``), so the controller plans from the
first cycle. Each test kills one node with SIGKILL while the car is being controlled and checks
that the controller keeps driving on the model it has (or holds the stop while the estimator is
gone), that the launcher starts the node again and that it does its job again. The recovery time
(SIGKILL to the node's job done again) is printed on a ``recovery`` line (pytest -s shows it).
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager

import pytest

from mbrl_ros.io import checkpoint
from mbrl_ros.io.bag_tools import repair_path
from mbrl_ros.io.config import launch_parameters, model_section_at
from mbrl_ros.robots import get_robot
from mbrl_ros.ros_env import REPO_ROOT
from mbrl_ros.stack_run import StackRun, prepare_config

from hardware_stack import domain_for

REPORTING = ("estimator", "dynamics_server", "controller", "data_logger", "trainer")
OVERRIDES = {
    **{node: {"diagnostics_period": 0.2} for node in REPORTING},
    "data_logger": {"diagnostics_period": 0.2, "flush_period": 0.5, "split_duration": 600.0},
}


@contextmanager
def controlled_car(folder, name: str):
    """The car stack in real time with a model from the start, planning; yields the StackRun."""
    config = prepare_config(REPO_ROOT / "config", folder / "config", "car", "parking", OVERRIDES)
    trainer = launch_parameters(config, "car", "parking", "trainer")
    section = model_section_at(trainer["parametric"], trainer["dt"], "trainer.parametric")
    checkpoint.save(model := folder / "model.pt", get_robot("car").build_model(section), section)
    run = StackRun(folder, {"robot": "car", "hardware": "sim", "task": "parking", "lockstep": "false",
                            "run_dir": str(folder / "run"), "config_dir": str(config), "checkpoint": str(model)},
                   domain_for(name), watch_timing=False)
    try:
        run.wait_for(lambda: planned(run) > 5 and all(run.watcher.node_status(n) for n in REPORTING), 180,
                     "the controller to plan with the checkpoint's model and every node to report")
        run.expect_exits = True  # a node ending is the point of these tests
        yield run
    finally:
        run.stop()


def planned(run: StackRun) -> int:
    return int(run.watcher.node_status("controller").get("cycles_plan", "0"))


def kill(run: StackRun, node: str, sig: int = signal.SIGKILL) -> float:
    """Signal the node's process; its old diagnostics are forgotten. -> the time of the signal."""
    os.kill(run.runner.pids[node][-1], sig)
    killed = time.monotonic()
    run.watcher.diagnostics.pop(f"{run.watcher.namespace}/{node}", None)
    return killed


def report(node: str, what: str, seconds: float) -> None:
    print(f"recovery {node}: {what} {seconds:.2f} s after SIGKILL")


def back(run: StackRun, node: str, killed: float, what: str, condition=None) -> float:
    """Wait for the node's new process to report (and ``condition``); -> seconds since the kill."""
    run.wait_for(lambda: len(run.runner.pids[node]) == 2 and run.watcher.node_status(node)
                 and (condition is None or condition()), 60, f"{node} to come back: {what}")
    seconds = time.monotonic() - killed
    report(node, what, seconds)
    return seconds


def keeps_planning(run: StackRun, version: str, cycles: int = 5) -> None:
    """The controller goes on planning, with the model version it had."""
    start = planned(run)
    run.wait_for(lambda: planned(run) >= start + cycles, 30, f"{cycles} more planned cycles")
    assert run.watcher.node_status("controller")["model_version"] == version


def test_dynamics_server_killed_the_controller_keeps_its_model_and_the_model_is_served_again(tmp_path):
    with controlled_car(tmp_path, "faults-dynamics-server") as run:
        served = run.watcher.node_status("dynamics_server")
        version = run.watcher.node_status("controller")["model_version"]
        killed = kill(run, "dynamics_server")
        keeps_planning(run, version)
        back(run, "dynamics_server", killed, "serving the model again",
             lambda: run.watcher.node_status("dynamics_server").get("checksum") == served["checksum"])
        keeps_planning(run, version)  # the same model again (same checksum): no swap


def test_trainer_killed_the_controller_keeps_driving_and_the_trainer_comes_back(tmp_path):
    with controlled_car(tmp_path, "faults-trainer") as run:
        version = run.watcher.node_status("controller")["model_version"]
        killed = kill(run, "trainer")
        keeps_planning(run, version)
        back(run, "trainer", killed, "reporting again")
        keeps_planning(run, version)


def test_estimator_killed_the_controller_holds_the_stop_then_drives_again(tmp_path):
    with controlled_car(tmp_path, "faults-estimator") as run:
        controller = lambda: run.watcher.node_status("controller")  # noqa: E731
        version = controller()["model_version"]
        killed = kill(run, "estimator")
        run.wait_for(lambda: "stale" in controller().get("last_reason", ""), 10, "the controller to see stale state")
        report("estimator", "controller on the stop (state stale)", time.monotonic() - killed)
        safe = int(controller()["cycles_safe"])
        run.wait_for(lambda: int(controller()["cycles_safe"]) > safe + 2, 10, "the stop held while no state comes")
        back(run, "estimator", killed, "states again")
        stopped_at = planned(run)
        run.wait_for(lambda: planned(run) > stopped_at, 30, "planning again")
        report("estimator", "controller planning again", time.monotonic() - killed)
        keeps_planning(run, version)


def test_data_logger_killed_loses_at_most_its_flush_period_and_bag_repair_restores_the_rest(tmp_path):
    with controlled_car(tmp_path, "faults-data-logger") as run:
        bags = tmp_path / "run" / "bags"
        logger = lambda: run.watcher.node_status("data_logger")  # noqa: E731
        run.wait_for(lambda: int(logger().get("messages_flushed", "0")) > 50, 30, "the logger to flush messages")
        last = logger()
        flushed, killed_bag = int(last["messages_flushed"]), last["current_bag"]
        written = sum(int(v) for k, v in last.items() if k.startswith("written "))
        version = run.watcher.node_status("controller")["model_version"]
        killed = kill(run, "data_logger")
        keeps_planning(run, version)
        back(run, "data_logger", killed, "recording again",
             lambda: logger().get("current_bag", killed_bag) != killed_bag
             and int(logger().get("messages_flushed", "0")) > 0)
        keeps_planning(run, version)
    results = {r.path.name: r for r in repair_path(bags)}
    name = os.path.basename(killed_bag)
    assert name in results and results[name].damaged_copy is not None, results
    restored = results[name].message_count
    print(f"data_logger: at the last report before SIGKILL {written} messages written, {flushed} flushed; "
          f"{restored} restored by bag repair")
    assert restored >= flushed  # all that was flushed, and what came in the flush period after the report


def test_every_node_ends_cleanly_on_sigterm_and_on_the_launchs_sigint(tmp_path):
    """Issue 9 §4: SIGTERM to each node (as a service manager sends it) and SIGINT to all (the launch's Ctrl-C)
    end every process with exit code 0; a node ended by SIGTERM is respawned like any other."""
    with controlled_car(tmp_path, "faults-clean-exit") as run:
        for node in REPORTING:
            kill(run, node, signal.SIGTERM)
        run.wait_for(lambda: all(len(run.runner.pids[n]) == 2 and run.watcher.node_status(n) for n in REPORTING),
                     90, "every node to end and come back (its new process reporting)")
        ended = {node: run.runner.exit_codes[node][0] for node in REPORTING}
        assert ended == dict.fromkeys(REPORTING, 0), (ended, "\n".join(run.lines))
    # controlled_car's exit stopped the launch with SIGINT: every process, respawned or not, ended with 0.
    assert {node: codes for node, codes in run.runner.exit_codes.items() if any(codes)} == {}, run.runner.exit_codes
