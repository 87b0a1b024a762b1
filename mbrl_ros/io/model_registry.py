"""The dynamics_server's models (and policies), without ROS: what is deployed, what came before, versions.

``ModelRegistry.offer`` checks a candidate ModelUpdate (``model_update.validate``:
size, checksum, loadable, finite weights, the expected dimensions, finite test
predictions) and, if it passes, makes it the current model under the next version number. The models
it replaced are kept, newest first, so ``rollback`` can re-deploy the previous
one (under a new version: versions only increase, so a controller that
ignores versions it has seen still swaps). The server keeps two: one for
dynamics models, one (``kinds=("policy",)``) for policies. ``predict_flat`` answers a batched
PredictBatch request with the current model.
"""

from __future__ import annotations

import base64
import collections
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from mbrl_ros.core.data import as_rows
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.retraining import non_finite_problem
from mbrl_ros.io.checkpoint import CheckpointError
from mbrl_ros.io.model_update import MAX_VERSION, CheckedModel, as_fields, summary, validate, with_version


@dataclass(frozen=True)
class DeployedModel(CheckedModel):
    """A model the server publishes: its ModelUpdate fields (version included) and the loaded model."""

    @property
    def version(self) -> int:
        return self.fields["version"]

    @property
    def checksum(self) -> str:
        return self.fields["checksum"]

    def describe(self) -> str:
        return summary(self.fields)


@dataclass(frozen=True)
class Verdict:
    """What ``offer`` did: ``status`` is accepted, rejected (a broken model) or ignored (already current, or
    a model a rollback replaced)."""

    status: str
    reason: str
    deployed: DeployedModel | None = None
    candidate: str = ""  # the candidate as it described itself (version, kind, checksum, metrics), if readable

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


class NoPreviousModel(RuntimeError):
    """Rollback asked for, but no earlier good model is kept."""


@dataclass
class ModelRegistry:
    """The current model, the good ones before it (up to ``history_size``), and the counters."""

    state_dim: int | None = None  # the dims a model must have (None: any)
    action_dim: int | None = None
    history_size: int = 5
    max_bytes: int | None = None  # the largest weights accepted (None: any)
    kinds: tuple[str, ...] | None = None  # the model_kinds taken (the dynamics models, or ("policy",)); None: any
    current: DeployedModel | None = None
    accepted: int = 0
    rejected: int = 0
    rollbacks: int = 0
    last_decision: str = ""  # accepted | rejected | ignored | rolled back
    last_reason: str = ""
    last_candidate: str = ""  # the last offered candidate as it described itself
    _history: collections.deque = field(default_factory=collections.deque, repr=False)
    _last_version: int = 0
    _rolled_back: dict = field(default_factory=dict, repr=False)  # checksum -> the version a rollback replaced

    def __post_init__(self) -> None:
        if self.history_size < 1:
            raise ValueError(f"history_size: expected >= 1, got {self.history_size}")
        self._history = collections.deque(maxlen=self.history_size)

    @property
    def previous(self) -> list[DeployedModel]:
        """The models rollback can return to, newest first."""
        return list(self._history)

    def offer(self, update: Mapping[str, Any] | Any, source: str = "candidate") -> Verdict:
        """Check a candidate (message or fields) with ``validate``; if good, deploy it as the next version."""
        described = ""
        try:
            fields = as_fields(update, source)
            described = summary(fields)
            if self.current is not None and fields["checksum"] == self.current.checksum:
                return self._note(Verdict("ignored", f"same checksum as the current model v{self.current.version}",
                                          candidate=described))
            if fields["checksum"] in self._rolled_back:  # re-delivered (a latched candidate after a restart)
                return self._note(Verdict("ignored", f"a rollback replaced this model (v{self._rolled_back[fields['checksum']]})",
                                          candidate=described))
            checked = validate(fields, self.state_dim, self.action_dim, self.max_bytes, source, self.kinds)
        except CheckpointError as err:
            self.rejected += 1
            return self._note(Verdict("rejected", str(err), candidate=described))
        deployed = DeployedModel(with_version(checked.fields, self._next_version()), checked.model, checked.config,
                                 checked.metrics)
        if self.current is not None:
            self._history.appendleft(self.current)
        self.current = deployed
        self.accepted += 1
        return self._note(Verdict("accepted", "passed every check", deployed, described))

    def rollback(self) -> DeployedModel:
        """Re-deploy the previous good model as a new version; the current one is dropped."""
        if not self._history:
            raise NoPreviousModel(
                "no previous model to roll back to" if self.current is not None
                else "no model deployed yet, nothing to roll back"
            )
        previous, replaced = self._history.popleft(), self.current
        self._rolled_back[replaced.checksum] = replaced.version
        self.current = DeployedModel(with_version(previous.fields, self._next_version()),
                                     previous.model, previous.config, previous.metrics)
        self.rollbacks += 1
        self.last_decision = "rolled back"
        self.last_reason = (f"rolled back to the model of v{previous.version} as v{self.current.version} "
                            f"(replacing v{replaced.version} {replaced.checksum[:12]})")
        return self.current

    def save(self, path: str | os.PathLike, owner: Mapping[str, Any] | None = None) -> None:
        """The current model, the history and the last version number, to ``path`` (JSON, weights in base64),
        written to a temporary file and renamed: a kill mid-write leaves the previous file. ``owner``: what the
        models are for (the robot, its state and action names); ``restore`` takes them back only for the same."""
        def entry(model: DeployedModel) -> dict:
            return {**model.fields, "weights": base64.b64encode(model.fields["weights"]).decode("ascii")}

        state = {"last_version": self._last_version, "current": None if self.current is None else entry(self.current),
                 "history": [entry(m) for m in self._history], "rolled_back": self._rolled_back,
                 "owner": dict(owner or {})}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(state))
        os.replace(temporary, path)

    def restore(self, path: str | os.PathLike, owner: Mapping[str, Any] | None = None) -> bool:
        """What ``save`` wrote, each model checked again as a candidate is; False (nothing changed) when there is
        no file. A file that cannot be read, was saved for another ``owner`` (another robot in the same run
        folder: its models may have the same sizes) or holds a model that fails a check raises CheckpointError
        naming the file."""
        path = Path(path)
        if not path.is_file():
            return False
        try:
            state = json.loads(path.read_text())
            saved = [state["current"], *state["history"]] if state["current"] is not None else []
            last_version = int(state["last_version"])
            rolled_back = {str(checksum): int(version) for checksum, version in state["rolled_back"].items()}
            saved_owner = state["owner"]
            if dict(owner or {}) != saved_owner:
                raise CheckpointError(f"{path}: saved for {saved_owner}, not for {dict(owner or {})}")
            models = []
            for fields in saved:
                fields = {**fields, "weights": base64.b64decode(fields["weights"])}
                checked = validate(fields, self.state_dim, self.action_dim, self.max_bytes, f"{path} v{fields['version']}",
                                   self.kinds)
                models.append(DeployedModel(checked.fields, checked.model, checked.config, checked.metrics))
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: not a saved model registry ({type(err).__name__}: {err})") from None
        self._last_version, self._rolled_back = last_version, rolled_back
        self.current = models[0] if models else None
        self._history = collections.deque(models[1:], maxlen=self.history_size)
        return True

    def _next_version(self) -> int:
        if self._last_version >= MAX_VERSION:
            raise ValueError("version numbers exhausted (uint32)")
        self._last_version += 1
        return self._last_version

    def _note(self, verdict: Verdict) -> Verdict:
        self.last_decision, self.last_reason, self.last_candidate = verdict.status, verdict.reason, verdict.candidate
        return verdict


