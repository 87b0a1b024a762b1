"""``mbrl-ros bench planners``: planning-step latency, side by side with pytorch_mppi.

Every MPPI case runs the same dynamics (our model's ``forward``), the same cost
(our ``TrajectoryCost``, handed to pytorch_mppi as its terminal cost over the
whole trajectory), the same number of samples, horizon, noise and temperature
through both planners, in the same process, one after the other, under the
same grad mode (``torch.no_grad``: pytorch_mppi's ``command`` does not disable
autograd itself, and with it an ensemble would take its differentiable path and
build graphs), torch threads and dtype. Our planner runs as configured by
default (``compile`` on); pytorch_mppi as its users run it (eager), and
additionally with its own ``compile()`` for reference. Each case's JSON holds
these conditions, and Nav2's published time where it solves the same problem.

iLQR cases (``ilqr_bicycle_numpy_*``: the same problem on the numpy path, without the compiled backward pass
and rollouts; ``ilqr_bicycle_torch_*``: on the torch path, without the bicycle's numpy form; both measured in
the same run for ratios): ``_cold`` forgets the warm start before each solve; ``_warm`` solves
again from the same state, warm-started from its own last plan shifted by one
step (the plan for the state one step later, so a poor start); ``_receding``
is the receding-horizon loop a controller runs: the car moves to the plan's
next state (the model is the plant) and the next solve starts from the shifted
plan, with a fresh episode (untimed cold solve) every ``EPISODE`` solves. The
``ilqr_bicycle_H50_*`` cases also time the numpy path (``native: false``) on the same problem, solve by
solve in turns with the compiled one (``paired_*`` in the JSON): a ratio under the same load, which a
shared machine's load does not skew as it skews cases run one after the other.

Numbers, not pass/fail: the targets from the issue are printed next to the
measurements and the JSON carries them all.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import torch

from mbrl_ros.bench.timing import Timing, gemm_gflops, time_call
from mbrl_ros.core.allocator import keep_freed_memory
from mbrl_ros.core.costs import TrajectoryCost, build_cost
from mbrl_ros.core.models import EnsembleDynamics
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners import Planner, PlanResult, build_planner
from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle


@dataclass
class Case:
    name: str
    build: Callable[[], tuple[Planner, torch.Tensor]]  # -> (planner, start state)
    flops_per_step: float | None  # model FLOPs per planning step (network cases)
    baseline: bool  # also run through pytorch_mppi
    targets: str  # the issue's target, printed beside the numbers
    reference: dict | None = None  # a published time for the same problem: {"source", "median_ms", "note"}
    # The same problem on another path, (what, build), timed solve by solve in turns with ours: a ratio under
    # the same load (the JSON's paired_* fields).
    paired: tuple[str, Callable[[], tuple[Planner, torch.Tensor]]] | None = None


def reference_path(points: int = 200) -> torch.Tensor:
    """A 40 m straight then a 20 m-radius left turn, 0.3 m apart (Nav2-like global plan)."""
    s = torch.arange(points, dtype=torch.float32) * 0.3
    straight = s.clamp(max=40.0)
    arc = (s - 40.0).clamp(min=0.0) / 20.0
    x = straight + 20.0 * torch.sin(arc)
    y = 20.0 * (1.0 - torch.cos(arc))
    return torch.stack((x, y), dim=-1)


# Obstacles beside the reference path (x, y, radius), for the case with Nav2's obstacle critic.
OBSTACLES = [[12.0, 1.2, 0.4], [20.0, -1.0, 0.5], [30.0, 1.0, 0.4], [42.0, 3.5, 0.6]]


def nav2_bicycle(samples: int, horizon: int, obstacles: bool = False) -> tuple[Planner, torch.Tensor]:
    """Nav2's problem: a speed-commanded car-like robot, steps of 0.05 s, following a global path."""
    model = KinematicBicycle(BicycleParams(wheelbase=0.33, rear_axle_to_cg=0.17, speed_gain=2.0,
                                           steer_gain=0.4, lag=0.1), dt=0.05, substeps=1,
                             speed_input="velocity")
    terms = {
        "path_tracking": {"distance_weight": 5.0, "heading_weight": 1.0, "speed_weight": 0.5,
                          "target_speed": 1.5, "window_segments": 64},
        "effort": {"weight": 0.01},
    }
    if obstacles:
        terms["obstacles"] = {"margin": 0.5, "robot_radius": 0.2, "collision_cost": 1000.0, "circles": OBSTACLES}
    cost = build_cost(terms, 5, 2, source=f"bench mppi_bicycle_K{samples}_H{horizon}")
    cost.set_context("path", reference_path())
    planner = build_planner("mppi", model, cost, {"num_samples": samples, "horizon": horizon, "temperature": 0.3,
                                                 "sigma": [0.2, 0.3]})
    return planner, torch.tensor([0.0, 0.2, 0.0, 1.0, 0.0])


