"""ModelUpdate messages <-> (model, config, metrics), without ROS.

A model travels between processes as an ``mbrl_interfaces/ModelUpdate``: the
trainer sends candidates on ``dynamics/candidate``, the dynamics_server
publishes accepted ones on ``dynamics/model``. This module builds and reads the
message's fields as a plain dict, so the nodes only do ``ModelUpdate(**fields)``
and everything else is testable without DDS:

    fields = pack(model, config, metrics, version=3, kind="parametric")
    model, config, metrics = unpack(msg_or_fields)      # checksum verified first
    checked = validate(msg, state_dim=5, action_dim=2, max_bytes=64 << 20)  # every check, before a swap

``validate`` is the one gate a model passes before it is used, in the
dynamics_server and in every controller alike; ``UpdateThrottle`` bounds how
often a node takes an update (a flood costs it at most one check per interval).

``weights`` are the bytes of ``mbrl_ros.io.checkpoint.to_bytes``; ``checksum``
is their sha256; ``config_yaml`` is a human-readable copy of the model config
(the config that rebuilds the model travels inside the weights).

A learned policy (``mbrl_ros.core.policies.Actor``) travels the same way, as a
ModelUpdate of ``model_kind`` ``policy`` whose weights are the bytes of
``mbrl_ros.io.policy_checkpoint.to_bytes`` (``pack_policy``), on ``policy/candidate``
and ``policy/model``: ``unpack``, ``validate`` and the registry serve both, so a
policy is checksummed, versioned, checked and rolled back exactly as a model is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
import yaml

from mbrl_ros.core.model_kinds import MODEL_KINDS
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.retraining import PROBE_ROWS, non_finite_problem
from mbrl_ros.io import checkpoint, policy_checkpoint
from mbrl_ros.io.checkpoint import CheckpointError

FIELDS = ("model_kind", "version", "checksum", "metric_names", "metric_values", "config_yaml", "weights")
MAX_VERSION = 2**32 - 1  # ModelUpdate.version is a uint32
POLICY_KIND = "policy"  # the model_kind of a ModelUpdate carrying a policy (an Actor) instead of a dynamics model
DYNAMICS_KINDS = tuple(MODEL_KINDS)


class ModelUpdateError(CheckpointError):
    """A ModelUpdate is malformed, fails its checksum, or holds a broken model."""


def pack(model: DynamicsModel, config: Mapping[str, Any], metrics: Mapping[str, float] | None,
         version: int, kind: str) -> dict[str, Any]:
    """The fields of a ModelUpdate carrying ``model`` (everything but the header)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind: expected one of {list(MODEL_KINDS)}, got {kind!r}")
    if not 0 <= int(version) <= MAX_VERSION:
        raise ValueError(f"version: expected 0..{MAX_VERSION}, got {version}")
    config = plain_data(config)
    if config.get("type") != kind:
        raise ValueError(f"model kind {kind!r} differs from the config's type {config.get('type')!r}")
    metrics = {str(name): float(value) for name, value in (metrics or {}).items()}
    return _fields(kind, version, checkpoint.to_bytes(model, config, metrics), metrics, config)


def _fields(kind: str, version: int, weights: bytes, metrics: dict[str, float], config: Mapping[str, Any]) -> dict:
    return {
        "model_kind": kind,
        "version": int(version),
        "checksum": checkpoint.checksum(weights),
        "metric_names": list(metrics),
        "metric_values": list(metrics.values()),
        "config_yaml": yaml.safe_dump(plain_data(config), sort_keys=False),
        "weights": weights,
    }


def pack_policy(actor, metrics: Mapping[str, float] | None, version: int) -> dict[str, Any]:
    """The fields of a ModelUpdate carrying the policy ``actor`` (model_kind ``policy``)."""
    if not 0 <= int(version) <= MAX_VERSION:
        raise ValueError(f"version: expected 0..{MAX_VERSION}, got {version}")
    metrics = {str(name): float(value) for name, value in (metrics or {}).items()}
    return _fields(POLICY_KIND, version, policy_checkpoint.to_bytes(actor, metrics), metrics, actor.config)


