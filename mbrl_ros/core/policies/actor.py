"""The learned policy a controller runs: a deterministic MLP squashed into the action bounds.

``Actor(states[B, nx], contexts[B, C]) -> actions[B, nu]``, and ``actor(state[nx])
-> action[nu]`` for one state, with the context (say, the goal) set once by
``set_context`` as a controller sets its cost's goal. The network sees features
built from the state and the context:

- plain state entries, with ``angle_dims`` as sin/cos (so -pi and pi look alike)
  and ``ignored_dims`` left out;
- the context entries (a goal state, fingertip targets), raw;
- for each ``relative_dims`` pair ``[i, j]``, ``state[i] - context[j]`` (as sin/cos
  of the wrapped difference when ``i`` is an angle), which a goal-reaching policy
  needs and an MLP only approximates from the raw pair.

Features are normalised by a mean and std fitted from data (``fit_normaliser``,
kept as buffers so a checkpoint carries them), and the last layer's output goes
through ``low + (high - low) * (tanh(z) + 1) / 2``: every action is inside the
bounds, whatever the weights. This is also how stable-baselines3 squashes and
rescales a SAC actor's mean, so a SAC actor converts into this one exactly.

Nothing here trains: ``build_actor(config)`` rebuilds an actor from its config
(``actor.config``) without the training code, as a checkpoint loader needs.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mbrl_ros.core.models.ensemble import _state_indices
from mbrl_ros.core.validation import check_tensor

__all__ = ["ACTIVATIONS", "Actor", "ConstantPolicy", "StopPolicy", "build_actor", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


def mlp(inputs: int, hidden_sizes: Sequence[int], outputs: int, activation: str) -> nn.Sequential:
    """``Linear, act, ..., Linear``: the layout stable-baselines3's ``create_mlp`` builds."""
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def _bounds(name: str, values: Sequence[float], size: int) -> torch.Tensor:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [float(values)] * size
    tensor = torch.as_tensor(values, dtype=torch.float32)
    if tensor.shape != (size,) or not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name}: expected {size} finite numbers (one per action dimension), got {values!r}")
    return tensor


