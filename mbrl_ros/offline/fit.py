"""``mbrl-ros fit``: dynamics models from recorded bags, the trainer's data path run offline.

The same steps as one round of the online trainer (``mbrl_ros/nodes/trainer.py``),
with the same code: the robot's ``trainer`` parameters from ``config/``, the bags
read by ``load_transitions`` with the config's ``transitions`` mapping, whole episodes split by ``split_episodes``
(the trainer's hash-stable split) into training, selection (early stopping and elites, ``val_fraction``)
and held-out gate episodes (``gate_fraction``), every model fitted by ``fit_model`` and scored
by open-loop multi-step error on the same gate episodes, which none of them was fitted or selected on. The requested model is
saved in the checkpoint format the dynamics_server loads (``mbrl_ros.io.checkpoint``).

By default the other two model kinds are fitted too, so the report compares the
three on the same validation episodes (``compare=False`` fits only the requested
one). A compared model that fails to fit, or that the robot's config has no
section for (the hand has no parametric model), is reported as such; the
requested one failing is an error.

Data-parallel (``data_parallel=True``, in each process of a torch.distributed job: see
``mbrl_ros.offline.distributed``): each rank reads its own consecutive share of the bags; the
episode split is the single-process one, learned models train data-parallel, the gate episodes
are gathered so every model is scored on all of them, and rank 0 alone writes the checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from mbrl_ros.core import data_parallel as parallel
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import FitResult, check_training_options, fit_model
from mbrl_ros.core.model_kinds import MODEL_KINDS
from mbrl_ros.core.retraining import error_score, split_episodes
from mbrl_ros.io import checkpoint
from mbrl_ros.io.bags import BagError, list_bags, load_transitions
from mbrl_ros.io.config import ConfigError, merge, model_section_at, node_parameters, require
from mbrl_ros.offline.bag_paths import find_bags
from mbrl_ros.robots import available_robots, get_robot
from mbrl_ros.ros_env import REPO_ROOT

DEFAULT_CONFIG_DIR = REPO_ROOT / "config"
CHECKPOINT_NAME = "model.pt"
# The trainer node's defaults and ranges (its PARAMS) for the keys read here: a config that leaves
# them out gets the default, one that sets them is checked as the node checks it.
TRAINER_KEYS = {
    "dt": (0.2, (1e-3, 10.0)),
    "max_stamp_error": (0.05, (0.0, 5.0)),
    "max_jump": (2.0, (0.0, 1e6)),
    "val_fraction": (0.2, (0.01, 0.99)),
    "gate_fraction": (0.2, (0.01, 0.99)),
    "horizons": ([1, 5, 10, 20], (1, 100_000)),  # each entry
    "split_seed": (0, (0, 2**31 - 1)),
}
TRAINER_DEFAULTS = {key: default for key, (default, _) in TRAINER_KEYS.items()}


def check_trainer_values(params: dict, source: str) -> None:
    """The keys read here, as the trainer node's declared types and ranges take them; ConfigError naming
    ``source`` (the file) and the key."""
    for key, (default, (low, high)) in TRAINER_KEYS.items():
        if key not in params:
            continue
        value = params[key]
        values = value if isinstance(default, list) and isinstance(value, list) else [value]
        kind = int if isinstance(default, int) or isinstance(default, list) else (int, float)
        if not values or not all(isinstance(v, kind) and not isinstance(v, bool) and low <= v <= high for v in values):
            what = "a list of integers" if isinstance(default, list) else "an integer" if kind is int else "a number"
            raise ConfigError(f"{source}: trainer parameter '{key}': expected {what} in [{low:g}, {high:g}], "
                              f"got {value!r}")


class FitError(ValueError):
    """The bags or options cannot give a model; the message names the bag, file or option."""


@dataclass
class ModelFit:
    """One model kind's outcome on the shared validation episodes."""

    kind: str
    fit: FitResult | None = None
    error: str = ""  # why it could not be fitted
    checkpoint: Path | None = None

    @property
    def score(self) -> float:
        return error_score(self.fit.val_error) if self.fit is not None else math.inf