def unpack(update: Mapping[str, Any] | Any, source: str = "ModelUpdate") -> tuple[DynamicsModel, dict, dict[str, float]]:
    """-> (model in eval mode, model config, metrics) from a ModelUpdate message or its fields.

    Refuses (ModelUpdateError, naming ``source``) a checksum that does not match
    the weights, non-finite weights, and a model kind that is not the config's. A ``policy``
    update gives (actor in eval mode, actor config, metrics).
    """
    fields = as_fields(update, source)
    weights = fields["weights"]
    if not weights:
        raise ModelUpdateError(f"{source}: no weights")
    actual = checkpoint.checksum(weights)
    if fields["checksum"] != actual:
        raise ModelUpdateError(
            f"{source}: checksum mismatch: message says {fields['checksum'][:12] or '(empty)'}..., "
            f"the {len(weights)} bytes of weights hash to {actual[:12]}..."
        )
    if fields["model_kind"] == POLICY_KIND:
        actor, config, _ = policy_checkpoint.from_bytes(weights, source=source)
        return actor, config, metrics_of(fields, source)
    model, config, _ = checkpoint.from_bytes(weights, source=source)
    if config.get("type") != fields["model_kind"]:
        raise ModelUpdateError(
            f"{source}: model_kind {fields['model_kind']!r} differs from the weights' config type {config.get('type')!r}"
        )
    return model, config, metrics_of(fields, source)


@dataclass(frozen=True)
class CheckedModel:
    """A model update that passed every check of ``validate``: ready to be swapped in."""

    fields: dict[str, Any]
    model: DynamicsModel
    config: dict
    metrics: dict[str, float]


def validate(update: Mapping[str, Any] | Any, state_dim: int | None = None, action_dim: int | None = None,
             max_bytes: int | None = None, source: str = "ModelUpdate",
             kinds: tuple[str, ...] | None = None) -> CheckedModel:
    """Every check a model passes before it is used, or ModelUpdateError naming ``source`` and what is wrong.

    In order: the message's fields, its model_kind (one of ``kinds``: the dynamics models where a model
    is expected, ``(POLICY_KIND,)`` where a policy is; None: any), the size of its weights (``max_bytes``), the checksum,
    a readable checkpoint whose config builds the model and whose weights fit it, the
    model kind, the dimensions (``state_dim``/``action_dim``; None: any), finite weights,
    finite predictions on a probe batch, and the metrics. Nothing the update holds can
    raise anything else: it comes from another process, maybe another machine.
    """
    fields = as_fields(update, source)
    if kinds is not None and fields["model_kind"] not in kinds:
        raise ModelUpdateError(f"{source}: model_kind {fields['model_kind']!r}: expected one of {list(kinds)}")
    size = len(fields["weights"])
    if max_bytes is not None and size > max_bytes:
        raise ModelUpdateError(f"{source}: {size} bytes of weights, over the limit of {max_bytes} (max_model_bytes)")
    try:
        model, config, metrics = unpack(fields, source)
    except ModelUpdateError:
        raise
    except CheckpointError as err:  # the weights' own checks (format, config, finite): one error type for callers
        raise ModelUpdateError(str(err)) from None
    got = (model.state_dim, model.action_dim)
    if any(want is not None and want != g for want, g in zip((state_dim, action_dim), got)):
        raise ModelUpdateError(f"{source}: model has (state_dim, action_dim) = {got}, "
                               f"expected {(state_dim, action_dim)}")
    try:
        problem = policy_problem(model) if fields["model_kind"] == POLICY_KIND else non_finite_problem(model)
    except Exception as err:  # a model whose config builds but whose forward pass fails
        problem = f"test prediction fails ({type(err).__name__}: {err})"
    if problem:
        raise ModelUpdateError(f"{source}: {problem}")
    return CheckedModel(fields, model, config, metrics)