def mppi_bicycle() -> tuple[Planner, torch.Tensor]:
    return nav2_bicycle(2000, 56)


def _goal_cost(state_dim: int, action_dim: int, source: str) -> TrajectoryCost:
    cost = build_cost({"goal_pose": {"form": "quadratic"}, "effort": {"weight": 0.01}},
                      state_dim, action_dim, source=source)
    goal = torch.zeros(state_dim)
    goal[:2] = torch.tensor([5.0, 3.0])
    cost.set_context("goal", goal)
    return cost


def mppi_ensemble() -> tuple[Planner, torch.Tensor]:
    # The notes' network: 8 -> 128 -> 128 -> 12 (state 6, action 2), 5 members, TS1.
    model = EnsembleDynamics(6, 2, ensemble_size=5, hidden_sizes=(128, 128), activation="silu",
                             propagation="ts1", seed=0).eval()
    planner = build_planner("mppi", model, _goal_cost(6, 2, "bench mppi_ensemble"),
                            {"num_samples": 1024, "horizon": 30, "temperature": 1.0, "sigma": 0.5})
    return planner, torch.zeros(6)


def mppi_hand() -> tuple[Planner, torch.Tensor]:
    # The Shadow hand (HandReach): state 63, action 20; 3 members of 250 x 250, TS1.
    model = EnsembleDynamics(63, 20, ensemble_size=3, hidden_sizes=(250, 250), activation="silu",
                             propagation="ts1", seed=0).eval()
    cost = build_cost({"joint_target": {"indices": list(range(24))}, "effort": {"weight": 0.01}},
                      63, 20, source="bench mppi_hand")
    cost.set_context("joint_target", torch.full((24,), 0.1))
    planner = build_planner("mppi", model, cost, {"num_samples": 1000, "horizon": 7, "temperature": 1.0,
                                                 "sigma": 0.3})
    return planner, torch.zeros(63)


def ilqr_bicycle(numpy: bool = True, native: bool = True) -> tuple[Planner, torch.Tensor]:
    """``numpy: false``: the torch path the numpy form replaced; ``native: false``: the numpy path the compiled
    one replaced; both for ratios in the same run."""
    model = KinematicBicycle(dt=0.1, substeps=1)
    cost = build_cost({"goal_pose": {"form": "quadratic", "terminal_weight": 50.0, "stage_weight": 0.1},
                       "effort": {"weight": 0.1}}, 5, 2, source="bench ilqr_bicycle")
    cost.set_context("goal", torch.tensor([8.0, 4.0, 0.5, 0.0, 0.0]))
    planner = build_planner("ilqr", model, cost, {"horizon": 50, "max_iterations": 50, "numpy": numpy,
                                                 "native": native})
    return planner, torch.zeros(5)


def ilqr_ensemble() -> tuple[Planner, torch.Tensor]:
    # mppi_ensemble's network (5 members of 2 x 128); iLQR plans on the mean of the members.
    model = EnsembleDynamics(6, 2, ensemble_size=5, hidden_sizes=(128, 128), activation="silu",
                             propagation="ts1", seed=0).eval()
    planner = build_planner("ilqr", model, _goal_cost(6, 2, "bench ilqr_ensemble"),
                            {"horizon": 30, "max_iterations": 50, "ensemble": "mean"})
    return planner, torch.zeros(6)


