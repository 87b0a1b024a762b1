"""Where the kinematic prior leaves the race track, ROS-free: MPPI on the nominal bicycle in the race simulator.

Diagnostic, not a test (issue 10 §2). For each simulated car (``sims``: commonroad's single-track model
``st``, linear tyres, or its drift model ``std``, Pacejka tyres that saturate at the road's grip) and each
speed cap (``caps``: the race cost's ``path_tracking.target_speed``), one episode of 3 laps under
config/car_race.yaml's cost and MPPI (compiled, once: the cap is an input of the compiled step), planning on the
trainer's nominal prior (config/car_race.yaml's ``parametric`` settings, not identified on data). The state
is the simulator's own (its true steering angle, the twist's v_y and yaw rate), not the estimator's.
Prints per run the laps, their times, the exit (step, speed, where) and the top speed, and the simulator's
time per step.

    .venv/bin/python scripts/race_grip_offline.py sims=st,std caps=12,14,16,20,25 seed=0
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.models import build_model
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots import get_robot
from mbrl_ros_hardware.car.race import RaceSim, arc_length

CONFIG = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "config" / "car_race.yaml"))


def state_of(sim: RaceSim) -> np.ndarray:
    x, y, yaw, _v, steer = sim.state
    v, v_y, yaw_rate = sim.twist
    return np.array([x, y, yaw, v, steer, v_y, yaw_rate])


def main(args: dict) -> None:
    torch.set_num_threads(1)
    params = CONFIG["/**"]["ros__parameters"]
    options = dict(CONFIG["/**/trainer"]["ros__parameters"]["parametric"])
    model = build_model({**options, "dt": params["dt"]}, physics=get_robot("car")).eval()
    cost = build_cost(params["cost"], 7, 2)
    mppi = dict(CONFIG["/**/controller"]["ros__parameters"]["mppi"])
    planner = build_planner("mppi", model, cost, {**mppi, "seed": int(args.get("seed", 0))})
    term = cost.terms["path_tracking"]
    for sim_model in args.get("sims", "st,std").split(","):
        sim = RaceSim(model=sim_model, episode_steps=int(args.get("steps", 1200)))
        cost.set_context("path", torch.tensor(sim.path, dtype=torch.float32))
        for cap in (float(c) for c in args.get("caps", "12,14,16,20,25").split(",")):
            term.target_speed = cap
            planner.reset()
            sim.reset(seed=int(args.get("seed", 0)), speed=5.0)
            top, sim_s, begin = 0.0, 0.0, time.perf_counter()
            while True:
                state = state_of(sim)
                action = planner.plan(torch.tensor(state, dtype=torch.float32)).action.numpy()
                t = time.perf_counter()
                step = sim.step(action)
                sim_s += time.perf_counter() - t
                top = max(top, sim.twist[0])
                if step.done:
                    break
            steps = sim._steps
            laps = sim.lap_counter.lap_times
            exit_at = (f"exit at step {steps} at {sim.twist[0]:.1f} m/s, {arc_length(step.state[:2], sim.path):.0f} m "
                       f"along the lap" if step.crashed else "no exit")
            print(f"sim {sim_model} cap {cap:g}: laps {len(laps)} {[round(t, 2) for t in laps]}, {exit_at}, top "
                  f"speed {top:.1f} m/s; sim {1e3 * sim_s / steps:.2f} ms/step, wall {time.perf_counter() - begin:.0f} s",
                  flush=True)


if __name__ == "__main__":
    main(dict(a.split("=", 1) for a in sys.argv[1:]))