@dataclass
class FitRun:
    """Everything ``mbrl-ros fit`` produced: the data, each model, where the files are."""

    bags: list[Path]
    robot: str
    task: str | None
    requested: str
    config_files: list[Path]
    params: dict  # the trainer section, with the trainer's defaults filled in
    dataset: TransitionDataset
    train: TransitionDataset
    val: TransitionDataset  # the gate episodes every model is scored on (all ranks' when data-parallel)
    read_report: dict  # counts from transitions_from_bags (why episodes ended, names), summed over ranks
    selection: TransitionDataset | None = None  # the episodes that stop training early and choose elites
    # transitions / episodes of dataset, train and selection over all ranks (data-parallel: this rank's are shards)
    totals: dict[str, int] = field(default_factory=dict)
    models: dict[str, ModelFit] = field(default_factory=dict)
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def horizons(self) -> list[int]:
        return sorted({int(h) for h in self.params["horizons"]})

    @property
    def state_names(self) -> list[str]:
        return list(self.read_report.get("state_names") or [f"x{i}" for i in range(self.dataset.state_dim)])


def trainer_parameters(robot: str, task: str | None = None, config_dir: str | Path | None = None
                       ) -> tuple[dict, list[Path]]:
    """The ``trainer`` node's parameters for ``robot``: ``<robot>.yaml``, then ``<robot>_<task>.yaml``.

    As the launch file gives them to the trainer; keys the files leave out get the trainer's defaults.
    """
    if robot not in available_robots():
        raise ConfigError(f"--robot: expected one of {available_robots()}, got {robot!r}")
    folder = Path(config_dir) if config_dir else DEFAULT_CONFIG_DIR
    robot_file = folder / f"{robot}.yaml"
    if not robot_file.is_file():
        hint = ""
        if robot == "hand":
            hint = (" Fitting hand bags needs the hand's config: its state and action names, the 'transitions' "
                    "mapping of its bags and a 'trainer' section with the model (the repository's "
                    "config/hand.yaml has them); pass --config-dir with a folder that has hand.yaml.")
        raise ConfigError(f"{robot_file}: no config for robot '{robot}' (not found).{hint}")
    files = [robot_file]
    params = node_parameters(robot_file, "trainer")
    check_trainer_values(params, str(robot_file))
    if task:
        task_file = folder / f"{robot}_{task}.yaml"
        if not task_file.is_file():
            raise ConfigError(f"{task_file}: no config for task '{task}' of robot '{robot}' (not found)")
        task_params = node_parameters(task_file, "trainer", required=False)
        check_trainer_values(task_params, str(task_file))
        merge(params, task_params)
        files.append(task_file)
    return {**TRAINER_DEFAULTS, **params}, files


def model_section(params: dict, kind: str, source: str) -> dict:
    """The model's section, checked as the trainer checks it (its dt is the control period)."""
    if kind not in MODEL_KINDS:
        raise FitError(f"--model: unknown model kind {kind!r}; expected one of {list(MODEL_KINDS)}")
    return model_section_at(require(params, kind, source, dict), float(params["dt"]), f"{source}: {kind}")


def read_transitions(bags: list[Path], params: dict, report: dict, source: str = "transitions",
                     progress: bool = False) -> TransitionDataset:
    """The trainer's ``read_transitions``: the same function with the same parameters.

    Relative topics match the bag's one topic ending in them (the trainer resolves them in its namespace).
    """
    return load_transitions(
        bags, require(params, "transitions", source, dict), float(params["dt"]),
        max_stamp_error=float(params["max_stamp_error"]), max_jump=float(params["max_jump"]),
        max_change=params.get("max_change"), angle_dims=params.get("angle_dims", ()),
        state_names=params.get("state_names"), action_names=params.get("action_names"),
        source=f"{source}: transitions", report=report, progress=progress)