def ensemble_flops(state_dim: int, action_dim: int, hidden: tuple[int, ...], samples: int, horizon: int) -> float:
    """Multiply-adds x 2 of one planning step, each particle through one member (TS1)."""
    sizes = [state_dim + action_dim, *hidden, 2 * state_dim]
    per_particle = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return float(per_particle * samples * horizon)


NAV2_1024 = {"source": "Nav2 MPPI controller, published (desktop CPU)", "median_ms": 3.4,
             "note": "1,024 samples x 100 steps"}
NAV2_2000 = {"source": "Nav2 MPPI controller, published (desktop CPU)", "median_ms": 10.0,
             "note": "8-12 ms for 2,000 samples x 56 steps with all default critics"}

NUMPY_PATH = ("the numpy path (native: false)", lambda: ilqr_bicycle(native=False))

CASES = [
    Case("mppi_bicycle_K2000_H56", mppi_bicycle, None, True, "median <= 3 ms, p99 <= 5 ms, >= 3x pytorch_mppi"),
    Case("mppi_bicycle_K1024_H100", lambda: nav2_bicycle(1024, 100), None, True, "beside Nav2's 3.4 ms",
         NAV2_1024),
    Case("mppi_bicycle_K2000_H56_obstacles", lambda: nav2_bicycle(2000, 56, obstacles=True), None, True,
         "beside Nav2's 8-12 ms", NAV2_2000),
    Case("mppi_ensemble_K1024_H30", mppi_ensemble, ensemble_flops(6, 2, (128, 128), 1024, 30), True,
         "median <= 15 ms, p99 <= 20 ms, >= 2x pytorch_mppi"),
    Case("mppi_hand_K1000_H7", mppi_hand, ensemble_flops(63, 20, (250, 250), 1000, 7), True, "p99 <= 40 ms"),
    Case("ilqr_bicycle_H50_cold", ilqr_bicycle, None, False, "median <= 60 ms", paired=NUMPY_PATH),
    Case("ilqr_bicycle_H50_warm", ilqr_bicycle, None, False, "median <= 10 ms", paired=NUMPY_PATH),
    Case("ilqr_bicycle_H50_receding", ilqr_bicycle, None, False, "median <= 10 ms", paired=NUMPY_PATH),
    Case("ilqr_bicycle_numpy_H50_cold", lambda: ilqr_bicycle(native=False), None, False,
         "the numpy path, for ratios"),
    Case("ilqr_bicycle_numpy_H50_warm", lambda: ilqr_bicycle(native=False), None, False,
         "the numpy path, for ratios"),
    Case("ilqr_bicycle_numpy_H50_receding", lambda: ilqr_bicycle(native=False), None, False,
         "the numpy path, for ratios"),
    Case("ilqr_bicycle_torch_H50_cold", lambda: ilqr_bicycle(numpy=False), None, False, "the old path, for ratios"),
    Case("ilqr_bicycle_torch_H50_warm", lambda: ilqr_bicycle(numpy=False), None, False, "the old path, for ratios"),
    Case("ilqr_bicycle_torch_H50_receding", lambda: ilqr_bicycle(numpy=False), None, False,
         "the old path, for ratios"),
    Case("ilqr_ensemble_H30", ilqr_ensemble, None, False, "warm median <= 40 ms"),
    Case("ilqr_ensemble_H30_receding", ilqr_ensemble, None, False, "median <= 40 ms"),
]
EPISODE = 25  # receding-horizon solves per episode


def pytorch_mppi_baseline(planner: Planner, compiled: bool):
    """The same problem through pytorch_mppi's MPPI: our model as dynamics, our cost as its terminal cost."""
    from pytorch_mppi import MPPI

    c = planner.config
    sigma = torch.as_tensor(c.sigma, dtype=torch.float32).expand(planner.action_dim)
    model, cost = planner.model, planner.cost
    current = {}

    def dynamics(state, action):
        return model(state, action)

    def running_cost(state, action):
        return torch.zeros(state.shape[0], dtype=state.dtype)

    def trajectory_cost(states, actions):  # states [1, K, H, nx] after each action
        start = current["state"].expand(states.shape[1], 1, -1)
        return cost(torch.cat((start, states[0]), dim=1), actions[0])

    ctrl = MPPI(dynamics, running_cost, planner.state_dim, torch.diag(sigma**2), num_samples=c.num_samples,
                horizon=c.horizon, terminal_state_cost=trajectory_cost, lambda_=c.temperature,
                u_min=planner.action_low, u_max=planner.action_high)
    if compiled:
        ctrl.compile()

    def step(state):
        current["state"] = state
        with torch.no_grad():  # as our planner runs; pytorch_mppi's command leaves autograd on
            return ctrl.command(state)

    return step