class Actor(nn.Module):
    """Deterministic, bounded policy; see the module docstring for its features."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        action_low: Sequence[float] | float,
        action_high: Sequence[float] | float,
        context_dim: int = 0,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "relu",
        angle_dims: Sequence[int] = (),
        ignored_dims: Sequence[int] = (),
        relative_dims: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__()
        if state_dim < 1 or action_dim < 1 or context_dim < 0:
            raise ValueError(f"expected state_dim, action_dim >= 1 and context_dim >= 0, "
                             f"got {state_dim}, {action_dim}, {context_dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: expected a non-empty list of integers >= 1, got {list(hidden_sizes)}")
        low, high = _bounds("action_low", action_low, action_dim), _bounds("action_high", action_high, action_dim)
        if bool((high <= low).any()):
            raise ValueError(f"action_high must exceed action_low in every dimension, "
                             f"got low={low.tolist()} high={high.tolist()}")
        angle_dims = _state_indices("angle_dims", angle_dims, state_dim)
        ignored_dims = _state_indices("ignored_dims", ignored_dims, state_dim)
        if set(angle_dims) & set(ignored_dims):
            raise ValueError(f"ignored_dims {list(ignored_dims)} and angle_dims {list(angle_dims)} overlap")
        pairs = []
        for k, pair in enumerate(relative_dims):
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not 0 <= int(pair[0]) < state_dim or not 0 <= int(pair[1]) < context_dim):
                raise ValueError(f"relative_dims[{k}]: expected [state index < {state_dim}, "
                                 f"context index < {context_dim}], got {pair!r}")
            pairs.append((int(pair[0]), int(pair[1])))
        self.state_dim, self.action_dim, self.context_dim = int(state_dim), int(action_dim), int(context_dim)
        self.config: dict[str, Any] = dict(
            state_dim=self.state_dim, action_dim=self.action_dim, action_low=low.tolist(),
            action_high=high.tolist(), context_dim=self.context_dim, hidden_sizes=[int(h) for h in hidden_sizes],
            activation=activation, angle_dims=list(angle_dims), ignored_dims=list(ignored_dims),
            relative_dims=[list(p) for p in pairs],
        )
        plain = [d for d in range(state_dim) if d not in angle_dims and d not in ignored_dims]
        relative_plain = [p for p in pairs if p[0] not in angle_dims]
        relative_angle = [p for p in pairs if p[0] in angle_dims]
        index = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
        # Index buffers are not persistent: the config rebuilds them.
        for name, values in (("_plain", plain), ("_angles", list(angle_dims)),
                             ("_rel_state", [p[0] for p in relative_plain]),
                             ("_rel_context", [p[1] for p in relative_plain]),
                             ("_rel_angle_state", [p[0] for p in relative_angle]),
                             ("_rel_angle_context", [p[1] for p in relative_angle])):
            self.register_buffer(name, index(values), persistent=False)
        self.feature_dim = (len(plain) + 2 * len(angle_dims) + context_dim
                            + len(relative_plain) + 2 * len(relative_angle))
        self.register_buffer("feature_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feature_std", torch.ones(self.feature_dim))
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)
        # Run-time state, not part of a checkpoint.
        self.register_buffer("context", torch.zeros(context_dim), persistent=False)
        self.register_buffer("has_context", torch.zeros((), dtype=torch.bool), persistent=False)
        self.net = mlp(self.feature_dim, hidden_sizes, action_dim, activation)
        self._numpy: tuple | None = None  # act()'s NumPy copy and the tensor versions it was made from
        self._tensor_cache: list[torch.Tensor] | None = None
        with torch.no_grad():  # start near the centre of the bounds: small first actions
            self.net[-1].weight.mul_(0.01)
            self.net[-1].bias.zero_()

    # ---- features ---------------------------------------------------------------------
    def raw_features(self, states: torch.Tensor, contexts: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, nx]``, ``[B, C]`` -> ``[B, feature_dim]``, before normalisation."""
        parts = [states.index_select(-1, self._plain)]
        if len(self._angles):
            angles = states.index_select(-1, self._angles)
            parts += [torch.sin(angles), torch.cos(angles)]
        if self.context_dim:
            if contexts is None:
                raise ValueError(f"this actor reads a context of size {self.context_dim}: pass contexts "
                                 f"or call set_context first")
            parts.append(contexts)
            if len(self._rel_state):
                parts.append(states.index_select(-1, self._rel_state) - contexts.index_select(-1, self._rel_context))
            if len(self._rel_angle_state):
                # sin and cos of the raw difference: the same as of the wrapped one
                difference = (states.index_select(-1, self._rel_angle_state)
                              - contexts.index_select(-1, self._rel_angle_context))
                parts += [torch.sin(difference), torch.cos(difference)]
        return torch.cat(parts, dim=-1)

    def features(self, states: torch.Tensor, contexts: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised features: what the network (and a SAC actor being trained) sees."""
        return (self.raw_features(states, contexts) - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def fit_normaliser(self, states: torch.Tensor, contexts: torch.Tensor | None = None) -> None:
        """Feature mean and std from the states (and contexts) the policy will see; constant ones get std 1."""
        check_tensor("states", states, (None, self.state_dim))
        if states.shape[0] < 2:
            raise ValueError(f"fit_normaliser: need at least 2 states, got {states.shape[0]}")
        if self.context_dim:
            check_tensor("contexts", contexts, (states.shape[0], self.context_dim))
        features = self.raw_features(states.to(self.feature_mean), None if contexts is None
                                     else contexts.to(self.feature_mean))
        std = features.std(0)
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    # ---- acting -----------------------------------------------------------------------
    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        return self.action_low + (self.action_high - self.action_low) * (torch.tanh(raw) + 1.0) * 0.5

    def forward(self, states: torch.Tensor, contexts: torch.Tensor | None = None) -> torch.Tensor:
        """``states[B, nx]`` (or ``[nx]``) -> actions ``[B, nu]`` (or ``[nu]``); differentiable.

        Without ``contexts`` an actor that reads one uses the context from ``set_context``.
        """
        single = states.dim() == 1
        if single:
            states = states.unsqueeze(0)
            contexts = None if contexts is None else contexts.unsqueeze(0)
        if self.context_dim and contexts is None:
            if not bool(self.has_context):
                raise ValueError(f"this actor reads a context of size {self.context_dim}: pass contexts "
                                 f"or call set_context first")
            contexts = self.context.expand(states.shape[0], -1)
        actions = self.squash(self.net(self.features(states, contexts)))
        return actions[0] if single else actions

    def set_context(self, context: torch.Tensor) -> None:
        """The run-time context (a goal) used when ``forward`` gets none, e.g. from ``cost``'s goal."""
        if not self.context_dim:
            raise ValueError("this actor reads no context")
        context = torch.as_tensor(context, dtype=self.context.dtype)
        self.context.copy_(check_tensor("context", context, (self.context_dim,)))
        self.has_context.fill_(True)

    def act(self, state) -> np.ndarray:
        """One action ``[nu]`` for one state ``[nx]`` (numpy or tensor), with the context set by
        ``set_context``: the controller's call, in microseconds.

        Runs on a NumPy copy of the weights (torch's per-operation overhead is most of the
        time for one small input), rebuilt whenever a weight, buffer or the context changed:
        in-place updates (an optimiser step, ``load_state_dict``) bump a tensor's version.
        """
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.state_dim,) or not np.isfinite(state).all():
            raise ValueError(f"state: expected {self.state_dim} finite numbers, got {state.tolist()}")
        key = tuple((t._version, t.data_ptr()) for t in self._tensors())
        if self._numpy is None or self._numpy[0] != key:
            if self.context_dim and not bool(self.has_context):
                raise ValueError(f"this actor reads a context of size {self.context_dim}: call set_context first")
            self._numpy = (key, _NumpyActor(self))
        return self._numpy[1](state)

    def _tensors(self) -> list[torch.Tensor]:
        # Cached: walking the modules costs more than the NumPy forward. ``.to()`` and the
        # like go through ``_apply``, which drops the cache.
        if self._tensor_cache is None:
            self._tensor_cache = [*self.parameters(), *self.buffers()]
        return self._tensor_cache

    def _apply(self, fn, *args, **kwargs):
        self._tensor_cache, self._numpy = None, None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        c = self.config
        return (f"state_dim={c['state_dim']}, action_dim={c['action_dim']}, context_dim={c['context_dim']}, "
                f"hidden_sizes={c['hidden_sizes']}, activation={c['activation']}")


_NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


class _NumpyActor:
    """``Actor.forward`` for one state, in float64 NumPy, with everything constant folded away.

    The first layer is linear in the state and in the sin/cos of its angles once the
    context is fixed: normalisation folds into the weights, the raw context and the
    context's part of each relative feature into the bias, and the sin/cos of a
    relative angle into the angle's own sin/cos (``sin(a - g) = sin a cos g - cos a sin g``).
    So one call is one small matmul on ``[state, sin(angles), cos(angles)]`` per layer.
    """

    def __init__(self, actor: Actor) -> None:
        as_numpy = lambda t: t.detach().cpu().double().numpy().copy()  # noqa: E731
        index = lambda t: t.cpu().numpy().astype(int)  # noqa: E731
        plain, angles = index(actor._plain), index(actor._angles)
        rel_state, rel_context = index(actor._rel_state), index(actor._rel_context)
        rel_angle_state, rel_angle_context = index(actor._rel_angle_state), index(actor._rel_angle_context)
        linear = [m for m in actor.net if isinstance(m, nn.Linear)]
        mean, std = as_numpy(actor.feature_mean), as_numpy(actor.feature_std)
        first = as_numpy(linear[0].weight).T / std[:, None]  # [features, hidden]
        bias = as_numpy(linear[0].bias) - (mean / std) @ (first * std[:, None])
        nx, na = actor.state_dim, len(angles)
        rows = np.zeros((nx + 2 * na, first.shape[1]))  # acts on [state, sin(angles), cos(angles)]
        blocks = np.cumsum([0, len(plain), na, na, actor.context_dim, len(rel_state), len(rel_angle_state)])
        block = lambda k: first[blocks[k]:blocks[k + 1]]  # noqa: E731
        np.add.at(rows, plain, block(0))
        rows[nx:nx + na] += block(1)
        rows[nx + na:] += block(2)
        if actor.context_dim:
            context = as_numpy(actor.context)
            bias = bias + context @ block(3)
            np.add.at(rows, rel_state, block(4))
            bias = bias - context[rel_context] @ block(4)
            position = {int(d): k for k, d in enumerate(angles)}
            sines, cosines = first[blocks[5]:blocks[5] + len(rel_angle_state)], first[blocks[5] + len(rel_angle_state):]
            for k, (i, j) in enumerate(zip(rel_angle_state, rel_angle_context)):
                a, g = position[int(i)], context[j]
                rows[nx + a] += np.cos(g) * sines[k] + np.sin(g) * cosines[k]
                rows[nx + na + a] += -np.sin(g) * sines[k] + np.cos(g) * cosines[k]
        self.angles = angles
        self.layers = [(rows, bias)] + [(as_numpy(m.weight).T, as_numpy(m.bias)) for m in linear[1:]]
        self.activation = _NUMPY_ACTIVATIONS[actor.config["activation"]]
        self.low = as_numpy(actor.action_low)
        self.half_range = (as_numpy(actor.action_high) - self.low) / 2

    def __call__(self, state: np.ndarray) -> np.ndarray:
        if len(self.angles):
            angles = state[self.angles]
            state = np.concatenate((state, np.sin(angles), np.cos(angles)))
        x = state
        for weight, bias in self.layers[:-1]:
            x = self.activation(x @ weight + bias)
        weight, bias = self.layers[-1]
        return self.low + self.half_range * (np.tanh(x @ weight + bias) + 1.0)


