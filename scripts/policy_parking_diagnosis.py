"""Why the learned parking policy does not park (issue 12): policy, MPPI and standing still side by side.

ROS-free, one process. Everything the stack does for ``mbrl-ros demo car --controller policy``, in process:

- logged data: the controller's exploration (``ExplorationPolicy``, the controller's smoothing and seed)
  driving highway-env's ``parking-v0`` (``ParkingSim``, 100-step episodes as sim_car runs them) for the
  config's ``random_transitions``, each episode's goal the simulator's goal (what goal_pose logs);
- the model: the kinematic bicycle of ``trainer.parametric`` with highway-env's true parameters (what
  identification finds: the deployed model's errors are ~1e-6 m);
- the policy: one trainer round (``PolicyLearner.round``) with the trainer's ``policy`` section and the
  controller's cost; or ``--policy FILE`` (a ``policy_v<N>.pt`` from a demo run);
- the controllers, each a ``RecedingHorizonController`` built from the controller's parameters as the
  controller node builds it: ``policy`` (the actor alone), ``mppi`` at ``--samples`` samples, and
  standing still (the stop: brake and hold).

For the evaluation seeds (the demo's evaluated episodes: seed = episode number), each controller drives
``--steps`` steps in closed loop ON THE MODEL from the simulator's start towards its goal, and (``--sim``)
on the simulator itself. Printed per controller: mean episode cost (the controller's cost, summed per step),
mean final and closest distance to the spot, the controller's step time p50 / p99 (one torch thread), and parked (highway-env's success: its reward > -0.12 at some
step, on the model computed from the state as highway-env computes it).

    .venv/bin/python scripts/policy_parking_diagnosis.py [--iterations N] [--sim] [--policy FILE]

What it found (seeds 45-64, 100 steps, load average 5-7 on 2 cores; MPPI at 100 samples: 17/20 parked,
episode cost 105, standing still 274): the demo's deployed policy (--policy its policy_v1.pt) costs 280
on the model, WORSE than standing still, and 0/20 park on the model as in the simulator (same numbers
with --sim: the model is exact, so nothing between trainer and controller differs). The learning was the
problem: SHAC's rollouts started at any logged state of random exploration; a third of them hit a wall
(the walls' cost gradient ~150x the goal's) and the actor learned to brake. Trained without the walls
term (--train-without walls, an experiment) it parks 18/20; with its episodes starting where the
logged episodes start (policy.shac.starts: episode_starts, now the default) 9/20 at 1,000 iterations
and 15/20 at 2,000 (cost 99, below MPPI's 105), against 0/20 (205) and 1/20 (177 at 3,000) before.
The trainer's episodes are also cut at the data_logger's bag splits (--split-every 100): with those
pieces' mid-drive first states among the starts it parked 1/20 (192); taking only the pieces that begin
an episode (a piece under the same logged goal as the one before continues it) 16/20 (92).

Stop 20, the policy as MPPI's prior (--prior 0.5, 100 samples, seeds 178-197 as the stack's demo evaluated
them, on the model, load 3-4.5): stop 19's stack run (MPPI 100 + prior 0.5: 12/20) is reproduced here with its
own policy (--policy <run>/checkpoints/policy_v1.pt): policy alone 5/20, MPPI 100 19/20, MPPI 50 19/20, with the
prior 13/20 when every sample went around the policy's rollout once it beat the shifted plan (--prior-mode
all-on-policy), 18/20 never replacing the warm start (keep), 19/20 as shipped now (the two centres swap roles).
A policy trained here (default seed; 2,000 iterations, 216 s) parks 19/20 alone on those seeds (15/20 on 45-64),
and with it as prior: 20/20 all-on-policy (cost 82.5), 20/20 keep (84.2), 20/20 shipped (85.1). The same
training with --set shac.seed=1 parks 11/20 alone: one round's policy is a lottery over seeds.

Stop 21, best of N (policy.candidates; --set candidates=6 --each-candidate --only policy --first-seed 1000
--episodes 50: the demo's evaluation seeds, on the model, load 5-10, 1,677 s for the six): the candidates of seeds
0-5 park 43, 34, 23, 44, 48, 41 of 50 alone (one seed: 38.8/50 on average), their held-out starts costs 14.22,
16.57, 16.82, 14.68, 14.20, 14.33 (the cheapest, seed 4, parks most; the two dearest, least). Keeping the
cheapest of each subset of the six: of 2, 43.8/50 on average; of 3, 45.25 (worst 41); of 4, 46.2. As shipped
(candidates: 3, seeds 0-2) the kept one is seed 0's, 43/50 against those three's 33.3 on average.

Stop 22, a poor policy as prior (seeds 1000-1049, load 2-3; --iterations 400: it parks 6/50 alone, episode cost 191):
MPPI 100 47/50, with it as prior 0.5 41/50, the same never replacing the warm start 42/50, MPPI 50 alone 44/50.
--check-prior 16 runs the trainer's new check (decide_prior) on a policy: this one's planner cost is within noise of
no prior's, its cost alone 1.28-1.48 times MPPI 100's (rejected); a policy that parks 48/50 0.83-0.92 times (accepted).

Stop 24, why MPPI 100 + prior misses (seeds 1000-1049, on the model, load 4-12): a round trained here on seed 0's
exploration (43 episodes; candidates park 13, 39 and 36 of 50 alone, the kept one 36): MPPI 100 alone 47/50, with
it as prior at 0.5 45/50 (0.2: 45, 0.01: 47, the adaptive share 47). Every miss with the prior ends 2-5 m
from the spot with its heading (--per-seed; --trace 1007,1023: each step in the goal's frame): beside it,
sideways, a local minimum neither the policy nor MPPI's 100 samples leave (a sideways shift needs a back-and-forth
manoeuvre). MPPI alone's misses 1045 and 1049 are nose-out instead (in the spot, heading flipped: in the
stack MPPI 500 misses 1030, 1045 and 1049 so); with the prior 1030 and 1049 park. With the prior, MPPI
reaches the sideways basin where alone it does not:
on 1007 the policy's samples (not its warm start: that first wins at step 22, already 3.6 m beside the spot) pull
the approach wide (8.7 m sideways) and it ends 3.8 m beside the spot, where MPPI alone drives in straight and parks
at step 29. The prior's samples win MPPI's weights there because they get closer sooner: the episode cost is lower
with the prior (96.0 against 101.6) while fewer park. The trainer's check on its own held-out starts (crossed, 32)
rejects this policy (MPPI's episode cost 80.7 with it against 87.2 without, but the policy alone 94.7 against 87.2).
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch
import yaml

from mbrl_ros.core.control import ExplorationPolicy, RecedingHorizonController
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.policies.config import PolicyConfig
from mbrl_ros.core.policies.learning import PolicyData, PolicyLearner
from mbrl_ros.io.config import launch_parameters
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.car.bicycle import BicycleParams
from mbrl_ros.robots.car.costs import parked as car_parked
from mbrl_ros.ros_env import REPO_ROOT

def parked(state: np.ndarray, goal: np.ndarray) -> bool:
    """highway-env's is_success (the car's ``parked``: its reward, weighted L1 of the scaled observations to the
    power 0.5, > -0.12)."""
    return bool(car_parked(torch.as_tensor(state, dtype=torch.float64), torch.as_tensor(goal, dtype=torch.float64)))


def explore(sim, controller_params: dict, transitions: int, split_every: int = 0, first_seed: int = 0
            ) -> tuple[TransitionDataset, dict[int, list[float]]]:
    """The demo's random transitions: the controller's exploration noise on the simulator, one goal per episode,
    episode k from ``reset(seed=first_seed + k)`` (sim_car's episodes under the demo's ``--seed``).
    ``split_every``: also cut an episode every that many steps of the whole run (0: never), as the data_logger's
    bags (split_duration) cut the trainer's episodes."""
    noise = ExplorationPolicy(np.array(controller_params["action_low"]), np.array(controller_params["action_high"]),
                              controller_params.get("exploration_smoothing", 0.8), controller_params.get("seed", 0))
    data, goals, episode, resets = TransitionDataset(5, 2), {}, 0, 0
    while len(data) < transitions:
        state, states, actions = sim.reset(seed=first_seed + resets), [], []
        goal = sim.goal.tolist()
        resets += 1
        noise.reset()
        states.append(state)
        while True:
            action = noise()
            step = sim.step(action)
            actions.append(action)
            states.append(step.state)
            if step.done:
                break
        states, actions = np.array(states), np.array(actions)
        cuts = [0] + [k for k in range(1, len(actions)) if split_every and (len(data) + k) % split_every == 0]
        for first, end in zip(cuts, cuts[1:] + [len(actions)]):
            goals[episode] = goal
            data.append_trajectory(torch.tensor(states[first:end + 1], dtype=torch.float32),
                                   torch.tensor(actions[first:end], dtype=torch.float32), episode)
            episode += 1
    return data, goals


