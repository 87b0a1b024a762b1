"""Issue 11 §3: a second start of the controller plans compiled from the first start's cache, in seconds.

Each start is a real controller process (the car's parking config, MPPI with ``compile: true`` and its
``compile_cache`` in a temporary directory) with the stand-in of test_controller_safety.py around it: a
model, a goal and a state. The controller's /diagnostics say whether it plans compiled, how long its
first plan took (the compile is in it) and the compile cache's hits and misses in its process. Asserted:
the first start compiles (misses, no hit), the second loads everything (hits, no miss). The times are
printed, not asserted (a loaded machine decides them).
"""

from __future__ import annotations

import signal
import subprocess

import yaml
from test_controller_safety import CRUISING, PEERS, Peer, controller_argv


def first_plan(spawn, params_file) -> dict:
    """One start of the controller, until its first plan: its diagnostics then. Ends it and its stand-in."""
    controller = spawn(*controller_argv("--params-file", str(params_file)))
    peer = Peer(spawn(str(PEERS), "/car", stdin=subprocess.PIPE), controller)
    peer.wait(lambda: "ready" in peer.lines, 90, "the stand-in to discover the controller")
    peer.send(model="car")
    peer.send(goal=[5.0, 0.0, 0.0])
    peer.send(state=CRUISING)
    status = peer.wait(lambda: peer.status() if peer.status().get("first_plan_ms") else None, 600,
                       "the first plan (a compile)")
    controller.send_signal(signal.SIGINT)
    assert controller.wait(timeout=30) == 0, controller.stderr.read()
    peer.proc.terminate()
    peer.proc.wait(timeout=10)
    return status


def test_a_second_start_of_the_controller_plans_compiled_from_the_first_starts_cache(spawn, tmp_path):
    cache = tmp_path / "compile_cache"
    params = tmp_path / "compile.yaml"
    params.write_text(yaml.safe_dump({"/**/controller": {"ros__parameters": {"mppi": {
        "compile": True, "compile_cache": str(cache), "num_samples": 32, "horizon": 3}}}}))
    first = first_plan(spawn, params)
    assert first["planner_compiled"] == "True", first
    assert int(first["compile_fxgraph_cache_miss"]) >= 1 and first["compile_fxgraph_cache_hit"] == "0", first
    second = first_plan(spawn, params)
    assert second["planner_compiled"] == "True", second
    assert int(second["compile_fxgraph_cache_hit"]) >= 1 and second["compile_fxgraph_cache_miss"] == "0", second
    assert second["compile_autograd_cache_miss"] == "0", second
    print(f"the controller's first plan: first start {float(first['first_plan_ms']) / 1e3:.1f} s (compiling), "
          f"second start {float(second['first_plan_ms']) / 1e3:.1f} s (from the cache)")
