"""Why HandReach's misses end 1.0-1.2 cm from the goal: the controller's MPPI on the identified physics prior,
on the demo's evaluation seeds (1000-1049), against the simulator and against the prior itself.

Diagnostic, not a test (issue 10 section 1). Identifies the prior (config/hand.yaml's trainer ``parametric``
section) on ``random`` transitions of the controller's exploration, builds the controller's cost and MPPI
(config/hand_reach.yaml), then runs each evaluated seed with one of two plants:

- ``plant=sim`` (default): the simulated hand (HandSim, HandReach-v3);
- ``plant=model``: the identified prior itself, from the same start, with the same goal. The planner's model is
  then exact: what it misses there is the planner's and the cost's (noise, horizon, weighting), not the model's.

Per episode it prints the final distance, the distance the last plan predicted for its end (the model's view),
and, with ``plant=sim``, the hold error: the last action held for 25 more steps in the simulator and in the
prior from the same state, the fingertips' distance between the two (the prior's steady-state error there).
A miss whose plan predicted < 1 cm but ended > 1 cm, with a hold error of about the gap, is the model's bias;
a miss that also misses with ``plant=model`` is the planner's.

    .venv/bin/python scripts/hand_reach_misses.py plant=sim first=1000 evals=50
    .venv/bin/python scripts/hand_reach_misses.py plant=model first=1000 evals=50

The controller's ``proposal`` (config/hand_reach.yaml, the held targets' solve through the prior) is MPPI's prior
as in the controller (``proposal=0``: without it; ``r_KEY=VALUE`` sets its keys).

More: ``p_KEY=VALUE`` sets any MPPI key (``p_sigma=0.05``, ``p_num_samples=600``), ``c_KEY=VALUE`` the fingertip
term (``c_terminal_weight=20``), ``bias=1`` the prior's online bias correction (``bias_gain`` its smoothing),
``compile=1`` compiles the planner (eager by default: no minutes of codegen per setting), ``json=F`` writes the
per-episode numbers. ``trace=1`` adds, per episode, each fingertip's final distance to its goal (ff, mf, rf, lf,
th), the closest thumb-finger pair's distance in the goal and at the end, the fingertip term's integral
correction, and the bodies in contact at the end (MuJoCo's contacts).
"""

import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros.core.costs import TERM_KINDS, build_cost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import fit_model
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots import get_robot
from mbrl_ros_hardware.hand.shadow_hand import HandSim

from hand_reach_offline import episodes, state_of  # scripts/ is on the path of a script run from it

CONFIG = Path(__file__).resolve().parents[1] / "config"
HAND = yaml.safe_load(open(CONFIG / "hand.yaml"))
REACH = yaml.safe_load(open(CONFIG / "hand_reach.yaml"))["/**/controller"]["ros__parameters"]
THRESHOLD = 0.01


