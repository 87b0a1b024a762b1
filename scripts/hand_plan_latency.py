"""Issue 10 §1: the hand's planning time side by side in one process, same seeds, interleaved per episode: MPPI
alone, the reach proposal rolled out beside the shifted plan (the path before), and the proposal scored as one
noise-free sample in the compiled step (open_loop, the path now). Compiled (the first episode, seed 999, compiles
and is not counted), prior identified on 1,000 random transitions; prints p50/p90/p99 and success per variant and
the 1-min load average per seed.

    .venv/bin/python scripts/hand_plan_latency.py n=10 [first=1000] [variants=alone,rollout,in_step] [json=F]
"""
import copy
import json
import os
import sys
import time

import numpy as np
import torch

from hand_reach_misses import REACH, HAND, random_data
from hand_reach_offline import state_of
from mbrl_ros.core.costs import TERM_KINDS, build_cost
from mbrl_ros.core.fitting import fit_model
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots import get_robot
from mbrl_ros_hardware.hand.shadow_hand import HandSim
torch.set_num_threads(1)
a = dict(arg.split("=", 1) for arg in sys.argv[1:])
sim = HandSim("reach")
model = fit_model({**HAND["/**/trainer"]["ros__parameters"]["parametric"], "dt": sim.dt}, random_data(sim, 1000),
                  physics=get_robot("hand")).model.eval()
variants = {}
for name in a.get("variants", "alone,rollout,in_step").split(","):
    cost = build_cost(copy.deepcopy(REACH["cost"]), 63, 20, kinds={**TERM_KINDS, **get_robot("hand").cost_terms()})
    planner = build_planner("mppi", model, cost, {**REACH["mppi"], "compile": True, "action_low": [-1.0] * 20,
                                                  "action_high": [1.0] * 20})
    if name != "alone":
        proposal = get_robot("hand").planner_proposal(REACH["proposal"], "proposal")
        if name == "rollout":
            proposal.open_loop = False  # the path before: its own float64 rollout beside the shifted plan
        planner.set_prior(proposal)
    variants[name] = (planner, cost, [], [])
def episode(seed, planner, cost, times, finals, record=True):
    st = sim.reset(seed=seed); goal = sim.goal.ravel().copy()
    x = torch.tensor(state_of(st), dtype=torch.float32)
    planner.reset(); cost.set_context("fingertip_target", torch.tensor(goal, dtype=torch.float32))
    for _ in range(50):
        t = time.perf_counter(); plan = planner.plan(x); dt = time.perf_counter() - t
        if record: times.append(dt)
        st = sim.step(plan.action.numpy().astype(np.float64)).state
        x = torch.tensor(state_of(st), dtype=torch.float32)
    if record: finals.append(float(np.linalg.norm(st.fingertips.ravel() - goal)))
t0 = time.time()
for name, v in variants.items():  # compile / warm up, not recorded
    episode(999, *v, record=False); print(name, "warm", round(time.time() - t0), "s", flush=True)
load = [os.getloadavg()[0]]
seeds = range(int(a.get("first", 1000)), int(a.get("first", 1000)) + int(a.get("n", 10)))
for seed in seeds:
    for name, v in variants.items():
        episode(seed, *v)
    load.append(os.getloadavg()[0])
out = {}
for name, (_, _, times, finals) in variants.items():
    ms = 1000 * np.array(times)
    out[name] = {"plans": len(ms), "p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
                 "p99_ms": float(np.percentile(ms, 99)), "success": int((np.array(finals) < 0.01).sum()),
                 "episodes": len(finals), "mean_final_cm": 100 * float(np.mean(finals))}
    print(name, {k: round(v, 2) if isinstance(v, float) else v for k, v in out[name].items()})
out["load_1min"] = load
print("load (1-min, before and after each seed):", [round(l, 1) for l in load])
json.dump(out, open(a.get("json", "hand_plan_latency.json"), "w"), indent=1)