@torch.no_grad()
def policy_problem(actor, seed: int = 0) -> str:
    """What is wrong with a policy's actions ('' if nothing): non-finite, or outside its own bounds,
    on a fixed probe batch (the zero state and context, seeded random ones)."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(PROBE_ROWS, actor.state_dim, generator=g)
    contexts = torch.randn(PROBE_ROWS, actor.context_dim, generator=g) if actor.context_dim else None
    states[0] = 0
    actions = actor(states, contexts)
    if not bool(torch.isfinite(actions).all()):
        return "test actions are not finite"
    if bool((actions < actor.action_low).any() or (actions > actor.action_high).any()):
        return "test actions leave the policy's action bounds"
    return ""


class UpdateThrottle:
    """At most one update taken every ``min_interval`` seconds; the newest one offered in between
    waits (each newer one replaces it: only the latest model matters) and is taken by ``due``."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = float(min_interval)
        self.last_taken = -math.inf
        self.pending: Any = None
        self.deferred = 0  # updates that arrived too soon (each replaced by a newer one, or taken later)

    def offer(self, update: Any, now: float) -> Any:
        """``update`` if it may be taken now, else None (it is kept for ``due``)."""
        if now - self.last_taken >= self.min_interval:
            self.last_taken, self.pending = now, None
            return update
        self.pending = update
        self.deferred += 1
        return None

    def due(self, now: float) -> Any:
        """The update kept back, once its interval has passed (else None)."""
        if self.pending is None or now - self.last_taken < self.min_interval:
            return None
        update, self.pending, self.last_taken = self.pending, None, now
        return update


def as_fields(update: Mapping[str, Any] | Any, source: str = "ModelUpdate") -> dict[str, Any]:
    """The ModelUpdate fields of a message (or a dict of them), weights as bytes."""
    if isinstance(update, Mapping):
        missing = [name for name in FIELDS if name not in update]
        if missing:
            raise ModelUpdateError(f"{source}: ModelUpdate fields: missing {missing}")
        fields = {name: update[name] for name in FIELDS}
    else:
        fields = {name: getattr(update, name) for name in FIELDS}
    try:
        weights = fields["weights"]
        # rclpy gives uint8[] as array.array('B'): tobytes() copies once, bytes() would iterate.
        fields["weights"] = weights.tobytes() if hasattr(weights, "tobytes") else bytes(weights)
        fields["version"] = int(fields["version"])
        fields["model_kind"], fields["checksum"] = str(fields["model_kind"]), str(fields["checksum"])
        fields["metric_names"] = [str(n) for n in fields["metric_names"]]
        fields["metric_values"] = [float(v) for v in fields["metric_values"]]
    except (TypeError, ValueError, AttributeError) as err:
        raise ModelUpdateError(f"{source}: malformed ModelUpdate fields ({type(err).__name__}: {err})") from None
    return fields


def metrics_of(fields: Mapping[str, Any], source: str = "ModelUpdate") -> dict[str, float]:
    names, values = list(fields["metric_names"]), list(fields["metric_values"])
    if len(names) != len(values):
        raise ModelUpdateError(f"{source}: {len(names)} metric_names but {len(values)} metric_values")
    return {str(n): float(v) for n, v in zip(names, values)}


def with_version(fields: Mapping[str, Any], version: int) -> dict[str, Any]:
    """The same model under another version number (the weights, hence the checksum, unchanged)."""
    if not 0 <= int(version) <= MAX_VERSION:
        raise ValueError(f"version: expected 0..{MAX_VERSION}, got {version}")
    return {**fields, "version": int(version)}


def summary(fields: Mapping[str, Any]) -> str:
    """One log line: ``v3 parametric 1a2b3c4d5e6f val_rmse_h1=0.0123 ...``."""
    metrics = " ".join(f"{n}={_short(v)}" for n, v in zip(fields["metric_names"], fields["metric_values"]))
    return f"v{fields['version']} {fields['model_kind']} {str(fields['checksum'])[:12]}" + (f" {metrics}" if metrics else "")


def plain_data(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and mappings made plain Python (YAML- and torch.load-safe)."""
    if isinstance(value, Mapping):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain_data(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)
