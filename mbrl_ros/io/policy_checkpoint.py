"""Policy checkpoints: one file that rebuilds the actor anywhere, without the training code.

The same shape as model checkpoints (``mbrl_ros.io.checkpoint``): a ``torch.save``
of ``{format, config, state_dict, metrics}``, where ``config`` is the actor's
(``Actor.config``: sizes, bounds, features, network) and rebuilds it through
``build_actor``. The bytes are what travels on a topic; their sha256 is the
policy's checksum. Loading refuses anything that could not act safely: another
format, weights that do not fit the config, non-finite values, or a normaliser
with a non-positive scale.
"""

from __future__ import annotations

import os

from mbrl_ros.core.policies.actor import Actor, build_actor
from mbrl_ros.io.checkpoint import CheckpointError, check_finite, pack, read_bytes, unpack, write_atomically

__all__ = ["FORMAT", "from_bytes", "load", "save", "to_bytes"]

FORMAT = "mbrl_ros.policy/1"


def to_bytes(actor: Actor, metrics: dict[str, float] | None = None) -> bytes:
    return pack(FORMAT, dict(actor.config), actor.state_dict(), metrics)


def from_bytes(blob: bytes, source: str = "policy checkpoint") -> tuple[Actor, dict, dict]:
    """-> (actor in eval mode, actor config, metrics)."""
    payload = unpack(blob, FORMAT, source)
    try:
        actor = build_actor(payload.get("config"), where=f"{source}: config")
        actor.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: {err}") from None
    check_finite(actor, source)
    if not bool((actor.feature_std > 0).all()):
        raise CheckpointError(f"{source}: feature_std has values <= 0")
    return actor.eval(), payload["config"], payload.get("metrics", {})


def save(path: str | os.PathLike, actor: Actor, metrics: dict | None = None) -> str:
    """Write atomically; returns the checksum."""
    return write_atomically(path, to_bytes(actor, metrics))


def load(path: str | os.PathLike) -> tuple[Actor, dict, dict]:
    return from_bytes(read_bytes(path), source=str(path))