def solver(planner: Planner, start: torch.Tensor, mode: str) -> Callable[[], tuple[float, PlanResult]]:
    """One timed solve of a case -> ``(ms, result)`` (see the module docstring): ``cold`` forgets the warm start
    (timed with the solve), ``warm`` solves again from ``start``, ``receding`` from the last plan's next state,
    with a fresh episode (an untimed cold solve) every ``EPISODE`` solves."""
    current = {"state": start, "solves": 0}

    def solve() -> tuple[float, PlanResult]:
        if mode == "receding" and current["solves"] % EPISODE == 0:
            planner.reset()
            current["state"] = planner.plan(start).predicted_states[1]
        current["solves"] += 1
        begin = time.perf_counter()
        if mode == "cold":
            planner.reset()
        result = planner.plan(current["state"])
        elapsed = time.perf_counter() - begin
        if mode == "receding":
            current["state"] = result.predicted_states[1]
        return elapsed * 1e3, result

    return solve


def time_solves(solvers: list[Callable[[], tuple[float, PlanResult]]], repeats: int,
                warmup: int) -> list[tuple[Timing, list[PlanResult]]]:
    """Each of ``solvers`` ``warmup + repeats`` times, taking turns solve by solve, so that paths compared in a
    case share the machine's load -> ``(timing, results after warm-up)`` per solver."""
    samples: list[list[float]] = [[] for _ in solvers]
    results: list[list[PlanResult]] = [[] for _ in solvers]
    for i in range(warmup + repeats):
        for j, solve in enumerate(solvers):
            elapsed, result = solve()
            if i >= warmup:
                samples[j].append(elapsed)
                results[j].append(result)
    return [(Timing(float(np.median(s)), float(np.percentile(s, 99)), repeats), r) for s, r in zip(samples, results)]


def conditions(planner: Planner, threads: int) -> dict:
    """What both sides of a comparison share, recorded with the numbers."""
    config = planner.config
    return {
        "planner": planner.name,
        "grad_mode": "no_grad",
        "threads": threads,
        "dtype": str(planner.dtype).replace("torch.", ""),
        "dynamics": type(planner.model).__name__,
        "propagation": getattr(planner.model, "propagation", None),
        "cost_terms": list(planner.cost.names),
        "samples": getattr(config, "num_samples", None),
        "horizon": planner.horizon,
        "compiled": bool(getattr(planner, "compiled", getattr(config, "compile", False))),
        "ilqr_ensemble": getattr(config, "ensemble", None) if planner.name == "ilqr" else None,
        "solve_threads": (getattr(config, "threads", None) or threads) if planner.name == "ilqr" else threads,
        # iLQR on the model's float64 numpy form (DynamicsModel.numpy_dynamics), or the torch path.
        "ilqr_numpy_form": bool(getattr(planner, "numpy_form", False)) if planner.name == "ilqr" else None,
        # What runs as compiled C (IlqrConfig.native), or why nothing does.
        "ilqr_native": getattr(planner, "native_status", None) if planner.name == "ilqr" else None,
    }


