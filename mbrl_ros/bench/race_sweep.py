"""The race against target speed, per model kind: which model sustains which speed for its laps.

For each model kind and target speed (the race cost's ``path_tracking.target_speed``: with the shipped
racing cost a cap, which progress along the track drives the car up to; with ``speed_form: set_point``
the speed it tracks) one ``mbrl-ros demo car --task race`` run through the whole stack: random driving, the trainer's
model, ``learning_episodes`` under it (each, in lockstep, held at its start until the model retrained on the
episodes before has reached the controller: ``mbrl_ros.demo.run.learn_between``), then ``episodes``
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


def _by_speed(runs: list[dict]) -> dict[float, list[dict]]:
    speeds: dict[float, list[dict]] = {}
    for r in runs:
        speeds.setdefault(float(r["target_speed"]), []).append(r)
    return speeds


def sustained(runs: list[dict]) -> float | None:
    """The highest target speed at which every run (every seed) succeeded in every evaluated episode (None:
    none did)."""
    speeds = [speed for speed, at in _by_speed(runs).items() if all(r.get("success_rate") == 1.0 for r in at)]
    return max(speeds) if speeds else None


def _clean_laps(runs: list[dict]) -> dict[float, float]:
    """Per target speed that every run sustained: the runs' mean lap time, averaged over the runs (seeds)."""
    return {speed: float(np.mean([r["mean_lap_time_s"] for r in at])) for speed, at in _by_speed(runs).items()
            if all(r.get("success_rate") == 1.0 for r in at)}


def analyse(results: dict[str, list[dict]]) -> dict:
    """Per model kind its highest sustained speed; each learned kind's lap-time gain over the prior at the
    prior's best speed (same target speed), and of its own fastest clean speed over the prior's. With several
    runs (seeds) at a speed, a speed counts only where all of them drove their laps clean, and lap times are
    their mean."""
    best = {kind: sustained(runs) for kind, runs in results.items()}
    prior_speed = best.get("parametric")
    at_prior_speed: dict[str, float | None] = {}
    fastest: dict[str, float | None] = {}
    if prior_speed is not None:
        prior_lap = _clean_laps(results["parametric"])[prior_speed]
        for kind, runs in results.items():
            if kind == "parametric":
                continue
            laps = _clean_laps(runs)
            same, own = laps.get(prior_speed), min(laps.values(), default=None)
            at_prior_speed[kind] = None if same is None else float((prior_lap - same) / prior_lap)
            fastest[kind] = None if own is None else float((prior_lap - own) / prior_lap)
    return {"highest_sustained_speed": best, "prior_best_speed": prior_speed,
            "lap_time_gain_at_prior_best_speed": at_prior_speed, "lap_time_gain_fastest_clean_run": fastest}


def plot_sweep(path: Path, results: dict[str, list[dict]], title: str = "") -> Path:
    """Mean lap time and track exits against target speed, one line per model kind: each run's mean lap time
    (o: its laps clean, x: it left the track) and their mean over the runs (seeds) at a speed; the exits
    summed over them."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for kind, runs in results.items():
        at = dict(sorted(_by_speed(runs).items()))
        laps = {speed: [r["mean_lap_time_s"] for r in group if r.get("mean_lap_time_s") is not None]
                for speed, group in at.items()}
        line, = top.plot(list(at), [np.mean(lap) if lap else np.nan for lap in laps.values()], "-", label=kind)
        for r in (r for group in at.values() for r in group if r.get("mean_lap_time_s") is not None):
            top.plot(r["target_speed"], r["mean_lap_time_s"], "o" if r.get("success_rate") == 1.0 else "x",
                     color=line.get_color())
        bottom.plot(list(at), [sum(r.get("track_exits", 0) for r in group) for group in at.values()], "o-",
                    color=line.get_color(), label=kind)
    top.set_ylabel("mean lap time (s)")
    bottom.set_ylabel("track exits (all runs)")
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
        seeds: int | list[int] = 0, out: str = "runs/race_sweep", json_path: str | None = None,
        learning_episodes: int = 0, retrain_every: int | None = None, sim: str | None = None,
        speed_cap_margin: float | None = None) -> dict:
    from mbrl_ros.demo.run import run_demo

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    results: dict[str, list[dict]] = {kind: [] for kind in models}
    # One run per speed, kind and seed (the seed of the random data, the training and the planner). Fastest
    # first, each kind in turn: the runs that tell the models apart come first, and the JSON written after
    # every run keeps what a sweep cut short measured.
    for speed, kind, seed in ((v, k, s) for v in sorted(speeds, reverse=True) for k in models for s in seeds):
        name = f"{kind}_{speed:g}" if len(seeds) == 1 else f"{kind}_{speed:g}_s{seed}"
        summary_path = folder / f"{name}.json"
        overrides = {"controller": {"cost": {"path_tracking": {"target_speed": float(speed)}}, **LOCKSTEP}}
        if speed_cap_margin is not None:
            overrides["controller"]["speed_cap_margin"] = float(speed_cap_margin)
        if retrain_every is not None:
            overrides["trainer"] = {"retrain_every": int(retrain_every)}
        if sim is not None:
            overrides["sim_car"] = {"race_model": sim}
        rc = run_demo("car", "race", episodes=episodes, model_kind=kind, random_transitions=random_transitions,
                      seed=seed, out_dir=str(folder / name), json_path=str(summary_path), overrides=overrides,
                      learning_episodes=learning_episodes)
        if rc != 0 or not summary_path.is_file():
            raise RuntimeError(f"race sweep: the demo for {name} failed (exit {rc}); see {folder / name}/")
        results[kind].append({**json.loads(summary_path.read_text()), "sweep_seed": seed})
        (folder / "race_sweep_partial.json").write_text(json.dumps(results, indent=2) + "\n")
    report = {"speeds": list(map(float, speeds)), "seeds": seeds, "episodes": episodes,
              "learning_episodes": learning_episodes, "retrain_every": retrain_every, "sim": sim,
              "speed_cap_margin": speed_cap_margin,
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