def controller(params: dict, name: str, model, policy=None, samples: int | None = None, prior: float = 0.0):
    # The controller node's defaults for what the config does not set (mbrl_ros/nodes/controller.py PARAMS).
    params = {"max_rate": [0.0], "safe_action": [0.0, 0.0], "exploration_smoothing": 0.8, "seed": 0,
              "exploration_steps": 0, "needs_goal": True, **copy.deepcopy(params), "explore_without_model": False}
    params["planner"] = "mppi" if name == "mppi" else "policy"
    if samples:
        params["mppi"]["num_samples"] = samples
    if prior:
        params["mppi"]["policy_prior_fraction"] = prior
    robot = get_robot("car")
    c = RecedingHorizonController.from_config(params, term_kinds=robot.term_kinds(), source=name,
                                              stop=robot.stop(params, name))
    c.set_model(model)
    if policy is not None:
        c.set_policy(policy)
    return c


def goal_frame(state: np.ndarray, goal: np.ndarray) -> tuple[float, float]:
    """The car's offset from the spot along the spot's heading and beside it (m)."""
    dx, dy = state[0] - goal[0], state[1] - goal[1]
    return (float(dx * np.cos(goal[2]) + dy * np.sin(goal[2])), float(-dx * np.sin(goal[2]) + dy * np.cos(goal[2])))