def fit_bags(
    bag_paths: Sequence[str | Path],
    robot: str,
    model: str | None,
    out: str | Path,
    *,
    config_dir: str | Path | None = None,
    task: str | None = None,
    compare: bool = True,
    data_parallel: bool = False,
) -> FitRun:
    """Fit the ``model`` kind (default: the config's ``model_kind``) to the bags; save it in ``out``.

    ``data_parallel``: this process is one rank of an initialised torch.distributed job.
    """
    params, files = trainer_parameters(robot, task, config_dir)
    source = f"{files[0]} (trainer)"
    requested = model or require(params, "model_kind", source, str)
    sections = {requested: model_section(params, requested, source)}
    unconfigured = {}
    for kind in MODEL_KINDS if compare else ():
        if kind == requested:
            continue
        if kind in params:
            sections[kind] = model_section(params, kind, source)
        else:
            unconfigured[kind] = f"not compared: the config has no '{kind}' section"
    training = check_training_options(params.get("training") or {}, source=f"{source}: training")
    bags = find_bags(bag_paths)
    all_bags = bags
    if data_parallel:
        bags = _share_of(bags)
        print(f"[fit] rank {parallel.rank()} of {parallel.world_size()} (pid {os.getpid()}): "
              f"{', '.join(map(str, bags))}", flush=True)

    print(f"[fit] reading {len(bags)} bag(s) at dt {params['dt']} s", flush=True)
    read_report: dict = {}
    dataset = read_transitions(bags, params, read_report, source, progress=not data_parallel)
    split = parallel.split_shards if data_parallel else split_episodes
    try:
        train, selection, val = split(dataset, [float(params["val_fraction"]), float(params["gate_fraction"])],
                                      int(params["split_seed"]))
    except ValueError as err:
        raise FitError(f"{', '.join(map(str, all_bags))}: {err} (episodes end at resets and gaps in the recording; "
                       "record more, or several runs)") from None
    if data_parallel:
        val, _ = parallel.gather_dataset(val, numbered_as=dataset)
        read_report = _summed(parallel.gathered(read_report))
    run = FitRun(all_bags, robot, task, requested, files, params, dataset, train, val, read_report, selection,
                 totals=_totals(dataset, train, selection, data_parallel))
    totals = run.totals
    print(f"[fit] {totals['transitions']} transitions in {totals['episodes']} episodes: {totals['train']} for "
          f"training, {totals['selection']} in {totals['selection_episodes']} selection episodes (early stopping, "
          f"elites), {len(val)} in {len(val.episodes())} held-out gate episodes", flush=True)

    for kind, config in sections.items():
        run.models[kind] = _fit_one(run, kind, config, training, required=kind == requested,
                                    data_parallel=data_parallel)
    # Written once every model is fitted (and by rank 0 alone): a fit that fails or is stopped leaves no files.
    out = Path(out)
    run.out = out
    if parallel.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
    for kind, result in run.models.items():
        if result.fit is not None:
            path = out / CHECKPOINT_NAME if kind == requested else out / "compared" / f"{kind}.pt"
            if parallel.rank() == 0:
                checkpoint.save(path, result.fit.model, result.fit.config, _metrics(run, result))
            result.checkpoint = path
    run.models.update({kind: ModelFit(kind, error=why) for kind, why in unconfigured.items()})
    run.files["checkpoint"] = run.models[requested].checkpoint
    return run