def run_case(case: Case, repeats: int, warmup: int, with_baseline: bool, threads: int | None = None) -> dict:
    planner, state = case.build()
    mode = next((m for m in ("cold", "receding") if case.name.endswith(f"_{m}")), "warm")
    solvers = [solver(planner, state, mode)]
    if case.paired is not None:
        solvers.append(solver(*case.paired[1](), mode))
    (ours, solves), *paired = time_solves(solvers, repeats, warmup)
    iterations = [r.info["iterations"] for r in solves if "iterations" in r.info]
    result = {
        "name": case.name,
        "median_ms": ours.median_ms,
        "p99_ms": ours.p99_ms,
        "gflops": None if case.flops_per_step is None else case.flops_per_step / (ours.median_ms * 1e-3) / 1e9,
        "baseline_median_ms": None,
        "speedup_vs_pytorch_mppi": None,
        "repeats": repeats,
        "target": case.targets,
        "conditions": conditions(planner, threads or torch.get_num_threads()),
        "reference": case.reference,
        "iterations_median": float(np.median(iterations)) if iterations else None,
    }
    if paired:
        (other, other_solves), = paired
        other_iterations = [r.info["iterations"] for r in other_solves if "iterations" in r.info]
        result.update({"paired": case.paired[0], "paired_median_ms": other.median_ms, "paired_p99_ms": other.p99_ms,
                       "paired_iterations_median": float(np.median(other_iterations)) if other_iterations else None,
                       "speedup_vs_paired": other.median_ms / ours.median_ms})
    if case.baseline and with_baseline:
        result["conditions"]["baseline"] = "pytorch_mppi.MPPI, eager, command under torch.no_grad"
        eager = pytorch_mppi_baseline(planner, compiled=False)
        base: Timing = time_call(lambda: eager(state), repeats, warmup)
        result["baseline_median_ms"] = base.median_ms
        result["baseline_p99_ms"] = base.p99_ms
        result["speedup_vs_pytorch_mppi"] = base.median_ms / ours.median_ms
        try:
            compiled = pytorch_mppi_baseline(planner, compiled=True)
            base_c = time_call(lambda: compiled(state), repeats, warmup)
            result["baseline_compiled_median_ms"] = base_c.median_ms
            result["speedup_vs_pytorch_mppi_compiled"] = base_c.median_ms / ours.median_ms
        except Exception as err:  # its compile() is optional; report why it did not run
            result["baseline_compiled_error"] = f"{type(err).__name__}: {err}"[:200]
    return result


def main(quick: bool = False, json_path: str | None = None, cases: list[str] | None = None,
         threads: int | None = None, repeats: int | None = None) -> int:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    kept = keep_freed_memory()  # as the controller runs: both sides of every comparison share it
    known = [c.name for c in CASES]
    unknown = sorted(set(cases or []) - set(known))
    if unknown:
        raise SystemExit(f"mbrl-ros bench planners: unknown case(s) {unknown}; cases: {known}")
    selected = [c for c in CASES if not cases or c.name in cases]
    repeats, warmup = (20, 3) if quick else (repeats or 200, 10)
    gflops = gemm_gflops()
    print(f"torch {torch.__version__}, {threads} threads; fp32 GEMM 1024x512x512: {gflops:.1f} GFLOP/s")
    print(f"{'case':34s} {'median ms':>10s} {'p99 ms':>8s} {'GFLOP/s':>8s} {'pytorch_mppi':>13s} {'speedup':>8s}  target")
    results = []
    for case in selected:
        r = run_case(case, repeats, warmup, with_baseline=True, threads=threads)
        results.append(r)
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        extra = "" if r["iterations_median"] is None else f"  ({r['iterations_median']:g} iterations)"
        if r["reference"]:
            extra += f"  [{r['reference']['note']}: {r['reference']['median_ms']} ms published]"
        if r.get("paired"):
            extra += (f"  [in turns with {r['paired']}: {r['paired_median_ms']:.2f} ms, p99 {r['paired_p99_ms']:.2f}; "
                      f"{r['speedup_vs_paired']:.1f}x]")
        print(f"{r['name']:34s} {r['median_ms']:10.2f} {r['p99_ms']:8.2f} {fmt(r['gflops'], '8.1f'):>8s} "
              f"{fmt(r['baseline_median_ms'], '13.2f'):>13s} {fmt(r['speedup_vs_pytorch_mppi'], '7.1f') + 'x' if r['speedup_vs_pytorch_mppi'] else '-':>8s}  {r['target']}{extra}",
              flush=True)
    report = {"gemm_gflops": gflops, "threads": threads, "torch": torch.__version__, "quick": quick,
              "malloc_keeps_freed_memory": kept, "cases": results}
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0
