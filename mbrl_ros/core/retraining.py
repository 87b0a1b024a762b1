"""Online retraining, without ROS: when to train, how to validate, whether to deploy.

The trainer node calls these; they only need the core.

- ``RetrainSchedule``: the first model once ``first_at`` transitions exist,
  then a new one every ``every`` new transitions.
- ``split_episodes``: whole episodes go to each set by a hash of the
  episode's identity (its first transition), not its position, so an episode
  stays in its set as the dataset grows or is read again. A random re-split
  each round would put episodes the deployed model was fitted on into the
  held-out sets, flattering it against every candidate.
- ``train_candidate``: three sets of episodes. The candidate is fitted with
  ``fit_model`` (the one fitting function) on the training episodes; the
  selection episodes pick its early-stopping epoch and elites; the gate
  episodes, which neither the candidate nor the deployed model has seen,
  score both with the same open-loop multi-step error, and that decides
  (``decide``). Scored on its own selection episodes a candidate is flattered:
  they chose it. A candidate with non-finite weights or predictions
  (``non_finite_problem``) is rejected whatever its score. ``recent_from``:
  the transitions recorded since the last round (rows from there on) are
  held out of fitting and selection too and join the gate, so the gate
  also scores where the controller drives now: a fifth of the episodes by
  hash are mostly the random exploration's, and on the race a candidate
  could win there by a few per cent while it predicted the controller's
  fast laps far worse.
- ``PerBagTransitions``: the transitions of each closed bag, read once. A
  closed bag (one with metadata.yaml) never changes, so each training round
  only reads the bags that are new since the last look.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mbrl_ros.core.data import MultiStepError, TransitionDataset, multistep_error
from mbrl_ros.core.fitting import FitResult, fit_model
from mbrl_ros.core.models import Physics
from mbrl_ros.core.models.base import DynamicsModel


@dataclass(frozen=True)
class RetrainSchedule:
    first_at: int  # transitions before the first model (the random exploration budget)
    every: int  # new transitions between later models

    def __post_init__(self) -> None:
        if self.first_at < 1 or self.every < 1:
            raise ValueError(f"RetrainSchedule: first_at and every must be >= 1, got {self.first_at}, {self.every}")

    def due(self, transitions: int, trained_at: int | None) -> bool:
        """Is a training round due with ``transitions`` now, the last round having seen ``trained_at``?"""
        if trained_at is None:
            return transitions >= self.first_at
        return transitions - trained_at >= self.every


def split_episodes(dataset: TransitionDataset, fractions: Sequence[float], seed: int = 0
                   ) -> list[TransitionDataset]:
    """``[rest, part 1, part 2, ...]`` by whole episodes, part k holding about ``fractions[k]`` of them.

    Each episode's set is fixed by a hash of ``seed`` and its identity: the
    bytes of its first transition (state, action, next state), the same
    however the data is numbered, read or grown. Every set gets at least one
    episode (with few episodes the fractions are only approximate; the
    episodes whose draws came closest fill an empty set). Needs
    ``len(fractions) + 1`` episodes.
    """
    if any(not 0.0 < f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"held-out fractions: expected values in (0, 1) summing to less than 1, got {list(fractions)}")
    ids = [episode for episode, _, _ in dataset.episodes()]
    if len(ids) < len(fractions) + 1:
        raise ValueError(f"splitting into {len(fractions) + 1} sets of episodes needs at least {len(fractions) + 1} "
                         f"episodes, the data has {len(ids)}")
    first_rows = {e: first for e, first, _ in dataset.episodes()}
    draw = {e: _episode_draw(dataset, first_rows[e], seed) for e in ids}
    edges = [0.0]
    for fraction in fractions:
        edges.append(edges[-1] + fraction)
    edges.append(1.0)  # set k (0: the rest) holds draws in [edges[k - 1], edges[k]) for k >= 1, the rest above
    ranges = [(edges[-2], 1.0)] + list(zip(edges[:-2], edges[1:-1]))
    sets = [[e for e in ids if lo <= draw[e] < hi] for lo, hi in ranges]
    for k, (lo, hi) in enumerate(ranges):
        if not sets[k]:  # take the closest draw from a set that can spare an episode
            donors = [e for other in sets if len(other) > 1 for e in other]
            closest = min(donors, key=lambda e: max(lo - draw[e], draw[e] - hi))
            next(other for other in sets if closest in other).remove(closest)
            sets[k].append(closest)
    return [dataset.select_episodes(members) for members in sets]


def _episode_draw(dataset: TransitionDataset, row: int, seed: int) -> float:
    """A number in [0, 1) fixed by ``seed`` and the episode's first transition."""
    first = (t[row].to(torch.float32).numpy().tobytes() for t in (dataset.states, dataset.actions, dataset.next_states))
    digest = hashlib.blake2b(b"".join(first), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / 2**64


def validation_split(dataset: TransitionDataset, val_fraction: float, seed: int = 0
                     ) -> tuple[TransitionDataset, TransitionDataset]:
    """(train, validation) by whole episodes: ``split_episodes`` into two sets."""
    train, val = split_episodes(dataset, [val_fraction], seed)
    return train, val


def error_score(error: MultiStepError) -> float:
    """One number to compare models: mean RMSE over the horizons that had windows; non-finite -> inf."""
    scored = [e if math.isfinite(e) else math.inf for h, e in error.rmse.items() if error.num_windows[h] > 0]
    return sum(scored) / len(scored) if scored else math.inf


PROBE_ROWS = 64


@torch.no_grad()
def non_finite_problem(model: DynamicsModel, states: torch.Tensor | None = None,
                       actions: torch.Tensor | None = None, seed: int = 0) -> str:
    """What is non-finite about ``model`` ('' if nothing): its weights, or its predictions.

    Predictions are probed on a fixed batch (the zero state and action, seeded
    random ones) and, if given, on ``states``/``actions`` (e.g. the validation
    data, at most ``PROBE_ROWS`` rows): finite weights can still give NaN (a
    log of a negative number, an overflow), and no such model may be deployed.
    """
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        return f"non-finite values in the weights {bad}"
    dtype = next((t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()),
                 torch.get_default_dtype())
    g = torch.Generator().manual_seed(seed)
    probe_s = torch.randn(PROBE_ROWS, model.state_dim, generator=g, dtype=dtype)
    probe_a = torch.rand(PROBE_ROWS, model.action_dim, generator=g, dtype=dtype) * 2 - 1
    probe_s[0], probe_a[0] = 0, 0
    if states is not None and actions is not None and len(states):
        probe_s = torch.cat([probe_s, states[:PROBE_ROWS].to(dtype)])
        probe_a = torch.cat([probe_a, actions[:PROBE_ROWS].to(dtype)])
    was_training = model.training
    model.eval()
    try:
        prediction = model.predict(probe_s, probe_a)
    finally:
        model.train(was_training)
    for name, value in (("next states", prediction.mean), ("spread", prediction.spread)):
        if value is not None and not bool(torch.isfinite(value).all()):
            row = int((~torch.isfinite(value)).any(dim=-1).nonzero()[0])
            return f"test prediction gives non-finite {name} (probe row {row} of {len(probe_s)})"
    return ""


@dataclass(frozen=True)
class Decision:
    accept: bool
    reason: str
    candidate_score: float
    current_score: float | None


def decide(candidate: MultiStepError, current: MultiStepError | None, min_improvement: float = 0.0) -> Decision:
    """Deploy the candidate only if its score beats the current model's by ``min_improvement`` (relative)."""
    if not 0.0 <= min_improvement < 1.0:
        raise ValueError(f"min_improvement: expected a value in [0, 1), got {min_improvement}")
    ours = error_score(candidate)
    if not math.isfinite(ours):
        return Decision(False, "candidate's validation error is not finite", ours, None)
    if current is None:
        return Decision(True, f"no current model; candidate scores {ours:.4g}", ours, None)
    theirs = error_score(current)
    if not math.isfinite(theirs):
        return Decision(True, f"candidate scores {ours:.4g}, the current model's error is not finite", ours, theirs)
    change = f"{(ours - theirs) / theirs:+.1%}" if theirs > 0 else "n/a"
    if ours < theirs * (1.0 - min_improvement):
        return Decision(True, f"better: candidate scores {ours:.4g} vs current {theirs:.4g} ({change})", ours, theirs)
    needed = f" (needs {min_improvement:.0%} better)" if min_improvement else ""
    return Decision(False, f"not better: candidate scores {ours:.4g} vs current {theirs:.4g} ({change}){needed}",
                    ours, theirs)


@dataclass
class TrainingRound:
    """One round's outcome: the fit, both models' errors on the gate episodes (``fit.val_error``,
    ``current_error``: ``val_*``), and the decision."""

    fit: FitResult
    current_error: MultiStepError | None
    decision: Decision
    train_transitions: int
    val_transitions: int  # the gate's
    val_episodes: list[int] = field(default_factory=list)  # the gate's
    selection_transitions: int = 0
    recent_transitions: int = 0  # of the gate's: rows recorded since the last round (``recent_from``)

    def metrics(self) -> dict[str, float]:
        """The candidate's metrics as a ModelUpdate carries them."""
        metrics = dict(self.fit.metrics())
        metrics["val_score"] = self.decision.candidate_score
        metrics["train_transitions"] = float(self.train_transitions)
        metrics["selection_transitions"] = float(self.selection_transitions)
        metrics["val_transitions"] = float(self.val_transitions)
        metrics["recent_transitions"] = float(self.recent_transitions)
        return metrics

    def current_metrics(self) -> dict[str, float]:
        if self.current_error is None:
            return {}
        return {f"val_rmse_h{h}": float(e) for h, e in self.current_error.rmse.items()}


def train_candidate(
    dataset: TransitionDataset,
    model_config: Mapping[str, Any],
    current: DynamicsModel | None = None,
    *,
    val_fraction: float = 0.2,
    gate_fraction: float = 0.2,
    training: Mapping[str, Any] | None = None,
    horizons: Sequence[int] = (1, 5, 10, 20),
    angle_dims: Sequence[int] = (),
    error_scale: Sequence[float] | None = None,
    min_improvement: float = 0.0,
    split_seed: int = 0,
    source: str = "trainer",
    physics: Physics | None = None,
    progress: Callable[[int, dict], bool | None] | None = None,
    recent_from: int | None = None,
) -> TrainingRound:
    """Fit a candidate on the training episodes, early-stopped and its elites chosen on the selection
    episodes (``val_fraction`` of them), and judge it against ``current`` on the gate episodes
    (``gate_fraction``), which neither model has seen. ``physics``: the robot's, for the model kinds
    built on its physics prior. ``progress``: called after every training epoch (``fit_model``); True
    stops training there.

    ``recent_from``: the number of transitions the last round saw (None: none before, or no hold-out).
    The rows recorded since are neither fitted nor used for selection; they join the gate, which the
    deployed model (fitted on at most those older rows) has not seen either. Where that would leave the
    training or selection set empty, nothing is held out beyond the gate episodes."""
    train, selection, gate = split_episodes(dataset, [val_fraction, gate_fraction], split_seed)
    recent_rows = 0
    if recent_from is not None and recent_from < len(dataset):
        older = torch.arange(len(dataset)) < recent_from
        in_gate = torch.isin(dataset.episode_ids, torch.as_tensor([e for e, _, _ in gate.episodes()], dtype=torch.long))
        fit_rows = {name: torch.isin(dataset.episode_ids, torch.as_tensor([e for e, _, _ in part.episodes()],
                                                                          dtype=torch.long)) & older
                    for name, part in (("train", train), ("selection", selection))}
        if all(bool(rows.any()) for rows in fit_rows.values()):
            recent = ~older & ~in_gate
            recent_rows = int(recent.sum())
            train, selection = (dataset._subset(fit_rows[name]) for name in ("train", "selection"))
            gate = dataset._subset(in_gate | recent)
    fit = fit_model(model_config, train, selection, score_on=gate, training=training, horizons=horizons,
                    angle_dims=angle_dims, error_scale=error_scale, source=source, physics=physics, progress=progress)
    current_error = None
    note = ""
    if current is not None:
        if (current.state_dim, current.action_dim) == (dataset.state_dim, dataset.action_dim):
            current_error = multistep_error(current, gate, horizons, angle_dims=angle_dims, scale=error_scale)
        else:
            note = (f"; the current model's dims ({current.state_dim}, {current.action_dim}) do not fit the data's "
                    f"({dataset.state_dim}, {dataset.action_dim}), so it was not scored")
    decision = decide(fit.val_error, current_error, min_improvement)
    problem = non_finite_problem(fit.model, gate.states, gate.actions)
    if problem:  # never deployed, whatever its score says
        decision = Decision(False, f"candidate not deployable: {problem}", decision.candidate_score,
                            decision.current_score)
    if recent_rows:
        note = (f"; gate: {len(gate)} transitions, {recent_rows} of them recorded since the last round (held out of "
                f"fitting)") + note
    if note:
        decision = Decision(decision.accept, decision.reason + note, decision.candidate_score, decision.current_score)
    gate_ids = [episode for episode, _, _ in gate.episodes()]
    return TrainingRound(fit, current_error, decision, len(train), len(gate), gate_ids, len(selection), recent_rows)


class PerBagTransitions:
    """The transitions of each closed bag, read once; together as one dataset.

    ``read(bag)`` turns one bag into a TransitionDataset (the trainer passes the
    same reader ``mbrl-ros fit`` uses). A bag is re-read only if its
    metadata.yaml changed (a repaired bag); a bag that cannot be read is
    remembered with its error and skipped, so one bad bag loses no other data.
    An OSError (a file the logger's disk or NFS mount cannot give now) may pass:
    the bag is tried again at the next ``update``, ``max_attempts`` times in
    all, then remembered as unreadable like a bad bag (``errors`` says so),
    until its metadata.yaml changes.
    Reading bag by bag, an episode that runs across a split into the next bag
    becomes two episodes, and the one transition that straddles the split is
    lost; the price of never re-parsing old bags.
    """

    def __init__(self, read: Callable[[Path], TransitionDataset], max_attempts: int = 3) -> None:
        if max_attempts < 1:
            raise ValueError(f"PerBagTransitions: max_attempts must be >= 1, got {max_attempts}")
        self.read = read
        self.max_attempts = max_attempts
        self.bags: list[Path] = []
        self.errors: dict[Path, str] = {}
        self._read: dict[Path, tuple[int, TransitionDataset | None]] = {}  # bag -> (metadata mtime, data)
        self._failed: dict[Path, tuple[int, int]] = {}  # bag -> (metadata mtime, OSErrors in a row)
        self.dataset: TransitionDataset | None = None
        # dataset's episode id -> (bag, the id read(bag) gave it): what a bag says of its own episodes (a goal)
        self.origins: dict[int, tuple[Path, int]] = {}
        self.reads = 0  # bags read so far (each new or changed bag once)

    def update(self, bags: Sequence[os.PathLike | str]) -> list[Path]:
        """Look at the closed ``bags`` (in recording order); read the new ones. -> the bags read now."""
        bags = [Path(b) for b in bags]
        fresh = []
        for bag in bags:
            stamp = _metadata_mtime(bag)
            if bag in self._read and self._read[bag][0] == stamp:
                continue
            fresh.append(bag)
            self.reads += 1
            self.errors.pop(bag, None)
            try:
                data = self.read(bag)
                self._failed.pop(bag, None)
            except ValueError as err:  # BagError: a bag without the topics, a corrupt file, no transitions
                data = None
                self.errors[bag] = str(err)
                self._failed.pop(bag, None)
            except OSError as err:
                failed_stamp, attempts = self._failed.get(bag, (stamp, 0))
                attempts = attempts + 1 if failed_stamp == stamp else 1
                self._failed[bag] = (stamp, attempts)
                if attempts < self.max_attempts:
                    self.errors[bag] = f"{bag}: {err} (attempt {attempts} of {self.max_attempts}; tried again next look)"
                    continue
                data = None
                self.errors[bag] = (f"{bag}: {err} (gave up after {attempts} attempts; read again when its "
                                    "metadata.yaml changes)")
            self._read[bag] = (stamp, data)
        for gone in (set(self._read) | set(self._failed)) - set(bags):
            self._read.pop(gone, None)
            self._failed.pop(gone, None)
            self.errors.pop(gone, None)
        if fresh or bags != self.bags:
            self.dataset, self.origins = self._join(bags)
        self.bags = bags
        return fresh

    def _join(self, bags: list[Path]) -> tuple[TransitionDataset | None, dict[int, tuple[Path, int]]]:
        parts = [(bag, self._read[bag][1]) for bag in bags if bag in self._read and self._read[bag][1] is not None]
        if not parts:
            return None, {}
        first = parts[0][1]
        joined = TransitionDataset(first.state_dim, first.action_dim, first.dtype)
        origins: dict[int, tuple[Path, int]] = {}
        offset = 0
        for bag, part in parts:
            if (part.state_dim, part.action_dim) != (joined.state_dim, joined.action_dim):
                self.errors[bag] = (f"{bag}: {part.state_dim} state and {part.action_dim} action values, the bags "
                                    f"before it have {joined.state_dim} and {joined.action_dim}; left out")
                continue
            ids = part.episode_ids
            # Episodes keep their ids as long as bags are only added after them: validation stays stable.
            joined.append(part.states, part.actions, part.next_states, ids - int(ids.min()) + offset)
            origins.update((episode - int(ids.min()) + offset, (bag, episode)) for episode, _, _ in part.episodes())
            offset += int(ids.max()) - int(ids.min()) + 1
        return joined, origins


def _metadata_mtime(bag: Path) -> int:
    try:
        return (bag / "metadata.yaml").stat().st_mtime_ns
    except OSError:
        return -1
