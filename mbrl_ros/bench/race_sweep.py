"""The race against target speed, per model kind: which model sustains which speed for its laps.

For each model kind and target speed (the race cost's ``path_tracking.target_speed``) one
``mbrl-ros demo car --task race`` run through the whole stack: random driving, the trainer's
model, ``learning_episodes`` under it (retrained online as their data come in), then ``episodes``
evaluated episodes of ``race_laps`` (3) laps each. Per run: laps,
mean and best lap time, track exits, mean cross-track error, success (all laps, no exit).
Per model kind: the highest target speed at which every evaluated episode drove its laps
without leaving the track. Then the lap-time gain of each learned kind over the parametric
prior at the prior's best speed (the highest it sustains), at that same target speed and
with the learned kind's own fastest clean run. Writes JSON and a plot of lap
time and exits against target speed.

Target (issue 10 §2): at a speed where the kinematic prior leaves the track, the
semi-parametric model drives its laps without leaving it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mbrl_ros.plots import _pyplot

MODEL_KINDS = ("parametric", "semiparametric", "ensemble")
# The models are compared, not the machine: in lockstep the simulated world waits for each plan, so a plan
# slower than the 50 ms period (eager MPPI on two shared cores) is still used rather than replaced by the
# previous plan's next step, and a slow cycle does not make the state "stale" (the stop: wheels straight).
LOCKSTEP = {"overrun_fallback": False, "state_timeout": 30.0}


def sustained(runs: list[dict]) -> float | None:
    """The highest target speed whose run succeeded in every evaluated episode (None: none did)."""
    speeds = [r["target_speed"] for r in runs if r.get("success_rate") == 1.0]
    return max(speeds) if speeds else None


def analyse(results: dict[str, list[dict]]) -> dict:
    """Per model kind its highest sustained speed; each learned kind's lap-time gain over the prior at the
    prior's best speed (same target speed), and of its own fastest clean run over the prior's."""
    best = {kind: sustained(runs) for kind, runs in results.items()}
    prior_speed = best.get("parametric")
    at_prior_speed: dict[str, float | None] = {}
    fastest: dict[str, float | None] = {}
    if prior_speed is not None:
        def clean_lap(runs: list[dict], speed: float | None = None) -> float | None:
            laps = [r["mean_lap_time_s"] for r in runs if r.get("success_rate") == 1.0
                    and (speed is None or r["target_speed"] == speed)]
            return min(laps) if laps else None

        prior_lap = clean_lap(results["parametric"], prior_speed)
        for kind, runs in results.items():
            if kind == "parametric":
                continue
            same, own = clean_lap(runs, prior_speed), clean_lap(runs)
            at_prior_speed[kind] = None if same is None else float((prior_lap - same) / prior_lap)
            fastest[kind] = None if own is None else float((prior_lap - own) / prior_lap)
    return {"highest_sustained_speed": best, "prior_best_speed": prior_speed,
            "lap_time_gain_at_prior_best_speed": at_prior_speed, "lap_time_gain_fastest_clean_run": fastest}


def plot_sweep(path: Path, results: dict[str, list[dict]], title: str = "") -> Path:
    """Mean lap time and track exits against target speed, one line per model kind."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for kind, runs in results.items():
        runs = sorted(runs, key=lambda r: r["target_speed"])
        speeds = [r["target_speed"] for r in runs]
        laps = [np.nan if r.get("mean_lap_time_s") is None else r["mean_lap_time_s"] for r in runs]
        line, = top.plot(speeds, laps, "o-", label=kind)
        bottom.plot(speeds, [r.get("track_exits", np.nan) for r in runs], "o-", color=line.get_color(), label=kind)
    top.set_ylabel("mean lap time (s)")
    bottom.set_ylabel("track exits")
    bottom.set_xlabel("target speed (m/s)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    top.set_title(title or "race: lap time and exits against target speed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(speeds: list[float], models: list[str], episodes: int = 1, random_transitions: int | None = None,
        seed: int = 0, out: str = "runs/race_sweep", json_path: str | None = None, learning_episodes: int = 0) -> dict:
    from mbrl_ros.demo.run import run_demo

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {kind: [] for kind in models}
    # Fastest first, each kind in turn: the runs that tell the models apart come first, and the JSON
    # written after every run keeps what a sweep cut short measured.
    for speed in sorted(speeds, reverse=True):
        for kind in models:
            name = f"{kind}_{speed:g}"
            summary_path = folder / f"{name}.json"
            overrides = {"controller": {"cost": {"path_tracking": {"target_speed": float(speed)}}, **LOCKSTEP}}
            rc = run_demo("car", "race", episodes=episodes, model_kind=kind, random_transitions=random_transitions,
                          seed=seed, out_dir=str(folder / name), json_path=str(summary_path), overrides=overrides,
                          learning_episodes=learning_episodes)
            if rc != 0 or not summary_path.is_file():
                raise RuntimeError(f"race sweep: the demo for {name} failed (exit {rc}); see {folder / name}/")
            results[kind].append(json.loads(summary_path.read_text()))
            (folder / "race_sweep_partial.json").write_text(json.dumps(results, indent=2) + "\n")
    report = {"speeds": list(map(float, speeds)), "episodes": episodes, "learning_episodes": learning_episodes,
              "random_transitions": random_transitions, "controller": LOCKSTEP, "runs": results,
              **analyse(results)}
    plot_sweep(folder / "race_sweep.png", results)
    text = json.dumps(report, indent=2) + "\n"
    (folder / "race_sweep.json").write_text(text)
    if json_path:
        Path(json_path).write_text(text)
    print(f"[race-sweep] highest sustained target speed per model kind: {report['highest_sustained_speed']}; "
          f"lap-time gain over the prior at its best speed: {report['lap_time_gain_at_prior_best_speed']}, "
          f"fastest clean run's: {report['lap_time_gain_fastest_clean_run']}; "
          f"{folder / 'race_sweep.png'}", flush=True)
    return report
