"""The report of ``mbrl-ros fit``: a table, plots and JSON of the models' held-out errors.

Files in the output folder:
- ``errors.csv`` and the table in ``report.md``: per model, the validation RMSE at each
  horizon (scaled by the config's ``error_scale``, as the trainer scores), the score
  the trainer compares (mean over horizons) and the fit time;
- ``error_vs_horizon.png``: those errors against horizon, one line per model;
- ``trajectories.png``: recorded against predicted states on the longest held-out
  episodes. A prediction restarts from the recorded state every ``max(horizons)``
  steps (marked), so it shows the open-loop drift over the span the errors measure.
JSON (``--json FILE``): the same numbers, per horizon and per state.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.plots import plot_error_vs_horizon, plot_predicted_trajectories

EPISODES_PLOTTED = 3


def error_rows(run) -> list[dict]:
    """One row per model kind: held-out RMSE per horizon, score, fit seconds (or why it failed)."""
    rows = []
    for kind, result in run.models.items():
        row = {"model": kind + (" (requested)" if kind == run.requested else "")}
        for h in run.horizons:
            row[f"h{h}"] = result.fit.val_error.rmse[h] if result.fit else math.nan
        row["score"] = result.score
        row["fit_s"] = result.fit.seconds if result.fit else math.nan
        row["note"] = result.error
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) or math.isinf(value) else f"{value:.4g}"
    return str(value)


def summary(run) -> dict:
    """The JSON document: the data used, and each model's held-out errors per horizon."""
    names = run.state_names
    models = {}
    for kind, result in run.models.items():
        if result.fit is None:
            models[kind] = {"error": result.error}
            continue
        err = result.fit.val_error
        models[kind] = {
            "val_rmse": {str(h): _finite(err.rmse[h]) for h in run.horizons},
            "val_rmse_per_state": {str(h): dict(zip(names, map(_finite, err.rmse_per_dim[h].tolist())))
                                   for h in run.horizons},
            "windows": {str(h): err.num_windows[h] for h in run.horizons},
            "score": _finite(result.score),
            "fit_seconds": result.fit.seconds,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None,
            "details": result.fit.details,
        }
    return {
        "bags": [str(b) for b in run.bags],
        "robot": run.robot,
        "task": run.task,
        "config_files": [str(f) for f in run.config_files],
        "requested_model": run.requested,
        "checkpoint": str(run.files.get("checkpoint")),
        "state_names": names,
        "error_scale": run.params.get("error_scale"),
        "horizons": run.horizons,
        "transitions": run.totals["transitions"],
        "episodes": run.totals["episodes"],
        "train_transitions": run.totals["train"],
        "selection_transitions": run.totals["selection"],
        "val_transitions": len(run.val),
        "val_episodes": [e for e, _, _ in run.val.episodes()],
        # Counts only: not the names, nor each episode's first state, stamps or resets (one entry per episode).
        "read": {k: v for k, v in run.read_report.items() if k not in ("state_names", "action_names",
                                                                       "episode_starts", "episode_spans",
                                                                       "reset_stamps")},
        "models": models,
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None  # JSON has no NaN


def episode_trajectories(data: TransitionDataset, count: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The ``count`` longest episodes as (id, visited states [T+1, nx], actions [T, nu])."""
    longest = sorted(data.episodes(), key=lambda e: e[2] - e[1], reverse=True)[:count]
    out = []
    for episode, first, end in longest:
        states = torch.cat([data.states[first:end], data.next_states[end - 1:end]])
        out.append((episode, states.numpy(), data.actions[first:end].numpy()))
    return out


@torch.no_grad()
def predict_segments(model, states: np.ndarray, actions: np.ndarray, segment: int) -> np.ndarray:
    """Open-loop predictions restarted from the recorded state every ``segment`` steps."""
    dtype = next((t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), torch.float32)
    recorded = torch.as_tensor(states, dtype=dtype)
    applied = torch.as_tensor(actions, dtype=dtype)
    predicted = recorded.clone()
    x = recorded[:1]
    for t in range(len(applied)):
        if t % segment == 0:
            x = recorded[t:t + 1]
        x = model(x, applied[t:t + 1])
        predicted[t + 1] = x[0]
    return predicted.numpy()


def _unwrapped(states: np.ndarray, angle_dims: list[int]) -> np.ndarray:
    """Angles without their jumps at +-pi, so a heading reads as a continuous line in a plot."""
    states = states.copy()
    states[:, angle_dims] = np.unwrap(states[:, angle_dims], axis=0)
    return states


def write_report(run, json_path: str | Path | None = None) -> str:
    """Write the report files into ``run.out`` (and JSON to ``json_path``); return the table as text."""
    out = Path(run.out)
    rows = error_rows(run)
    table = markdown_table(rows)
    with open(out / "errors.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run.files["errors_csv"] = out / "errors.csv"

    fitted = {kind: r for kind, r in run.models.items() if r.fit is not None}
    scale = "scaled by error_scale" if run.params.get("error_scale") else "state units"
    run.files["error_plot"] = plot_error_vs_horizon(
        out / "error_vs_horizon.png", {k: r.fit.val_error.rmse for k, r in fitted.items()},
        title=f"held-out error ({len(run.val.episodes())} episodes, {len(run.val)} transitions; {scale})")
    segment = max(run.horizons)
    angle_dims = list(run.params.get("angle_dims", ()))
    episodes = episode_trajectories(run.val, EPISODES_PLOTTED)
    predictions = [{kind: _unwrapped(predict_segments(r.fit.model, states, actions, segment), angle_dims)
                    for kind, r in fitted.items()} for _, states, actions in episodes]
    run.files["trajectory_plot"] = plot_predicted_trajectories(
        out / "trajectories.png", [(f"episode {e}", _unwrapped(states, angle_dims)) for e, states, _ in episodes],
        predictions,
        run.state_names, dt=float(run.params["dt"]), restart_every=segment,
        title=f"held-out episodes: recorded vs predicted (restarted from the recording every {segment} steps)")

    document = summary(run)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(document, indent=2) + "\n")
    text = io.StringIO()
    text.write(f"# mbrl-ros fit: {run.robot}, requested model '{run.requested}'\n\n")
    text.write(f"Bags: {', '.join(document['bags'])}\n\n")
    text.write(f"Config: {', '.join(document['config_files'])}\n\n")
    text.write(f"{document['transitions']} transitions in {document['episodes']} episodes; "
               f"{document['train_transitions']} for training, {document['selection_transitions']} for early "
               f"stopping and elites, {document['val_transitions']} held out to score every model "
               f"(episodes {document['val_episodes']}).\n\n")
    text.write(f"Held-out open-loop RMSE per horizon (steps of {run.params['dt']} s; {scale}); "
               "score = mean over horizons (lower is better; the trainer's criterion):\n\n")
    text.write(table + "\n\n")
    text.write(f"Checkpoint: `{document['checkpoint']}`\n\n")
    text.write("![error against horizon](error_vs_horizon.png)\n\n![trajectories](trajectories.png)\n")
    (out / "report.md").write_text(text.getvalue())
    run.files["report"] = out / "report.md"
    return table
