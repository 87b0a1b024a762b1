"""Issue 11 §3: a second start of a compiling planner loads its compiled graph from the stack's cache.

Each start is a fresh Python process (as a controller's restart is) that builds an MPPI
planner with ``compile: true`` and ``compile_cache`` in a temporary directory, plans once
and reports the cache counters and its time to the first plan. Asserted: the first start
compiles (misses) and fills the directory, the second loads (hits, no miss) and plans
the same action. The times are printed, not asserted (a loaded machine decides them).
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import torch
from mbrl_ros.core.compile_cache import compile_cache_counters
from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots.car.bicycle import KinematicBicycle

torch.set_num_threads(1)
cost = build_cost({"goal_pose": {"form": "quadratic"}, "effort": {"weight": 0.01}}, 5, 2)
cost.set_context("goal", torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0]))
planner = build_planner("mppi", KinematicBicycle(dt=0.1, substeps=1), cost,
                        {"num_samples": 32, "horizon": 3, "compile": True, "compile_cache": sys.argv[1]})
begin = time.perf_counter()
action = planner.plan(torch.zeros(5)).action
print(json.dumps({"first_plan_s": time.perf_counter() - begin, "compiled": planner.compiled,
                  "action": action.tolist(), **compile_cache_counters()}))
"""


def start(cache) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(cache)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_start_loads_the_compiled_plan_from_the_cache(tmp_path):
    cache = tmp_path / "compile_cache"  # created by the first start
    first = start(cache)
    assert first["compiled"] and first["fxgraph_cache_miss"] >= 1 and first["fxgraph_cache_hit"] == 0, first
    assert any(cache.rglob("*")), "the first start wrote nothing into the cache directory"
    second = start(cache)
    assert second["compiled"] and second["fxgraph_cache_hit"] >= 1 and second["fxgraph_cache_miss"] == 0, second
    assert second["action"] == first["action"]
    print(f"time to the first compiled plan: first start {first['first_plan_s']:.1f} s, "
          f"second start {second['first_plan_s']:.1f} s")


def test_a_cache_directory_torch_cannot_compile_under_is_refused_by_name(tmp_path):
    """A directory with a space: torch 2.13's C++ compile of the graphs under it failed (InductorError:
    CppCompileError) and the planner fell back to eager on every start; refused up front instead."""
    import pytest

    from mbrl_ros.core.compile_cache import use_compile_cache

    with pytest.raises(ValueError, match="compile_cache: .*compile cache.* whitespace"):
        use_compile_cache(tmp_path / "compile cache")