def episode(c: RecedingHorizonController, step_fn, start: np.ndarray, goal: np.ndarray, steps: int,
            cost, still: bool, trace: bool = False) -> dict:
    c.set_context("goal", goal.tolist(), goal=True)
    cost.set_context("goal", torch.as_tensor(goal, dtype=torch.float32))
    state, total, success, closest = start.copy(), 0.0, False, np.inf
    policy_warm = 0  # with a prior: plans warm-started from the policy's rollout
    step_ms = []  # the controller's step (plan or policy) per cycle
    path = []  # with trace: "step:along,beside" per step, P where the plan was warm-started from the policy
    for t in range(steps):
        if still:
            action = c.stop_command(state)
        else:
            begun = time.perf_counter()
            out = c.step(state, deadline_s=np.inf)
            step_ms.append((time.perf_counter() - begun) * 1e3)
            action = out.action
            info = out.plan.info if out.plan is not None else {}
            if info.get("warm_start") == "policy":
                policy_warm += 1
        if trace:
            along, beside = goal_frame(state, goal)
            path.append(f"{t}:{along:+.1f},{beside:+.1f}" + ("P" if not still and info.get("warm_start") == "policy"
                                                             else ""))
        state, done = step_fn(state, action)
        with torch.no_grad():
            total += float(cost(torch.as_tensor(state, dtype=torch.float32)[None, None],
                                torch.as_tensor(action, dtype=torch.float32)[None, None])[0])
        closest = min(closest, float(np.hypot(*(state[:2] - goal[:2]))))
        success = success or parked(state, goal)
        if done:
            break
    return {"cost": total, "final": float(np.hypot(*(state[:2] - goal[:2]))), "closest": closest,
            "parked": success, "policy_warm": policy_warm, "step_ms": step_ms, "path": " ".join(path)}


def latency(step_ms: list[float]) -> str:
    """The controller's step time, p50 / p99, or nothing (standing still plans nothing)."""
    if not step_ms:
        return ""
    return f"step p50 {np.percentile(step_ms, 50):.2f} / p99 {np.percentile(step_ms, 99):.2f} ms "


