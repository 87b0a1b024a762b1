"""Model checkpoints: one file that rebuilds the model anywhere, without the training code.

A checkpoint is a ``torch.save`` of ``{format, robot, config, state_dict, metrics}``:
the model section of the config rebuilds the architecture (``build_model``;
a physics prior by the plug-in of the ``robot`` the model records) and the
state dict fills it. The same bytes travel in ``ModelUpdate.weights``, so a
controller on another machine loads a model from the topic exactly as from a
file, and the sha256 of those bytes is the model's checksum.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from mbrl_ros.core.models import build_model
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.robots import get_robot

FORMAT = "mbrl_ros.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is unreadable, of the wrong format, or holds a broken model."""


def to_bytes(model: DynamicsModel, config: dict, metrics: dict[str, float] | None = None) -> bytes:
    return pack(FORMAT, config, model.state_dict(), metrics, robot=model.physics_robot)


def from_bytes(blob: bytes, source: str = "checkpoint") -> tuple[DynamicsModel, dict, dict]:
    """-> (model in eval mode, model config, metrics). Non-finite weights are refused."""
    payload = unpack(blob, FORMAT, source)
    robot, config, state_dict = payload.get("robot", ""), payload.get("config"), payload.get("state_dict")
    for key, value, kind in (("robot", robot, str), ("config", config, dict), ("state_dict", state_dict, dict)):
        if not isinstance(value, kind):
            raise CheckpointError(f"{source}: '{key}' must be a {kind.__name__}, got {type(value).__name__}")
    try:
        model = (get_robot(robot).build_model if robot else build_model)(config, where=f"{source}: config")
    except ValueError as err:
        message = str(err) if source in str(err) else f"{source}: config: {err}"
        raise CheckpointError(message + ("" if robot else " (the checkpoint names no robot)")) from None
    except (TypeError, KeyError, AttributeError, IndexError) as err:  # a config of the wrong shape
        raise CheckpointError(f"{source}: config does not build a model ({type(err).__name__}: {err})") from None
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{source}: weights do not fit the config's model: {err}") from None
    check_finite(model, source)
    metrics = payload.get("metrics", {})
    return model.eval(), config, metrics if isinstance(metrics, dict) else {}


def pack(format: str, config: dict, state_dict: dict, metrics: dict | None, robot: str = "") -> bytes:
    """The bytes of a checkpoint of ``format`` (models here, policies in ``policy_checkpoint``); ``robot``: the
    robot whose plug-in rebuilds what the config describes ('' if none is needed)."""
    buffer = io.BytesIO()
    torch.save({"format": format, "robot": robot, "config": config, "state_dict": state_dict,
                "metrics": dict(metrics or {})}, buffer)
    return buffer.getvalue()


def unpack(blob: bytes, format: str, source: str) -> dict:
    """The payload of checkpoint bytes, checked to be of ``format``."""
    try:
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a corrupt file
        raise CheckpointError(f"{source}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{source}: expected format {format!r}, found {found!r}")
    return payload


def check_finite(model: DynamicsModel, source: str = "model") -> None:
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite values in {bad}")


def checksum(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def save(path: str | os.PathLike, model: DynamicsModel, config: dict, metrics: dict | None = None) -> str:
    return write_atomically(path, to_bytes(model, config, metrics))


def load(path: str | os.PathLike) -> tuple[DynamicsModel, dict, dict]:
    return from_bytes(read_bytes(path), source=str(path))


def write_atomically(path: str | os.PathLike, blob: bytes) -> str:
    """Write via a temp file and a rename, so a crash never leaves half a checkpoint; returns the checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return checksum(blob)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror}") from None