def value(text: str):
    if "," in text:
        return [value(part) for part in text.split(",") if part]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def random_data(sim: HandSim, transitions: int) -> TransitionDataset:
    """The controller's exploration (seed 0) on episodes seeded 0, 1, ...: ``transitions`` // 50 of them."""
    policy = ExplorationPolicy(-np.ones(20), np.ones(20), 0.8, 0)
    return episodes(sim, policy, range(transitions // sim.max_episode_steps))


def trace(sim: HandSim, goal: np.ndarray, tips: np.ndarray, cost) -> dict:
    """Where a reach ended: per-fingertip errors, the thumb-finger separation asked and reached, the integral, contacts."""
    import mujoco

    env, (goal, tips) = sim.unwrapped, (np.reshape(v, (5, 3)) for v in (goal, tips))
    closest = lambda t: min(float(np.linalg.norm(t[i] - t[4])) for i in range(4))  # noqa: E731
    term = next(t for t in cost.terms.values() if hasattr(t, "integral_gain"))
    body = lambda geom: mujoco.mj_id2name(env.model, mujoco.mjtObj.mjOBJ_BODY, env.model.geom_bodyid[geom])  # noqa: E731
    contacts = sorted({f"{body(c.geom1).split(':')[-1]}-{body(c.geom2).split(':')[-1]}"
                       for c in env.data.contact[:env.data.ncon]})
    return {"per_tip_cm": [round(100 * float(e), 2) for e in np.linalg.norm(tips - goal, axis=1)],
            "goal_pair_cm": 100 * closest(goal), "final_pair_cm": 100 * closest(tips),
            "integral_cm": 100 * float(torch.linalg.vector_norm(term.aim - term.target)), "contacts": contacts}


@torch.no_grad()
def hold_error(sim: HandSim, model, action: np.ndarray, steps: int = 25) -> tuple[float, float]:
    """From the sim's current state, hold ``action`` ``steps`` steps in a copy of the sim and in the model: the
    fingertips' distance between the two, and the sim's own distance to the goal at the end."""
    import mujoco

    env = sim.unwrapped
    saved = (env.data.qpos.copy(), env.data.qvel.copy(), env.data.time, env.data.ctrl.copy(), env.data.act.copy())
    obs = env._get_obs()
    x = torch.tensor(np.concatenate([obs["observation"][:48], obs["achieved_goal"]]), dtype=torch.float32)[None]
    u = torch.tensor(action, dtype=torch.float32)[None]
    for _ in range(steps):
        st = sim.step(action).state
        x = model(x, u)
    gap = float(np.linalg.norm(x[0, 48:].numpy() - st.fingertips.ravel()))
    held = sim.goal_distance(st)
    env.data.qpos[:], env.data.qvel[:], env.data.time, env.data.ctrl[:], env.data.act[:] = saved
    mujoco.mj_forward(env.model, env.data)
    return gap, held


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    a = {k: v for k, v in (arg.split("=", 1) for arg in sys.argv[1:])}
    sim = HandSim("reach")
    started = time.time()
    data = random_data(sim, int(a.get("random", 1000)))
    trainer = HAND["/**/trainer"]["ros__parameters"]
    model = fit_model({**trainer["parametric"], "dt": sim.dt}, data, physics=get_robot("hand")).model.eval()
    print(f"prior identified on {len(data)} random transitions in {time.time() - started:.0f} s", flush=True)

    cost_config = copy.deepcopy(REACH["cost"])
    for key, text in a.items():
        if key.startswith("c_"):
            cost_config["fingertips"][key[2:]] = value(text)
    cost = build_cost(cost_config, 63, 20, kinds={**TERM_KINDS, **get_robot("hand").cost_terms()})
    planner_config = {**REACH["mppi"], "compile": a.get("compile", "0") == "1",
                      "action_low": [-1.0] * 20, "action_high": [1.0] * 20}
    for key, text in a.items():
        if key.startswith("p_"):
            planner_config[key[2:]] = value(text)
    if isinstance(planner_config.get("sigma"), (int, float)):
        planner_config["sigma"] = [planner_config["sigma"]] * 20
    planner = build_planner("mppi", model, cost, planner_config)
    if a.get("proposal", "1") != "0":  # the held targets' solve through the prior, MPPI's prior as in the controller
        section = {**REACH.get("proposal", {}), **{k[2:]: value(t) for k, t in a.items() if k.startswith("r_")}}
        planner.set_prior(get_robot("hand").planner_proposal(section, "proposal"))
    plant_is_model = a.get("plant", "sim") == "model"
    plant = copy.deepcopy(model)
    first, count = int(a.get("first", 1000)), int(a.get("evals", 50))
    rows, plan_s = [], []
    for seed in range(first, first + count):
        st = sim.reset(seed=seed)
        goal = sim.goal.ravel().copy()
        x = torch.tensor(state_of(st), dtype=torch.float32)
        planner.reset()
        cost.set_context("fingertip_target", torch.tensor(goal, dtype=torch.float32))
        for _ in range(sim.max_episode_steps):
            tick = time.perf_counter()
            plan = planner.plan(x)
            plan_s.append(time.perf_counter() - tick)
            action = plan.action.numpy().astype(np.float64)
            if plant_is_model:
                with torch.no_grad():
                    x = plant(x[None], plan.action[None])[0]
            else:
                st = sim.step(action).state
                x = torch.tensor(state_of(st), dtype=torch.float32)
        final = float(np.linalg.norm(x[48:].numpy() - goal))
        predicted = float(np.linalg.norm(plan.predicted_states[-1][48:].numpy() - goal))
        row = {"seed": seed, "final_cm": 100 * final, "plan_end_cm": 100 * predicted}
        if not plant_is_model and a.get("trace") == "1":
            row.update(trace(sim, goal, x[48:].numpy(), cost))
        if not plant_is_model:
            gap, held = hold_error(sim, model, action)
            row.update(hold_error_cm=100 * gap, held_cm=100 * held)
        rows.append(row)
        print(" ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    finals = np.array([r["final_cm"] for r in rows])
    summary = {"plant": a.get("plant", "sim"), "args": a, "success": int((finals < 100 * THRESHOLD).sum()),
               "episodes": len(rows), "mean_final_cm": float(finals.mean()),
               "plan_p50_ms": 1000 * float(np.median(plan_s)), "rows": rows}
    print(f"{summary['success']}/{len(rows)} within 1 cm, mean final {finals.mean():.2f} cm, "
          f"plan p50 {summary['plan_p50_ms']:.0f} ms ({' '.join(sys.argv[1:])})", flush=True)
    if "json" in a:
        Path(a["json"]).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