def _share_of(bags: list[Path]) -> list[Path]:
    """This rank's consecutive share of the bags (so the ranks' data in rank order is the bags' order)."""
    rank, size = parallel.rank(), parallel.world_size()
    if len(bags) < size:
        raise FitError(f"{size} processes need at least {size} bags (each reads its own share), got {len(bags)}: "
                       f"{', '.join(map(str, bags))}")
    return bags[rank * len(bags) // size: (rank + 1) * len(bags) // size]


def _totals(dataset: TransitionDataset, train: TransitionDataset, selection: TransitionDataset,
            data_parallel: bool) -> dict[str, int]:
    counts = {"transitions": len(dataset), "episodes": len(dataset.episodes()), "train": len(train),
              "selection": len(selection), "selection_episodes": len(selection.episodes())}
    if data_parallel:
        summed = parallel.all_sum(torch.tensor(list(counts.values())))
        counts = dict(zip(counts, summed.tolist()))
    return counts


def _summed(reports: list[dict]) -> dict:
    """The ranks' read reports as one: counts added up (also per topic and reason), names from rank 0."""
    total = dict(reports[0])
    for report in reports[1:]:
        for key, value in report.items():
            if isinstance(value, dict):
                total[key] = _summed([total.get(key, {}), value])
            elif isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


def _fit_one(run: FitRun, kind: str, config: dict, training: dict, required: bool,
             data_parallel: bool = False) -> ModelFit:
    epochs = int(training.get("epochs", 100))
    learned = kind != "parametric"
    what = f"training {kind} (up to {epochs} epochs, early stop on held-out episodes)" if learned \
        else f"identifying {kind} (least squares)"
    print(f"[fit] {what}", flush=True)
    bar = tqdm(total=epochs, desc=kind, unit="epoch", leave=False, disable=None) \
        if learned and parallel.rank() == 0 else None

    def progress(epoch: int, stats: dict) -> None:
        bar.update(epoch - bar.n)
        bar.set_postfix(val_mse=f"{stats['val_mse']:.4g}")

    try:
        fit = fit_model(config, run.train, run.selection, score_on=run.val, training=training, horizons=run.horizons,
                        angle_dims=run.params.get("angle_dims", ()), error_scale=run.params.get("error_scale"),
                        progress=progress if bar is not None else None,
                        source=f"{run.config_files[0]} trainer.{kind}", physics=get_robot(run.robot),
                        data_parallel=data_parallel)
    except (ValueError, RuntimeError) as err:  # sysid not converging, a bad section, a diverging loss
        if required:
            raise FitError(f"fitting the requested '{kind}' model failed: {err}") from err
        print(f"[fit] {kind} failed: {err}", flush=True)
        return ModelFit(kind, error=f"{type(err).__name__}: {err}")
    finally:
        if bar is not None:
            bar.close()
    print(f"[fit] {kind}: {fit.seconds:.1f} s; held-out error {fit.val_error}", flush=True)
    return ModelFit(kind, fit)


def _metrics(run: FitRun, result: ModelFit) -> dict[str, float]:
    """What the trainer stores with a checkpoint (``TrainingRound.metrics``)."""
    metrics = dict(result.fit.metrics())
    metrics["val_score"] = result.score
    metrics["train_transitions"] = float(run.totals["train"])
    metrics["selection_transitions"] = float(run.totals["selection"])
    metrics["val_transitions"] = float(len(run.val))
    return metrics


def run_fit(bag_paths: Sequence[str], robot: str, model: str | None, out: str | None, *,
            json_path: str | None = None, config_dir: str | None = None, task: str | None = None,
            compare: bool = True, data_parallel: bool = False) -> int:
    """The ``mbrl-ros fit`` command: fit, write the report, print the table (rank 0 of a data-parallel fit)."""
    from mbrl_ros.offline.report import write_report

    out = Path(out) if out else Path("runs") / time.strftime("fit-%Y%m%d-%H%M%S")
    run = fit_bags(bag_paths, robot, model, out, config_dir=config_dir, task=task, compare=compare,
                   data_parallel=data_parallel)
    if parallel.rank() != 0:
        return 0
    table = write_report(run, json_path)
    print(table)
    print(f"[fit] checkpoint ({run.requested}): {run.files['checkpoint']}")
    print(f"[fit] report: {run.files['report']}" + (f"; JSON: {json_path}" if json_path else ""))
    return 0


def is_user_error(err: Exception) -> bool:
    """Errors that come from the input (bags, config, options), reported as one line, not a traceback."""
    return isinstance(err, (FitError, BagError, ConfigError, checkpoint.CheckpointError))