def check_model_finite(model: DynamicsModel, source: str = "model") -> None:
    """Raise CheckpointError naming ``source`` if the model's weights or test predictions are non-finite."""
    problem = non_finite_problem(model)
    if problem:
        raise CheckpointError(f"{source}: {problem}")


class PredictRequestError(ValueError):
    """A PredictBatch request the current model cannot answer; the message says why."""


@torch.no_grad()
def predict_flat(model: DynamicsModel, state_dim: int, action_dim: int, states, actions,
                 max_batch: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """PredictBatch with flat row-major float64 buffers -> (next_states, spread or None), flat float64."""
    if (state_dim, action_dim) != (model.state_dim, model.action_dim):
        raise PredictRequestError(
            f"bad dimensions: request has state_dim={state_dim}, action_dim={action_dim}; "
            f"the model has state_dim={model.state_dim}, action_dim={model.action_dim}"
        )
    if max_batch is not None and (len(states) > max_batch * state_dim or len(actions) > max_batch * action_dim):
        # Refused before any copy: an oversized request costs no memory beyond the message itself.
        raise PredictRequestError(f"request of {len(states)} state values and {len(actions)} action values is over "
                                  f"the limit of {max_batch} rows (max_batch)")
    states = np.asarray(states, dtype=np.float64).ravel()
    actions = np.asarray(actions, dtype=np.float64).ravel()
    batch = states.size // state_dim
    if states.size == 0 or states.size % state_dim or actions.size != batch * action_dim:
        raise PredictRequestError(
            f"bad dimensions: {states.size} state values (state_dim={state_dim}) and "
            f"{actions.size} action values (action_dim={action_dim}) are not the same whole number of rows"
        )
    if max_batch is not None and batch > max_batch:
        raise PredictRequestError(f"batch of {batch} rows is over the limit of {max_batch} (max_batch)")
    dtype = _float_dtype(model)
    try:
        s = as_rows("states", states.reshape(batch, state_dim), state_dim, dtype=dtype)
        a = as_rows("actions", actions.reshape(batch, action_dim), action_dim, dtype=dtype, rows=batch)
    except ValueError as err:
        raise PredictRequestError(str(err)) from None
    prediction = model.predict(s, a)
    next_states = prediction.mean.to(torch.float64).numpy().ravel()
    spread = None if prediction.spread is None else prediction.spread.to(torch.float64).numpy().ravel()
    return next_states, spread


def _float_dtype(model: DynamicsModel) -> torch.dtype:
    """The dtype a model computes in: that of its first float parameter or buffer."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()