def check_prior(args, ctrl: dict, model, cost, actor, pairs) -> None:
    """The trainer's check of a policy as MPPI's prior (``decide_prior``), from the first ``--check-prior`` evaluation
    starts with their goals as the held-out starts, ``--check-steps`` steps, MPPI at ``--samples`` with ``--prior``."""
    from mbrl_ros.core.planners import build_planner
    from mbrl_ros.core.policies.rollouts import TaskCost
    from mbrl_ros.core.policies.validation import HeldOutStates, decide_prior

    chosen = pairs[:args.check_prior]
    held_out = HeldOutStates("starts", torch.tensor(np.array([p[1] for p in chosen]), dtype=torch.float32),
                             torch.tensor(np.array([p[2] for p in chosen]), dtype=torch.float32))
    settings = {**ctrl["mppi"], "num_samples": args.samples, "policy_prior_fraction": args.prior or 0.5,
                "action_low": ctrl["action_low"], "action_high": ctrl["action_high"], "compile": False}
    started = time.perf_counter()
    decision = decide_prior(actor.eval(), None, lambda m: build_planner("mppi", m, copy.deepcopy(cost), settings),
                            model, TaskCost(cost, "goal"), held_out, args.check_steps, f"mppi{args.samples}",
                            success=get_robot("car").task_success("parked", "--check-prior"))
    print(f"{'accepted' if decision.accept else 'rejected'}: {decision.reason} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=None, help="SHAC iterations (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override the trainer's policy section, e.g. shac.horizon=32 (YAML value)")
    parser.add_argument("--policy", default=None, help="a policy_v<N>.pt to evaluate instead of training one")
    parser.add_argument("--samples", type=int, default=100, help="MPPI samples")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=45, help="the demo's first evaluated episode")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (sim_car's parking: 100)")
    parser.add_argument("--sim", action="store_true", help="also drive the simulator itself")
    parser.add_argument("--skip-mppi", action="store_true")
    parser.add_argument("--prior", type=float, default=0.0,
                        help="also MPPI at --samples with the policy as prior (this policy_prior_fraction)")
    parser.add_argument("--prior-mode", choices=["shipped", "all-on-policy", "keep"], default="shipped",
                        help="experiment: when the policy's rollout beats the shifted plan, all-on-policy draws the "
                        "prior's share around the policy too (before stop 20), keep never replaces the warm start")
    parser.add_argument("--mppi", action="append", default=[], metavar="KEY=VALUE",
                        help="override the controller's mppi section, e.g. policy_prior_adaptation=0.1 (YAML value)")
    parser.add_argument("--check-prior", type=int, default=0, metavar="STARTS",
                        help="instead of driving: the trainer's check of the policy as MPPI's prior (decide_prior) "
                        "from the first STARTS evaluation starts (MPPI at --samples, share --prior or 0.5)")
    parser.add_argument("--check-steps", type=int, default=50, help="steps per start for --check-prior")
    parser.add_argument("--seed", type=int, default=0,
                        help="the demo's --seed: exploration's seed and the first logged episode's (default 0)")
    parser.add_argument("--random-transitions", type=int, default=0,
                        help="random exploration to train on (default: the config's random_transitions)")
    parser.add_argument("--per-seed", action="store_true", help="print each episode's result")
    parser.add_argument("--trace", default="", metavar="SEEDS",
                        help="comma-separated seeds: also print each step of their episodes in the goal's frame "
                        "(along and beside the spot, m; P: the plan was warm-started from the policy)")
    parser.add_argument("--save-policy", default=None, help="write the trained policy here (for --policy)")
    parser.add_argument("--each-candidate", action="store_true",
                        help="with --set candidates=N: also drive each candidate alone (policy: the one kept)")
    parser.add_argument("--only", default=None, help="comma-separated controllers to run (policy,still,mppi,prior)")
    parser.add_argument("--split-every", type=int, default=0,
                        help="cut the logged episodes every N steps as the data_logger's bags do (sim_car: 100)")
    parser.add_argument("--train-without", action="append", default=[], metavar="TERM",
                        help="leave this cost term out of the policy's training (an experiment; scored with all)")
    parser.add_argument("--train-cost", action="append", default=[], metavar="TERM.KEY=VALUE",
                        help="change a cost term's setting for the policy's training only (an experiment)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.prior_mode != "shipped":
        from mbrl_ros.core.planners.base import Planner

        shipped = Planner.warm_start_from_prior

        def other(self, state, warm_start):
            warm, centre, which = shipped(self, state, warm_start)
            if which != "policy":
                return warm, centre, which
            return (warm, warm, which) if args.prior_mode == "all-on-policy" else (centre, warm, "shifted")
        Planner.warm_start_from_prior = other
    from mbrl_ros_hardware.car.parking import ParkingSim

    config = REPO_ROOT / "config"
    ctrl = launch_parameters(config, "car", "parking", "controller")
    ctrl["seed"] = args.seed
    for item in args.mppi:
        key, value = item.split("=", 1)
        ctrl["mppi"][key] = yaml.safe_load(value)
    trainer = launch_parameters(config, "car", "parking", "trainer")
    robot = get_robot("car")
    model = robot.build_model({**trainer["parametric"], "params": BicycleParams().as_dict()},
                              where="trainer.parametric")
    model.eval()
    cost = robot.build_cost(ctrl["cost"], 5, 2, source="controller.cost")
    sim = ParkingSim(max_episode_steps=args.steps)
    print(f"load average {os.getloadavg()}", flush=True)

    candidates = {}  # name -> actor: each candidate of the round (--each-candidate)
    if args.policy:
        from mbrl_ros.io.policy_checkpoint import load
        actor = load(args.policy)[0]
        print(f"policy from {args.policy}")
    else:
        started = time.perf_counter()
        data, goals = explore(sim, ctrl, args.random_transitions or int(ctrl["random_transitions"]), args.split_every,
                              args.seed)
        section = copy.deepcopy(trainer["policy"])
        flat = section["actor"]["relative_dims"]
        section["actor"]["relative_dims"] = [flat[i:i + 2] for i in range(0, len(flat), 2)]
        if args.iterations:
            section["shac"]["iterations"] = args.iterations
        for item in args.set:
            key, value = item.split("=", 1)
            *path, last = key.split(".")
            target = section
            for part in path:
                target = target.setdefault(part, {})
            target[last] = yaml.safe_load(value)
        policy_config = PolicyConfig.from_dict(section)
        policy_data = PolicyData.from_dataset(data, trainer.get("gate_fraction", 0.2), trainer.get("split_seed", 0),
                                              goals)
        cost_section = {k: dict(v) for k, v in ctrl["cost"].items() if k not in args.train_without}
        for item in args.train_cost:
            key, value = item.split("=", 1)
            term, setting = key.split(".", 1)
            cost_section[term][setting] = yaml.safe_load(value)
        train_cost = robot.build_cost(cost_section, 5, 2, source="controller.cost")
        learner = PolicyLearner(policy_config, ctrl["action_low"], ctrl["action_high"])
        round_ = learner.round(model, train_cost, policy_data)
        actor = round_.actor
        selection = policy_data.held_out[0].name
        for score in round_.candidates:
            print(f"candidate {score.index} (seed {score.seed}): held-out costs "
                  + ", ".join(f"{k} {v:.2f}" for k, v in score.cost.items())
                  + (" <- kept" if score.index == round_.chosen else ""), flush=True)
        if args.each_candidate:
            candidates = {f"cand{c.index}": copy.deepcopy(learner.lineages[c.index].actor).eval()
                          for c in round_.candidates}
        if args.save_policy:
            from mbrl_ros.io.policy_checkpoint import save
            save(args.save_policy, actor)
        print(f"trained on {len(data)} transitions in {len(data.episodes())} episodes, "
              f"{round_.history.iterations} SHAC iterations in {time.perf_counter() - started:.1f} s: "
              f"{round_.decision.reason}", flush=True)

    def on_model(state, action):
        with torch.no_grad():
            nxt = model(torch.as_tensor(state, dtype=torch.float32)[None],
                        torch.as_tensor(action, dtype=torch.float32)[None])[0]
        return nxt.double().numpy(), False

    def on_sim(state, action):
        step = sim.step(action)
        return step.state, step.done

    pairs = []
    for seed in range(args.first_seed, args.first_seed + args.episodes):
        start = sim.reset(seed=seed)
        pairs.append((seed, start.copy(), sim.goal.copy()))
    if args.check_prior:
        check_prior(args, ctrl, model, cost, actor, pairs)
        return
    names = ["policy", "still"] + ([] if args.skip_mppi else ["mppi"]) + (["prior"] if args.prior else [])
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    names += list(candidates)
    worlds = [("model", on_model)] + ([("sim", on_sim)] if args.sim else [])
    for world, step_fn in worlds:
        for name in names:
            started = time.perf_counter()
            own = candidates.get(name)
            c = controller(ctrl, "mppi" if name == "prior" else "policy" if own is not None else name, model,
                           own if own is not None else actor if name in ("policy", "prior") else None,
                           args.samples, args.prior if name == "prior" else 0.0)
            rows = []
            for seed, start, goal in pairs:
                if world == "sim":
                    start = sim.reset(seed=seed)
                rows.append(episode(c, step_fn, start, goal, args.steps, cost, name == "still",
                                    trace=str(seed) in args.trace.split(",")))
            if args.per_seed:
                for (seed, _, _), r in zip(pairs, rows):
                    print(f"  {name} seed {seed}: parked {r['parked']}, final {r['final']:.2f} m, cost {r['cost']:.1f}, "
                          f"plans warm-started from the policy {r['policy_warm']}")
            for (seed, _, _), r in zip(pairs, rows):
                if r["path"]:
                    print(f"  {name} seed {seed} trace: {r['path']}")
            label = {"mppi": f"mppi{args.samples}", "prior": f"mppi{args.samples}+prior{args.prior:g}"}.get(name, name)
            print(f"{world:5s} {label:9s}: parked {sum(r['parked'] for r in rows):2d}/{len(rows)}, "
                  f"mean episode cost {np.mean([r['cost'] for r in rows]):7.2f}, "
                  f"final distance {np.mean([r['final'] for r in rows]):5.1f} m, "
                  f"closest {np.mean([r['closest'] for r in rows]):5.1f} m "
                  + latency([ms for r in rows for ms in r["step_ms"]])
                  + f"({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
