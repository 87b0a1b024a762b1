"""The car demo, in one process: explore, fit, then plan through the fitted model.

This is the core's closed loop without ROS: the same simulator wrapper, config
files, ``fit_model`` and planners the nodes use. It is what ``mbrl-ros demo
car`` runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import fit_model
from mbrl_ros.core.planners.base import build_planner
from mbrl_ros.io.config import ConfigError, merge, node_parameters, require
from mbrl_ros.plots import plot_car_trajectories, plot_error_vs_horizon, plot_latency_histogram

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
EVALUATION_SEED_OFFSET = 10_000  # evaluation episodes never reuse an exploration seed


@dataclass
class Episode:
    seed: int
    outcome: str  # success | crashed | timeout
    states: np.ndarray
    goal: np.ndarray | None
    latencies_ms: list[float] = field(default_factory=list)
    cross_track_error_m: float | None = None


def load_car_config(task: str, config_dir: str | Path | None = None) -> tuple[dict, dict]:
    """(controller, trainer) parameters: ``car.yaml`` overridden by ``car_<task>.yaml``."""
    folder = Path(config_dir) if config_dir else CONFIG_DIR
    robot, task_file = folder / "car.yaml", folder / f"car_{task}.yaml"
    if not task_file.exists():
        raise ConfigError(f"{task_file}: no config for task '{task}'")
    return tuple(
        merge(node_parameters(robot, node), node_parameters(task_file, node, required=False))
        for node in ("controller", "trainer")
    )


def make_sim(task: str):
    if task == "parking":
        from mbrl_ros_hardware.sim_car.parking import ParkingSim

        return ParkingSim()
    from mbrl_ros_hardware.sim_car.race import RaceSim

    return RaceSim()


def collect_random(sim, transitions: int, seed: int, smoothing: float = 0.8) -> TransitionDataset:
    """Random driving (the controller's exploration policy), new episode whenever one ends."""
    explore = ExplorationPolicy(-np.ones(sim.action_dim), np.ones(sim.action_dim), smoothing, seed)
    data = TransitionDataset(sim.state_dim, sim.action_dim)
    episode = 0
    bar = tqdm(total=transitions, desc="exploring", unit="step", leave=False, disable=None)
    while len(data) < transitions:
        state = sim.reset(seed=seed + episode)
        explore.reset()
        states, actions = [state], []
        while len(data) + len(actions) < transitions:
            action = explore()
            step = sim.step(action)
            if getattr(step, "crashed", False):
                break  # a collision is not the car's dynamics: keep it out of the data
            states.append(step.state)
            actions.append(action)
            bar.update(1)
            if step.done:
                break
        if actions:
            data.append_trajectory(np.array(states), np.array(actions), episode_id=episode)
        episode += 1
    bar.close()
    return data


def run_demo(task: str = "parking", episodes: int = 20, model_kind: str | None = None,
             random_transitions: int | None = None, seed: int = 0, config_dir: str | None = None,
             out_dir: str | None = None, json_path: str | None = None) -> int:
    torch.manual_seed(seed)
    controller_cfg, trainer_cfg = load_car_config(task, config_dir)
    model_kind = model_kind or require(trainer_cfg, "model_kind", "trainer", str)
    model_cfg = require(trainer_cfg, model_kind, "trainer", dict)
    random_transitions = random_transitions or require(trainer_cfg, "random_transitions", "trainer", int)
    out = Path(out_dir) if out_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    sim = make_sim(task)
    print(f"[demo] car/{task}: {random_transitions} random transitions, model '{model_kind}', "
          f"planner '{controller_cfg.get('planner')}', {episodes} episodes -> {out}/")

    # 1. Explore and fit.
    data = collect_random(sim, random_transitions, seed)
    train, val = data.split_by_episode(require(trainer_cfg, "val_fraction", "trainer", float), seed=seed)
    angle_dims = trainer_cfg.get("angle_dims", [])
    started = time.perf_counter()
    fit = fit_model(model_cfg, train, val, training=trainer_cfg.get("training"),
                    horizons=trainer_cfg.get("horizons", (1, 5, 10, 20)), angle_dims=angle_dims,
                    error_scale=trainer_cfg.get("error_scale"), source=f"trainer.{model_kind}")
    print(f"[demo] fitted '{model_kind}' on {len(train)} transitions in {time.perf_counter() - started:.1f} s; "
          f"held-out error {fit.val_error}")
    if "sysid" in fit.details:
        print(f"[demo] identified parameters: {fit.details['sysid']['params']}")

    # 2. Control.
    planner_name = require(controller_cfg, "planner", "controller", str)
    cost = build_cost(require(controller_cfg, "cost", "controller", dict), sim.state_dim, sim.action_dim,
                      source="controller.cost")
    planner = build_planner(planner_name, fit.model, cost, controller_cfg.get(planner_name),
                            source=f"controller.{planner_name}")
    if getattr(sim, "path", None) is not None:
        cost.set_path(torch.as_tensor(sim.path, dtype=torch.float32))
    # The first plan compiles the planner (seconds); do it before the clock matters.
    started = time.perf_counter()
    if getattr(sim, "goal", None) is not None:
        cost.set_goal(torch.zeros(sim.state_dim))
    planner.plan(torch.zeros(sim.state_dim))
    print(f"[demo] planner ready in {time.perf_counter() - started:.1f} s")
    results: list[Episode] = []
    bar = tqdm(range(episodes), desc=task, unit="episode", disable=None)
    for i in bar:
        results.append(run_episode(sim, planner, cost, seed + EVALUATION_SEED_OFFSET + i))
        successes = sum(e.outcome == "success" for e in results)
        all_latencies = np.concatenate([e.latencies_ms for e in results])
        bar.set_postfix_str(f"success {successes}/{len(results)} | plan p50 {np.median(all_latencies):.1f} ms")
    bar.close()

    summary = summarise(task, results, len(data), 1e3 / controller_cfg.get("rate_hz", 5.0))
    write_report(out, results, fit, model_kind, summary, sim)
    print(f"[demo] {summary['episodes']} episodes: success rate {summary['success_rate']:.0%}, "
          f"controller latency p50 {summary['controller_latency_ms']['p50']:.1f} ms / "
          f"p99 {summary['controller_latency_ms']['p99']:.1f} ms, deadline misses "
          f"{summary['deadline_miss_rate']:.1%}; plots in {out}/")
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def run_episode(sim, planner, cost, seed: int) -> Episode:
    state = sim.reset(seed=seed)
    planner.reset()
    goal = getattr(sim, "goal", None)
    if goal is not None:
        cost.set_goal(torch.as_tensor(goal, dtype=torch.float32))
    states, latencies, errors = [state], [], []
    outcome = "timeout"
    while True:
        started = time.perf_counter()
        action = planner.plan(torch.as_tensor(state, dtype=torch.float32)).action.numpy()
        latencies.append((time.perf_counter() - started) * 1e3)
        step = sim.step(action)
        state = step.state
        states.append(state)
        if hasattr(step, "cross_track_error"):
            errors.append(step.cross_track_error)
        if getattr(step, "success", False):
            outcome = "success"
        elif getattr(step, "crashed", False):
            outcome = "crashed"
        if step.done:
            break
    return Episode(seed, outcome, np.array(states), None if goal is None else goal.copy(), latencies,
                   float(np.mean(errors)) if errors else None)


def summarise(task: str, results: list[Episode], transitions: int, deadline_ms: float) -> dict:
    latencies = np.concatenate([e.latencies_ms for e in results])
    summary = {
        "task": task,
        "episodes": len(results),
        "success_rate": float(np.mean([e.outcome == "success" for e in results])),
        "transitions": int(transitions + sum(len(e.latencies_ms) for e in results)),
        "controller_latency_ms": {"p50": float(np.percentile(latencies, 50)),
                                  "p99": float(np.percentile(latencies, 99))},
        "deadline_miss_rate": float(np.mean(latencies > deadline_ms)),
    }
    if task == "race":
        summary["mean_cross_track_error_m"] = float(np.mean([e.cross_track_error_m for e in results]))
    return summary


def write_report(out: Path, results: list[Episode], fit, model_kind: str, summary: dict, sim) -> None:
    bounds = None
    if summary["task"] == "parking":
        from mbrl_ros_hardware.sim_car.parking import WALL_HALF_X, WALL_HALF_Y

        bounds = (-WALL_HALF_X, -WALL_HALF_Y, WALL_HALF_X, WALL_HALF_Y)
    plot_car_trajectories(out / "trajectories.png", [e.states for e in results], [e.goal for e in results],
                          [e.outcome for e in results], bounds=bounds, reference=getattr(sim, "path", None),
                          title=f"{summary['task']}: {summary['success_rate']:.0%} success" if summary["task"] == "parking"
                          else f"race: mean cross-track error {summary.get('mean_cross_track_error_m', 0):.2f} m")
    if fit.val_error is not None:
        plot_error_vs_horizon(out / "model_error.png", {model_kind: fit.val_error.rmse})
    plot_latency_histogram(out / "latency.png", np.concatenate([e.latencies_ms for e in results]),
                           deadline_ms=1e3 * sim.dt)
    (out / "summary.json").write_text(json.dumps(
        {**summary, "model": model_kind, "model_metrics": fit.metrics(), "fit": fit.details,
         "episodes_detail": [{"seed": e.seed, "outcome": e.outcome, "steps": len(e.latencies_ms)} for e in results]},
        indent=2, default=str) + "\n")
