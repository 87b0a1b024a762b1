"""What learning a policy costs: one training round of each method, and the actor's call.

The car's parking task as the stack configures it: the bicycle of ``config/car.yaml``
(``trainer.parametric``, with highway-env's true parameters, as identification finds
them), the controller's ``cost:`` from ``car.yaml`` + ``car_parking.yaml``, goals as
policy context, and 2,000 logged transitions of random smooth driving (the stack's
exploration budget) in episodes with random goals. One torch thread, as the trainer
runs. For each method (``shac``, ``mbpo``) at the default sizes of ``PolicyConfig``:
wall seconds of one ``train_policy`` round (training and validation), and the
candidate's and the standing-still reference's closed-loop costs on the held-out
episodes. For the actor: ``act`` (one state, NumPy) median and p99 in microseconds,
and a batched torch call on 500 states (what a sampling planner's prior needs).

Numbers, not pass/fail; the load average is in the output: a loaded machine is no result.
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import torch

from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.policies.config import PolicyConfig
from mbrl_ros.core.policies.learning import PolicyData, train_policy
from mbrl_ros.io.config import launch_parameters
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.car.bicycle import BicycleParams
from mbrl_ros.ros_env import REPO_ROOT

POLICY = {
    "context": "goal",
    "actor": {"hidden_sizes": [64, 64], "angle_dims": [2], "relative_dims": [[0, 0], [1, 1], [2, 2]]},
}


def _parking_data(model, transitions: int, steps: int, seed: int) -> tuple[TransitionDataset, dict]:
    """Random smooth driving from random poses in the lot, each episode with a random goal pose."""
    g = torch.Generator().manual_seed(seed)
    data, goals = TransitionDataset(5, 2), {}
    uniform = lambda n, half: (torch.rand(n, generator=g) * 2 - 1) * half  # noqa: E731
    for episode in range(transitions // steps):
        state = torch.stack([uniform(1, 30.0), uniform(1, 18.0), uniform(1, math.pi), torch.zeros(1),
                             torch.zeros(1)], dim=1)
        goals[episode] = [float(uniform(1, 30.0)), float(uniform(1, 14.0)), float(uniform(1, math.pi)), 0.0, 0.0]
        action, states, actions = torch.zeros(1, 2), [state], []
        for _ in range(steps):
            action = torch.clamp(0.8 * action + 0.4 * (2 * torch.rand(1, 2, generator=g) - 1), -1.0, 1.0)
            actions.append(action)
            with torch.no_grad():
                states.append(model(states[-1], action))
        data.append_trajectory(torch.cat(states), torch.cat(actions), episode)
    return data, goals


def _act_timing(actor, goal: list[float], calls: int) -> dict:
    actor.set_context(torch.tensor(goal))
    state = np.array([1.0, 2.0, 0.3, 0.5, 0.0])
    for _ in range(200):
        actor.act(state)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        actor.act(state)
        times.append(time.perf_counter() - started)
    batch = torch.randn(500, 5)
    goals = torch.tensor(goal).expand(500, -1)
    batched = []
    with torch.inference_mode():
        for _ in range(max(10, calls // 100)):
            started = time.perf_counter()
            actor(batch, goals)
            batched.append(time.perf_counter() - started)
    micro = np.array(times) * 1e6
    return {"act_us_median": float(np.median(micro)), "act_us_p99": float(np.percentile(micro, 99)),
            "batch500_us_median": float(np.median(batched) * 1e6)}


def run(methods: tuple[str, ...] = ("shac", "mbpo"), quick: bool = False, json_path: str | None = None) -> dict:
    torch.set_num_threads(1)
    config_dir = REPO_ROOT / "config"
    trainer = launch_parameters(config_dir, "car", "parking", "trainer")
    controller = launch_parameters(config_dir, "car", "parking", "controller")
    model_section = {**trainer["parametric"], "params": BicycleParams().as_dict()}
    model = get_robot("car").build_model(model_section, where="trainer.parametric")
    cost = get_robot("car").build_cost(controller["cost"], 5, 2, source="controller.cost")
    data, goals = _parking_data(model, transitions=2000, steps=50, seed=0)
    policy_data = PolicyData.from_dataset(data, val_fraction=0.2, seed=0, episode_contexts=goals)
    results: dict = {"load_average_before": list(os.getloadavg()), "torch_threads": torch.get_num_threads(),
                     "transitions": len(data), "methods": {}}
    for method in methods:
        section = {**POLICY, "method": method}
        if quick:
            section.update({"shac": {"iterations": 20}, "mbpo": {"total_steps": 20}})
        config = PolicyConfig.from_dict(section)
        started = time.perf_counter()
        round_ = train_policy(config, model, cost, policy_data, controller["action_low"], controller["action_high"])
        seconds = time.perf_counter() - started
        sizes = config.shac if method == "shac" else config.mbpo
        entry = {"round_seconds": seconds, "sizes": sizes.as_dict(), "accepted": round_.decision.accept,
                 "reason": round_.decision.reason, **round_.decision.metrics()}
        history = round_.history
        entry.update({k: getattr(history, k) for k in ("iterations", "gradient_steps", "transitions")
                      if hasattr(history, k)})
        entry.update(_act_timing(round_.actor, goals[0], 2000 if quick else 20000))
        results["methods"][method] = entry
        print(f"{method}: one round {seconds:.1f} s; closed-loop cost on held-out starts "
              f"{entry.get('candidate_cost_starts', float('nan')):.4g} vs standing still "
              f"{entry.get('reference_cost_starts', float('nan')):.4g} ({'accepted' if entry['accepted'] else 'rejected'}); "
              f"act {entry['act_us_median']:.1f} us median, {entry['act_us_p99']:.1f} us p99; "
              f"500 states batched {entry['batch500_us_median']:.0f} us", flush=True)
    results["load_average_after"] = list(os.getloadavg())
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
    return results
