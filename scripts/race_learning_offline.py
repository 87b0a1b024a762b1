"""Does a learned model win the race once its data reach the grip limit? ROS-free, in one process.

Diagnostic, not a test (issue 10 §2). The stack's loop, shortened: random driving on the friction-limited car
(``sim std``), a fit of ``model`` (config/car_race.yaml's trainer section, the trainer's training options),
then ``learning`` episodes under MPPI (config/car_race.yaml's cost and settings, eager) at the cap ``learn_cap``,
refitting on all data after each one (what the demo's held learning episodes give), then one 3-lap episode
per cap in ``eval_caps`` from the evaluation seed 1000. ``start_speeds=lo,hi``: the random episodes start at a
speed drawn from [lo, hi] m/s (the simulator's own start is 5 m/s), so random driving slips near the limit.
Prints per episode the laps, lap times and the exit; states are the simulator's own (7 entries).

    .venv/bin/python scripts/race_learning_offline.py model=semiparametric random=3000 start_speeds=5,5 \
        learning=6 learn_cap=14 eval_caps=13,14 seed=0

``only_random=1``: the random data's speeds and slip only (seconds).
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import fit_model
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.retraining import validation_split
from mbrl_ros.io.config import launch_parameters, model_section_at
from mbrl_ros.robots import get_robot
from mbrl_ros_hardware.car.race import RaceSim

CONFIG = Path(__file__).resolve().parents[1] / "config"


def state_of(sim: RaceSim) -> np.ndarray:
    x, y, yaw, _v, steer = sim.state
    v, v_y, yaw_rate = sim.twist
    return np.array([x, y, yaw, v, steer, v_y, yaw_rate])


def random_episodes(sim: RaceSim, transitions: int, speeds: tuple[float, float], seed: int) -> TransitionDataset:
    """Random driving (the controller's exploration) from starts at speeds drawn from ``speeds``, as sim_car's
    race_start_speeds draws them."""
    data = TransitionDataset(7, 2)
    policy = ExplorationPolicy(-np.ones(2), np.ones(2), 0.8, seed)
    k, top = 0, 0.0
    while len(data) < transitions:
        sim.reset(seed=seed + k, speed=float(np.random.default_rng([seed + k, 1]).uniform(*speeds)))
        policy.reset()
        rows, done = [], False
        while not done and len(data) + len(rows) < transitions:
            state, action = state_of(sim), policy()
            done = sim.step(action).done
            rows.append((state, action, state_of(sim)))
            top = max(top, rows[-1][2][3])
        data.append(*(torch.tensor(np.array(c), dtype=torch.float32) for c in zip(*rows)))
        k += 1
    speeds, lateral = data.next_states[:, 3], data.next_states[:, 5].abs()
    print(f"random: {len(data)} transitions in {k} episodes, top speed {top:.1f} m/s, "
          f"{float((speeds > 12).float().mean()):.0%} above 12 m/s, |v_y| up to {float(lateral.max()):.2f} m/s",
          flush=True)
    return data


def drive(sim: RaceSim, planner, cost, cap: float, seed: int, data: TransitionDataset | None) -> str:
    cost.terms["path_tracking"].target_speed = cap
    planner.reset()
    sim.reset(seed=seed)
    rows, top, begin = [], 0.0, time.perf_counter()
    while True:
        state = state_of(sim)
        action = planner.plan(torch.tensor(state, dtype=torch.float32)).action.numpy()
        step = sim.step(action)
        rows.append((state, action, state_of(sim)))
        top = max(top, sim.twist[0])
        if step.done:
            break
    if data is not None:
        data.append(*(torch.tensor(np.array(c), dtype=torch.float32) for c in zip(*rows)))
    laps = [round(t, 2) for t in sim.lap_counter.lap_times]
    return (f"cap {cap:g} seed {seed}: {len(rows)} steps, laps {laps}" + (" EXIT" if step.crashed else "")
            + f", top {top:.1f} m/s, max |v_y| {max(abs(r[2][5]) for r in rows):.2f} m/s "
            f"({time.perf_counter() - begin:.0f} s)")


def main(args: dict) -> None:
    torch.set_num_threads(1)
    seed = int(args.get("seed", 0))
    torch.manual_seed(seed)
    kind = args.get("model", "semiparametric")
    trainer = launch_parameters(CONFIG, "car", "race", "trainer")
    controller = launch_parameters(CONFIG, "car", "race", "controller")
    config = model_section_at(trainer[kind], 0.05, kind)
    sim = RaceSim(model="std")
    speeds = tuple(float(v) for v in args.get("start_speeds", "5,5").split(","))
    data = random_episodes(sim, int(args.get("random", 3000)), speeds, seed)
    if args.get("only_random"):
        return
    cost = build_cost(controller["cost"], 7, 2)
    cost.set_context("path", torch.tensor(sim.path, dtype=torch.float32))
    mppi = {**controller["mppi"], "compile": False, "seed": seed}

    def fit():
        begin = time.perf_counter()
        train, val = validation_split(data, 0.2, seed)  # early stopping and elites, as the trainer's
        model = fit_model(config, train, val, training=trainer.get("training"), physics=get_robot("car"),
                          angle_dims=[2]).model.eval()
        print(f"  fitted {kind} on {len(data)} transitions ({time.perf_counter() - begin:.0f} s)", flush=True)
        return build_planner("mppi", model, cost, mppi)

    planner = fit()
    for k in range(int(args.get("learning", 6))):
        print(f"learning {k}: " + drive(sim, planner, cost, float(args.get("learn_cap", 14)), seed + 100 + k, data),
              flush=True)
        planner = fit()
    for cap in (float(c) for c in args.get("eval_caps", "13,14").split(",")):
        print("evaluated: " + drive(sim, planner, cost, cap, 1000, None), flush=True)


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