class ConstantPolicy(nn.Module):
    """Always the same action: the reference a first learned policy must beat (say, the centre of the bounds)."""

    def __init__(self, action: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("action", torch.as_tensor(action, dtype=torch.float32))

    def forward(self, states: torch.Tensor, contexts: torch.Tensor | None = None) -> torch.Tensor:
        return self.action.expand(*states.shape[:-1], -1)


class StopPolicy(nn.Module):
    """A robot's stop (``core.stop.Stop``: the car brakes to a standstill and holds it) as a policy: what the
    stack does without one, so the reference a first learned policy must beat. Each row's command comes from
    that state alone (a stop reset per row), clamped to the action bounds as the controller sends it; numpy,
    row by row: for validation's few hundred states, not for training."""

    def __init__(self, stop, action_low: Sequence[float], action_high: Sequence[float]) -> None:
        super().__init__()
        self.stop = stop
        self.low, self.high = np.asarray(action_low, dtype=float), np.asarray(action_high, dtype=float)

    def forward(self, states: torch.Tensor, contexts: torch.Tensor | None = None) -> torch.Tensor:
        rows = states.detach().reshape(-1, states.shape[-1]).double().cpu().numpy()
        actions = []
        for row in rows:
            self.stop.reset()
            actions.append(np.clip(self.stop.command(row, None), self.low, self.high))
        out = torch.as_tensor(np.array(actions).reshape(len(rows), -1), dtype=states.dtype, device=states.device)
        return out.reshape(*states.shape[:-1], -1)


ACTOR_KEYS = ("state_dim", "action_dim", "action_low", "action_high", "context_dim", "hidden_sizes",
              "activation", "angle_dims", "ignored_dims", "relative_dims")


def build_actor(config: Mapping[str, Any], where: str = "actor") -> Actor:
    """An untrained actor from ``actor.config``-style settings; errors name the key at fault."""
    if not isinstance(config, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(ACTOR_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(ACTOR_KEYS)}")
    missing = [k for k in ("state_dim", "action_dim", "action_low", "action_high") if k not in config]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    try:
        return Actor(**dict(config))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
