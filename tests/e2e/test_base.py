"""The base (robot:=base hardware:=sim) as real processes over DDS in lockstep, through the launch file.

One stack for the module: sim_base (ir-sim plus motor lag and slip), estimator, dynamics_server,
controller, data_logger, trainer. The controller explores, the trainer identifies the lagged
unicycle from the logged bags, and the base then drives to goal poses among the config's
obstacles. The bound that can fail: the controlled episodes reach their goals far more often
than uniformly random twists do in the same simulator on the same seeds.
"""

from __future__ import annotations

import numpy as np
import pytest

from hardware_stack import domain_for
from mbrl_ros.io.config import launch_parameters
from mbrl_ros.robots.base.messages import obstacle_rows
from mbrl_ros.ros_env import REPO_ROOT
from mbrl_ros.stack_run import StackRun, prepare_config
from mbrl_ros_hardware.base.world import BaseWorld, BaseWorldConfig

CONTROLLED = 4
# Less exploration than the repository's config, so a model arrives within seconds of sim time.
SMALL = {"trainer": {"random_transitions": 400, "poll_period": 1.0},
         "controller": {"random_transitions": 400},
         "data_logger": {"split_duration": 10.0}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    config = prepare_config(REPO_ROOT / "config", folder / "config", "base", "goal", SMALL)
    run = StackRun(folder, {"robot": "base", "hardware": "sim", "task": "goal", "lockstep": "true",
                            "run_dir": str(folder / "run"), "config_dir": str(config)},
                   domain_for("e2e-base"), namespace="base", watch_timing=False)
    try:
        yield run, config
    finally:
        run.stop()


def random_successes(config, seeds: list[int], steps: int) -> int:
    """Episodes of ``seeds`` that uniformly random twists (within the controller's bounds) bring to the goal."""
    params = launch_parameters(config, "base", "goal", "sim_base")
    limits = launch_parameters(config, "base", "goal", "controller")
    world = BaseWorld(BaseWorldConfig(
        dt=params["dt"], obstacles=obstacle_rows(params["obstacles"], "base_goal.yaml"), episode_steps=steps,
        **{k: params[k] for k in ("arena_half_size", "robot_radius", "max_speed", "max_yaw_rate", "max_accel",
                                  "max_yaw_accel", "motor_lag", "slip")}))
    rng, wins = np.random.default_rng(0), 0
    for seed in seeds:
        world.reset(seed)
        while not (step := world.step(rng.uniform(limits["action_low"], limits["action_high"]))).done:
            pass
        wins += step.success
    return wins


def test_the_base_learns_and_reaches_goals_among_obstacles_far_better_than_random(stack):
    run, config = stack
    watcher = run.watcher
    assert set(run.runner.pids) == {"launch_check", "sim_base", "estimator", "dynamics_server", "controller", "data_logger",
                                    "trainer"}, run.runner.pids
    run.wait_for(lambda: watcher.model_version() >= 1, 300, "the first identified model to reach the controller")
    first = len(watcher.reports) + 1  # the episode running now started without a model
    run.wait_for(lambda: len(watcher.reports) >= first + CONTROLLED, 300, f"{CONTROLLED} controlled episodes")
    controlled = watcher.reports[first:first + CONTROLLED]
    wins = sum(e["success"] == "True" for e in controlled)
    seeds = [int(e["seed"]) for e in controlled]
    baseline = random_successes(config, seeds, steps=150)
    assert wins >= CONTROLLED - 1 and wins >= baseline + 2, (wins, baseline, controlled,
                                                             watcher.node_status("controller"))
    assert not any(e["crashed"] == "True" for e in controlled), controlled
    # The obstacles reached the controller's cost (published latched by sim_base), and nothing was rejected.
    status = watcher.node_status("controller")
    assert status.get("model_kind") == "parametric" and "obstacles" not in status.get("last_reason", ""), status
