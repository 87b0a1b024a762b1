"""Where HandReach fails, ROS-free: random data -> ensemble -> MPPI closed loop on the simulated hand.

Diagnostic, not a test (issue 10 section 1, "make it reach"). Collects ``random`` transitions with the
controller's exploration policy, trains the trainer's ensemble, then plans with MPPI through it on
``evals`` episodes (seeds 100..) and prints, per episode, the distance every 10 steps, each fingertip's
final distance, and the model's own view (the plan's predicted end, the one-step prediction), so a
planner failure (the model knows a better plan) and a model failure (it does not) can be told apart.

    .venv/bin/python scripts/hand_reach_offline.py random=1000 horizon=10 samples=300 temp=0.05 sigma=0.3
"""

import os
import sys
import time

import numpy as np
import torch

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros.core.costs import TERM_KINDS, build_cost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.models import build_model
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.training import train_ensemble
from mbrl_ros.robots.hand.costs import FingertipTargetTerm
from mbrl_ros_hardware.hand.shadow_hand import HandSim


def state_of(st) -> np.ndarray:
    return np.concatenate([st.positions, st.velocities, st.fingertips.ravel()])


def episodes(sim: HandSim, policy: ExplorationPolicy, seeds) -> TransitionDataset:
    data = TransitionDataset(63, 20)
    for seed in seeds:
        st, rows = sim.reset(seed=seed), []
        policy.reset()
        for _ in range(sim.max_episode_steps):
            action = policy()
            nxt = sim.step(action).state
            rows.append((state_of(st), action, state_of(nxt)))
            st = nxt
        data.append(*(torch.tensor(np.array(column), dtype=torch.float32) for column in zip(*rows)))
    return data


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    a = dict(arg.split("=", 1) for arg in sys.argv[1:])
    sim = HandSim("reach")
    policy = ExplorationPolicy(-np.ones(20), np.ones(20), float(a.get("smooth", 0.8)), 0)
    train = episodes(sim, policy, range(1000, 1000 + int(a.get("random", 1000)) // sim.max_episode_steps))
    val = episodes(sim, policy, range(5000, 5003))
    members, hidden = int(a.get("members", 5)), int(a.get("hidden", 200))
    model = build_model({"type": "ensemble", "state_dim": 63, "action_dim": 20, "ensemble_size": members,
                         "hidden_sizes": [hidden, hidden], "num_elites": members,
                         "propagation": a.get("prop", "ts1")})
    started = time.time()
    train_ensemble(model, train, val, epochs=int(a.get("epochs", 100)), patience=int(a.get("patience", 10)))
    print(f"trained on {len(train)} transitions in {time.time() - started:.0f} s", flush=True)
    model.eval()
    cost = build_cost({"fingertips": {"type": "fingertip_target", "indices": list(range(48, 63)),
                                      "form": a.get("form", "norm"), "stage_weight": 1.0,
                                      "terminal_weight": float(a.get("terminal", 5.0))},
                       "effort": {"weight": float(a.get("effort", 0.001))}}, 63, 20,
                      kinds={**TERM_KINDS, "fingertip_target": FingertipTargetTerm})
    planner = build_planner("mppi", model, cost, {
        "horizon": int(a.get("horizon", 10)), "num_samples": int(a.get("samples", 300)),
        "temperature": float(a.get("temp", 0.05)), "sigma": [float(a.get("sigma", 0.3))] * 20,
        "noise_smoothing": "beta", "beta": float(a.get("beta", 0.5)), "compile": False})
    finals, plan_s = [], []
    for episode in range(int(a.get("evals", 5))):
        st = sim.reset(seed=100 + episode)
        planner.reset()
        cost.set_context("fingertip_target", torch.tensor(sim.goal.ravel(), dtype=torch.float32))
        for t in range(sim.max_episode_steps):
            x = torch.tensor(state_of(st), dtype=torch.float32)
            tick = time.perf_counter()
            plan = planner.plan(x)
            plan_s.append(time.perf_counter() - tick)
            with torch.no_grad():
                predicted = model(x[None], plan.action[None])[0]
            st = sim.step(plan.action.numpy()).state
            if t % 10 == 9:
                print(f"  t={t + 1} {100 * sim.goal_distance(st):.2f} cm", end="", flush=True)
        goal = sim.goal.ravel()
        finals.append(sim.goal_distance(st))
        print(f"\nepisode {episode}: {100 * finals[-1]:.2f} cm; per tip (ff mf rf lf th) "
              f"{np.round(100 * np.linalg.norm(st.fingertips - sim.goal, axis=1), 2)} cm; the model's view: plan's "
              f"end {100 * np.linalg.norm(plan.predicted_states[-1][48:].numpy() - goal):.2f} cm, last step "
              f"{100 * np.linalg.norm(predicted[48:].numpy() - goal):.2f} cm", flush=True)
    print(f"mean final distance {100 * np.mean(finals):.2f} cm, success {np.mean(np.array(finals) < 0.01):.0%}, "
          f"planning p50 {1000 * np.median(plan_s):.0f} ms")


if __name__ == "__main__":
    main()
