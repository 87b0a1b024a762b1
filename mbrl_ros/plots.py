"""The plots people look at: trajectories, model error against horizon, latency.

Matplotlib with the Agg backend (no screen needed); each function writes one
PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_car_trajectories(
    path: Path,
    trajectories: Sequence[np.ndarray],
    goals: Sequence[np.ndarray | None],
    outcomes: Sequence[str],
    bounds: tuple[float, float, float, float] | None = None,
    reference: np.ndarray | None = None,
    title: str = "",
    circles: np.ndarray | None = None,
) -> Path:
    """Driven x-y paths (one colour per outcome) against their goal poses; ``circles`` [M, 3]: obstacles."""
    plt = _pyplot()
    colours = {"success": "tab:green", "crashed": "tab:red", "timeout": "tab:orange"}
    fig, ax = plt.subplots(figsize=(9, 6))
    if reference is not None:
        ax.plot(reference[:, 0], reference[:, 1], color="0.7", lw=6, zorder=0, label="reference")
    if bounds is not None:
        xmin, ymin, xmax, ymax = bounds
        ax.plot([xmin, xmax, xmax, xmin, xmin], [ymin, ymin, ymax, ymax, ymin], color="k", lw=2)
    for x, y, r in [] if circles is None else circles:
        ax.add_patch(plt.Circle((x, y), r, color="0.4", zorder=1))
    # Goal arrows sized to the scene (2.5 m in the parking lot's 70 m).
    arrow = 0.035 * max(bounds[2] - bounds[0], bounds[3] - bounds[1]) if bounds is not None else 2.5
    seen = set()
    for states, goal, outcome in zip(trajectories, goals, outcomes):
        label = outcome if outcome not in seen else None
        seen.add(outcome)
        ax.plot(states[:, 0], states[:, 1], color=colours.get(outcome, "tab:blue"), lw=1, alpha=0.8, label=label)
        ax.plot(states[0, 0], states[0, 1], "k.", ms=4)
        if goal is not None:
            ax.arrow(goal[0], goal[1], arrow * np.cos(goal[2]), arrow * np.sin(goal[2]), color="tab:blue",
                     width=0.1 * arrow, length_includes_head=True)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.set_title(title or f"{len(trajectories)} episodes (arrows: goal poses)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_error_vs_horizon(path: Path, errors: Mapping[str, Mapping[int, float]], title: str = "") -> Path:
    """Open-loop validation RMSE against prediction horizon, one line per model."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_horizon in errors.items():
        horizons = sorted(by_horizon)
        ax.plot(horizons, [by_horizon[h] for h in horizons], "o-", label=name)
    ax.set_xlabel("prediction horizon [steps]")
    ax.set_ylabel("RMSE (scaled state units)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "model error against horizon (held-out episodes)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency_histogram(path: Path, latencies_ms: Sequence[float], deadline_ms: float | None = None,
                           title: str = "") -> Path:
    plt = _pyplot()
    values = np.asarray(latencies_ms, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(values, bins=50, color="tab:blue", alpha=0.8)
    p50, p99 = np.percentile(values, [50, 99]) if len(values) else (np.nan, np.nan)
    ax.axvline(p50, color="k", ls="--", label=f"p50 {p50:.1f} ms")
    ax.axvline(p99, color="tab:red", ls="--", label=f"p99 {p99:.1f} ms")
    if deadline_ms is not None:
        ax.axvline(deadline_ms, color="tab:orange", lw=2, label=f"deadline {deadline_ms:.0f} ms")
    ax.set_xlabel("controller latency [ms]")
    ax.set_ylabel("cycles")
    ax.set_title(title or f"controller latency ({len(values)} cycles)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predicted_trajectories(
    path: Path,
    episodes: Sequence[tuple[str, np.ndarray]],
    predictions: Sequence[Mapping[str, np.ndarray]],
    state_names: Sequence[str],
    dt: float,
    restart_every: int | None = None,
    title: str = "",
) -> Path:
    """Recorded states against each model's predictions: one row per state, one column per episode.

    ``episodes``: (label, recorded states [T+1, nx]); ``predictions[i]``: model name ->
    predicted states [T+1, nx] for episode i. ``restart_every``: the steps at which the
    predictions were restarted from the recording, marked with dotted lines.
    """
    plt = _pyplot()
    rows, cols = len(state_names), max(1, len(episodes))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 1.8 * rows + 0.8), sharex="col", squeeze=False)
    for col, ((label, recorded), predicted) in enumerate(zip(episodes, predictions)):
        t = np.arange(len(recorded)) * dt
        for row, name in enumerate(state_names):
            ax = axes[row, col]
            ax.plot(t, recorded[:, row], color="k", lw=2, label="recorded")
            for model_name, states in predicted.items():
                ax.plot(t, states[:, row], lw=1, label=model_name)
            if restart_every:
                for start in range(restart_every, len(recorded) - 1, restart_every):
                    ax.axvline(start * dt, color="0.8", ls=":", lw=1)
            if col == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(label, fontsize=9)
        axes[-1, col].set_xlabel("time [s]")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "recorded vs predicted states", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curve(path: Path, points: Sequence[Mapping], window: int, target_success: float,
                        target_transitions: int, title: str = "", label: str | None = None) -> Path:
    """Windowed success rate (and each episode's outcome, where points have ``success``) against transitions
    collected. ``label``: the success curve's legend (default: the window's)."""
    plt = _pyplot()
    x = [p["transitions"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4))
    outcomes = all("success" in p for p in points)
    ax.plot(x, [p["success_rate"] for p in points], "-" if outcomes else "o-", color="tab:blue",
            label=label or f"success, last {window} episodes")
    if outcomes:
        ax.plot(x, [float(p["success"]) for p in points], "|", color="0.4", ms=8, label="episode outcome")
    ax.axhline(target_success, color="tab:green", ls="--", lw=1, label=f"{target_success:.0%}")
    ax.axvline(target_transitions, color="tab:orange", ls="--", lw=1, label=f"{target_transitions} transitions")
    ax.set_xlabel("transitions collected (random + controlled)")
    ax.set_ylabel("success")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title or "learning curve")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_progress(path: Path, transitions: Sequence[float], successes: Sequence[bool], distances: Sequence[float],
                  distance_label: str = "final distance to the goal", title: str = "") -> Path:
    """Each episode's outcome and final distance to its goal against the transitions collected by its end."""
    plt = _pyplot()
    x = np.asarray(transitions, dtype=float)
    won = np.asarray(successes, dtype=bool)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.plot(x, np.cumsum(won) / np.arange(1, len(won) + 1), "-", color="tab:blue", label="success rate so far")
    top.plot(x, won.astype(float), "|", color="0.4", ms=8, label="episode outcome")
    top.set_ylabel("success")
    top.set_ylim(-0.05, 1.05)
    top.legend(fontsize=8, loc="best")
    distances = np.asarray(distances, dtype=float)
    bottom.plot(x[won], distances[won], "o", color="tab:green", ms=4, label="success")
    bottom.plot(x[~won], distances[~won], "o", color="tab:red", ms=4, label="failure")
    bottom.set_ylabel(distance_label)
    bottom.set_xlabel("transitions collected (random + controlled)")
    bottom.legend(fontsize=8, loc="best")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.set_title(title or "progress")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
