"""Learning curve of the running stack: parking success against transitions collected.

The whole stack starts from zero data (launch file, lockstep simulation): the
controller drives randomly for a small budget, the trainer fits a first model
and then retrains every ``retrain_every`` new transitions, deploying a model
only when it beats the current one on held-out episodes. Every episode from the
very first counts, so the curve starts at random driving. For each episode the
curve has the transitions collected by its end and the success rate over the
last ``window`` episodes.

Target (issue 4): >= 90 % success within 2,000 transitions, and it holds or
improves beyond.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mbrl_ros.stack_run import StackRun, default_domain_id, prepare_config, progress_options
from mbrl_ros.plots import plot_learning_curve
from mbrl_ros.ros_env import REPO_ROOT

TARGET_SUCCESS, TARGET_TRANSITIONS = 0.9, 2000


def run(episodes: int = 60, random_transitions: int = 200, retrain_every: int = 200, window: int = 10,
        model: str = "parametric", seed: int = 0, out: str | None = None, json_path: str | None = None) -> dict:
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="mbrl_learning_curve_"))
    folder.mkdir(parents=True, exist_ok=True)
    config = prepare_config(REPO_ROOT / "config", folder / "config", "car", "parking", {
        "trainer": {"random_transitions": random_transitions, "retrain_every": retrain_every, "poll_period": 1.0},
        "controller": {"random_transitions": random_transitions},
        "data_logger": {"split_duration": 10.0},  # closed bags sooner: the trainer reads closed ones
    })
    print(f"[learning-curve] parking from zero data: {random_transitions} random transitions, retrain every "
          f"{retrain_every}, model '{model}', {episodes} episodes -> {folder}/", flush=True)
    run = StackRun(folder, {"robot": "car", "hardware": "sim", "task": "parking", "lockstep": "true",
                            "model": model, "seed": str(seed), "run_dir": str(folder), "config_dir": str(config)},
                   default_domain_id("learning-curve"))
    watcher = run.watcher
    bar = tqdm(total=episodes, desc="episodes", unit="episode", **progress_options())

    def progress() -> None:
        bar.update(min(len(watcher.reports), episodes) - bar.n)
        recent = watcher.reports[-window:]
        bar.set_postfix_str(f"model v{watcher.model_version()} | last {len(recent)}: "
                            f"{sum(r.get('success') == 'True' for r in recent)} parked", refresh=False)

    started = time.monotonic()
    try:
        run.wait_for(lambda: len(watcher.reports) >= episodes, 3 * 3600, f"{episodes} episodes", tick=progress)
    finally:
        bar.close()
        run.stop()
    traces = watcher.episodes()[:episodes]
    result = curve(traces, watcher.timings, window)
    result.update({"random_transitions": random_transitions, "retrain_every": retrain_every, "model": model,
                   "wall_s": time.monotonic() - started})
    plot_learning_curve(folder / "learning_curve.png", result["points"], result["window"], TARGET_SUCCESS,
                        TARGET_TRANSITIONS, title=f"learning curve, online retraining from zero data ({model})")
    reached = result["transitions_to_target"]
    print(f"[learning-curve] {len(traces)} episodes, {result['points'][-1]['transitions']} transitions; "
          f"success over the last {window}: {result['points'][-1]['success_rate']:.0%}; "
          f">= {TARGET_SUCCESS:.0%} first at {reached if reached is not None else 'never'} transitions "
          f"(target <= {TARGET_TRANSITIONS}); plot {folder / 'learning_curve.png'}", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def curve(traces, timings: list[tuple], window: int) -> dict:
    """Per episode: transitions collected by its end, windowed success rate, model it ended with."""
    steps = np.array([t.number("steps", 0) for t in traces])
    success = np.array([t.success for t in traces], dtype=float)
    collected = np.cumsum(steps).astype(int)
    points = []
    for i, trace in enumerate(traces):
        start, end = int(trace.report["start_stamp_ns"]), int(trace.report["end_stamp_ns"])
        models = [m for stamp, _mode, _c, _d, m in timings if start <= stamp < end]
        recent = success[max(0, i + 1 - window):i + 1]
        points.append({"episode": i, "transitions": int(collected[i]), "success": bool(success[i]),
                       "success_rate": float(recent.mean()), "window": int(len(recent)),
                       "model_version": int(max(models)) if models else 0})
    full = [p for p in points if p["window"] == window]
    reached = next((p["transitions"] for p in full if p["success_rate"] >= TARGET_SUCCESS), None)
    after = [p["success_rate"] for p in full if reached is not None and p["transitions"] >= reached]
    return {"window": window, "points": points, "transitions_to_target": reached,
            "target": f">= {TARGET_SUCCESS:.0%} success within {TARGET_TRANSITIONS} transitions",
            "target_met": reached is not None and reached <= TARGET_TRANSITIONS,
            "min_success_rate_after_target": float(min(after)) if after else None}
