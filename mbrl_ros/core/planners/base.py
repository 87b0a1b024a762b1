"""What every receding-horizon planner shares: config, result, limits, rollout, noise.

A planner plans through one ``DynamicsModel`` and one ``TrajectoryCost``:
``plan(state[nx]) -> PlanResult``, called once per control cycle. It keeps its
own warm start (the previous solution, shifted by one step) and the previously
applied action, which rate limits and the smoothness cost measure against;
``reset()`` forgets both (a new episode, or after an e-stop).

Action bounds and per-step rate limits are enforced on everything a planner
returns, not only on the first action, so a controller that falls back to the
second action of an old plan still obeys them.
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from mbrl_ros.core.compile_cache import use_compile_cache
from mbrl_ros.core.counter_random import counter_gaussian
from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.models.base import DynamicsModel, NumpyDynamics, TimeMajorDynamics
from mbrl_ros.core.validation import check_tensor

__all__ = [
    "PlannerConfig",
    "PlanResult",
    "Planner",
    "limit_actions",
    "rollout",
    "TimeMajorDynamics",
    "time_major_dynamics",
    "checked_numpy_dynamics",
    "counter_gaussian",
]


# --------------------------------------------------------------------------- config
@dataclass
class PlannerConfig:
    """Settings every planner has. Per-dimension values accept a scalar (all dims) or a list."""

    horizon: int = 30
    action_low: float | list[float] = -1.0
    action_high: float | list[float] = 1.0
    # Largest |u[t] - u[t-1]| per step and dimension; None: no rate limit.
    max_rate: float | list[float] | None = None
    # Warm start: what fills the last step after shifting the previous solution ("last" or "zero").
    shift_fill: str = "last"
    seed: int = 0
    # Where torch.compile keeps compiled graphs across starts (core/compile_cache.py), used when the
    # planner compiles; null: torch's default under /tmp, which a reboot loses.
    compile_cache: str | None = "~/.cache/mbrl_ros/torch_compile"

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, source: str = "planner") -> "PlannerConfig":
        """Build from a YAML mapping; unknown keys and bad values raise errors naming them."""
        values = dict(values or {})
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {valid}")
        config = cls(**values)
        config.validate(source)
        return config

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, source: str = "planner") -> None:
        """Check every value; subclasses extend with their own keys."""
        _positive_int(source, "horizon", self.horizon)
        _per_dim_ok(source, "action_low", self.action_low)
        _per_dim_ok(source, "action_high", self.action_high)
        if self.max_rate is not None:
            _per_dim_ok(source, "max_rate", self.max_rate, positive=True)
        _one_of(source, "shift_fill", self.shift_fill, ("last", "zero"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{source}: seed: expected an integer, got {self.seed!r}")
        if self.compile_cache is not None and not (isinstance(self.compile_cache, str) and self.compile_cache):
            raise ValueError(f"{source}: compile_cache: expected a directory or null, got {self.compile_cache!r}")


def _positive_int(source: str, key: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{source}: {key}: expected an integer >= {minimum}, got {value!r}")


def _real(source: str, key: str, value: Any, low: float | None = None, high: float | None = None,
          open_low: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = "" if low is None else (f" {'>' if open_low else '>='} {low}")
        rng += "" if high is None else f" and <= {high}"
        raise ValueError(f"{source}: {key}: expected a finite number{rng}, got {value!r}")


def _per_dim_ok(source: str, key: str, value: Any, positive: bool = False) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{source}: {key}: expected a number or a list of numbers, got {value!r}")
    for item in items:
        _real(source, key, item, low=0.0 if positive else None, open_low=positive)


def _one_of(source: str, key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{source}: {key}: expected one of {list(choices)}, got {value!r}")


def per_dim(key: str, value: float | list[float], dim: int, like: torch.Tensor) -> torch.Tensor:
    """A config value as a [dim] tensor: scalars broadcast, lists must have ``dim`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != dim:
            raise ValueError(f"{key}: expected {dim} values (one per action dimension), got {len(value)}")
        return torch.tensor([float(v) for v in value], dtype=like.dtype, device=like.device)
    return torch.full((dim,), float(value), dtype=like.dtype, device=like.device)


# --------------------------------------------------------------------------- result
@dataclass
class PlanResult:
    """One planning step's output. ``action`` is ``nominal_actions[0]``."""

    action: torch.Tensor  # [nu], to apply now
    nominal_actions: torch.Tensor  # [H, nu], the plan
    predicted_states: torch.Tensor  # [H+1, nx], the model's rollout of the plan from the given state
    cost: float  # the plan's cost under the planner's cost
    rollouts: torch.Tensor | None = None  # [M, H+1, nx] sampled trajectories, for visualisation
    info: dict[str, Any] = field(default_factory=dict)  # planner diagnostics, "solve_ms" always


# --------------------------------------------------------------------------- pure helpers
def rollout(model: DynamicsModel, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``state[nx]`` or ``[K, nx]``, ``actions[K, H, nu]`` -> ``states[K, H+1, nx]`` via ``model.forward``."""
    x = state.expand(actions.shape[0], -1) if state.dim() == 1 else state
    states = [x]
    for t in range(actions.shape[1]):
        x = model(x, actions[:, t])
        states.append(x)
    return torch.stack(states, dim=1)


def _limit_step(
    u: torch.Tensor, before: torch.Tensor, rate: torch.Tensor | None, low: torch.Tensor, high: torch.Tensor,
    ops=torch,
) -> torch.Tensor:
    """One action within the rate window around ``before`` (where ``rate`` is given), then the bounds; torch
    tensors, or NumPy arrays with ``ops=numpy``."""
    if rate is not None:
        u = ops.maximum(ops.minimum(u, before + rate), before - rate)
    return ops.maximum(ops.minimum(u, high), low)


def limit_actions(
    actions: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    max_rate: torch.Tensor | None,
    previous: torch.Tensor,
    has_previous: torch.Tensor,
    time_major: bool = False,
) -> torch.Tensor:
    """Clamp actions to bounds and, if ``max_rate`` is given, to per-step rate limits.

    Layout ``[..., H, nu]``, or ``[H, nu, K]`` with ``time_major``. The rate window
    of step 0 is centred on ``previous`` (the action applied last cycle) when
    ``has_previous`` (a 0-d tensor, 0 or 1) is set, else it is unbounded; each
    later step's window is centred on the step before. Bounds contain the
    previous action, so clamping to the window and then to the bounds satisfies
    both. Pure tensor code with no data-dependent branches, so it compiles into
    the planners' graphs.
    """
    if time_major:
        low, high, previous = low[:, None], high[:, None], previous[:, None]
        max_rate = None if max_rate is None else max_rate[:, None]
    if max_rate is None:
        return torch.maximum(torch.minimum(actions, high), low)
    first_rate = torch.where(has_previous > 0, max_rate, torch.full_like(max_rate, float("inf")))
    time_axis = 0 if time_major else actions.dim() - 2
    steps = []
    before = previous
    for t in range(actions.shape[time_axis]):
        u = actions[t] if time_major else actions[..., t, :]
        before = _limit_step(u, before, first_rate if t == 0 else max_rate, low, high)
        steps.append(before)
    return torch.stack(steps, dim=time_axis)


# --------------------------------------------------------------------------- time-major dynamics
def time_major_dynamics(model: DynamicsModel) -> TimeMajorDynamics:
    """The fastest time-major view of ``model`` (its ``time_major()``), checked first against ``model.forward``."""
    fast = model.time_major()
    if type(fast) is TimeMajorDynamics:
        return fast
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        dtype, device = model_dtype_device(model)
        states = (torch.rand(6, model.state_dim, generator=generator, dtype=dtype) * 2 - 1).to(device)
        actions = (torch.rand(3, model.action_dim, 6, generator=generator, dtype=dtype) * 2 - 1).to(device)
        # On a copy: a model with counter-based random draws (the ensemble's TS1) then draws the same for both.
        expected = TimeMajorDynamics(copy.deepcopy(model)).rollout(states.T, actions)
        if not torch.allclose(fast.rollout(states.T, actions), expected, atol=1e-4, rtol=1e-4):
            warnings.warn(f"{type(fast).__name__} does not match {type(model).__name__}.forward; using forward",
                          RuntimeWarning, stacklevel=2)
            return TimeMajorDynamics(model)
    return fast


def checked_numpy_dynamics(model: DynamicsModel) -> NumpyDynamics | None:
    """``model.numpy_dynamics()`` if it has one that matches ``model.forward`` and ``model.jacobians``, else None
    (with a warning where it has one that does not)."""
    fast = model.numpy_dynamics()
    if fast is None:
        return None
    generator = torch.Generator().manual_seed(0)
    dtype, device = model_dtype_device(model)
    states = (torch.rand(6, model.state_dim, generator=generator, dtype=dtype) * 2 - 1).to(device)
    actions = (torch.rand(6, model.action_dim, generator=generator, dtype=dtype) * 2 - 1).to(device)
    with torch.no_grad():
        expected = model(states, actions).double().cpu().numpy()
    with torch.enable_grad():
        expected_jacobians = [j.detach().double().cpu().numpy() for j in model.jacobians(states, actions)]
    as64 = [t.double().cpu().numpy() for t in (states, actions)]
    got = fast.step(as64[0].T, as64[1].T).T
    got_jacobians = fast.jacobians(*as64)
    if not (np.allclose(got, expected, atol=1e-4, rtol=1e-4)
            and all(np.allclose(g, e, atol=1e-4, rtol=1e-4) for g, e in zip(got_jacobians, expected_jacobians))):
        warnings.warn(f"{type(fast).__name__} does not match {type(model).__name__}.forward/jacobians; "
                      "using the torch path", RuntimeWarning, stacklevel=2)
        return None
    return fast


def shift_sequence(actions: torch.Tensor, fill: str, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Warm start: drop the first step of ``actions[..., H, nu]`` and append a last one."""
    if fill == "last":
        last = actions[..., -1:, :]
    else:
        last = torch.clamp(torch.zeros_like(actions[..., -1:, :]), low, high)
    return torch.cat((actions[..., 1:, :], last), dim=-2)


def model_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


# --------------------------------------------------------------------------- base class
class Planner:
    """Base class: input checks, limits, warm-start bookkeeping and timing around ``_plan``.

    Subclasses implement ``_plan(state) -> PlanResult`` (limits already applied
    to ``nominal_actions``) and ``_reset()``. The cost is moved to the model's
    dtype and device.
    """

    config_class: ClassVar[type[PlannerConfig]] = PlannerConfig
    name: ClassVar[str] = "planner"

    def __init__(self, model: DynamicsModel, cost: TrajectoryCost, config: PlannerConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__}: expected a {self.config_class.__name__}, "
                            f"got {type(self.config).__name__}")
        self.config.validate(self.name)
        if cost.state_dim != model.state_dim or cost.action_dim != model.action_dim:
            raise ValueError(
                f"{self.name}: cost is for state/action sizes {cost.state_dim}/{cost.action_dim}, "
                f"model has {model.state_dim}/{model.action_dim}"
            )
        self.model = model
        self.cost = cost
        self.state_dim = model.state_dim
        self.action_dim = model.action_dim
        self.horizon = self.config.horizon
        self.dtype, self.device = model_dtype_device(model)
        cost.to(dtype=self.dtype, device=self.device)
        like = torch.empty(0, dtype=self.dtype, device=self.device)
        nu = self.action_dim
        try:
            self.action_low = per_dim("action_low", self.config.action_low, nu, like)
            self.action_high = per_dim("action_high", self.config.action_high, nu, like)
            self.max_rate = None if self.config.max_rate is None else per_dim(
                "max_rate", self.config.max_rate, nu, like)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        if bool((self.action_high <= self.action_low).any()):
            raise ValueError(f"{self.name}: action_high must exceed action_low in every dimension, "
                             f"got low={self.action_low.tolist()} high={self.action_high.tolist()}")
        self.previous_action: torch.Tensor | None = None
        self.prior = None  # a learned policy as sampling prior and warm start (set_prior)
        self._numpy_prior_model: tuple[int, bool] | None = None  # (id of the model checked, whether its numpy form matches)
        self.reset()

    # Public API --------------------------------------------------------------
    def plan(self, state: torch.Tensor, previous_action: torch.Tensor | None = None) -> PlanResult:
        """Plan from ``state[nx]``; returns the action to apply now and the full plan.

        ``previous_action`` overrides the planner's memory of the last applied
        action (say the controller sent a safe command instead of the plan).
        """
        check_tensor("state", state, (self.state_dim,))
        if previous_action is not None:
            check_tensor("previous_action", previous_action, (self.action_dim,))
            self.previous_action = previous_action.to(device=self.device, dtype=self.dtype).contiguous()
        self.cost.check_ready()
        state = state.to(device=self.device, dtype=self.dtype).contiguous()
        start = time.perf_counter()
        self.cost.set_context("previous_action", self.previous_action)
        self.cost.prepare(state)
        result = self._plan(state)
        result.info["solve_ms"] = (time.perf_counter() - start) * 1e3
        self.previous_action = result.action.detach().clone()
        return result

    def compile(self, fn, **options):
        """``torch.compile(fn, **options)``, its graphs kept in the configured ``compile_cache`` across starts."""
        if self.config.compile_cache is not None:
            use_compile_cache(self.config.compile_cache)
        return torch.compile(fn, **options)

    def set_prior(self, policy) -> None:
        """A learned policy (``policy(states[B, nx]) -> actions[B, nu]``, its context set; None: none) as the
        sampling prior and warm start of planners with ``policy_prior_fraction`` (MPPI, CEM) > 0. Any proposal
        of that form serves (a robot's per-goal solution, say the hand's ``ReachProposal``); one with
        ``prepare(state, planner) -> bool`` is called once per plan first (its per-cycle work, on the planner's
        model, cost and ``output_bias``; False: it has nothing this cycle), and one with ``act(state) -> numpy action`` rolls out in float64 numpy.
        One with ``open_loop`` true acts the same whatever the state (a held action): its actions need no rollout, so
        ``warm_start_from_prior`` gives them as the prior's centre without one, and the planner scores them among
        its own samples (MPPI: one noise-free sample on that centre)."""
        self.prior = policy

    def prior_actions(self, state: torch.Tensor) -> torch.Tensor | None:
        """The prior policy's closed-loop actions ``[H, nu]`` from ``state`` through the model, within the
        limits (None without a prior, with ``policy_prior_fraction`` 0, or when its actions are not finite)."""
        if self._open_loop_prior():
            return self._open_loop_prior_actions(state)
        rolled = self._prior_rollout(state, self.initial_actions())
        return None if rolled is None else rolled[1][1]

    def _open_loop_prior(self) -> bool:
        return bool(getattr(self.prior, "open_loop", False)) and getattr(self.config, "policy_prior_fraction", 0.0) > 0

    def _open_loop_prior_actions(self, state: torch.Tensor) -> torch.Tensor | None:
        """An ``open_loop`` prior's actions ``[H, nu]``: its action each step, within the rate window and the bounds
        as a rollout limits it (None where its ``prepare`` has nothing or its action is not finite)."""
        prepare = getattr(self.prior, "prepare", None)
        if callable(prepare) and not prepare(state, self):
            return None
        act = getattr(self.prior, "act", None)
        action = (np.asarray(act(None), dtype=float) if callable(act)
                  else self.prior(state[None])[0].detach().double().cpu().numpy())
        if not np.isfinite(action).all():
            return None
        low, high, rate = self._numpy_limits
        before, has_previous = (t.detach().double().cpu().numpy() for t in self._previous())
        actions = np.empty((self.horizon, self.action_dim))
        for t in range(self.horizon):
            before = actions[t] = _limit_step(action, before, rate if t > 0 or has_previous > 0 else None, low, high,
                                              ops=np)
        return torch.from_numpy(actions).to(dtype=self.dtype, device=self.device)

    def _prior_rollout(self, state: torch.Tensor, plan: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One rollout of batch two from ``state``: ``plan`` open loop beside the prior policy in closed loop,
        each of its actions limited as it is taken; -> (states ``[2, H+1, nx]``, actions ``[2, H, nu]``), or
        None where ``prior_actions`` gives None. (The model's step costs the same for two states as for one: one
        rollout for both took the prior's share of a plan from two rollouts to one.) None too where the prior's
        states are not finite (a model that blows up part way: its actions may all be finite, the states they are
        scored on are not). Each step adds the planner's ``output_bias``, as the planner's own rollouts do."""
        if self.prior is None or getattr(self.config, "policy_prior_fraction", 0.0) <= 0:
            return None
        prepare = getattr(self.prior, "prepare", None)
        if callable(prepare) and not prepare(state, self):
            return None
        bias = self.output_bias()
        fast = self._numpy_prior_dynamics()
        rolled = (self._prior_rollout_numpy(fast, state, plan, bias) if fast is not None
                  else self._prior_rollout_torch(state, plan, bias))
        if rolled is None or not bool(torch.isfinite(rolled[0][1]).all()):
            return None
        return rolled

    def _prior_rollout_torch(self, state: torch.Tensor, plan: torch.Tensor, bias: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``_prior_rollout`` through the model's ``forward`` and the prior's torch call."""
        previous, has_previous = self._previous()
        rate = self.max_rate
        first_rate = None if rate is None else torch.where(has_previous > 0, rate, torch.full_like(rate, math.inf))
        with torch.no_grad():
            x, actions, before = torch.stack([state, state]), [], previous
            states = [x]
            for t in range(self.horizon):
                before = _limit_step(self.prior(x[1:])[0].to(self.dtype), before,
                                     first_rate if t == 0 else rate, self.action_low, self.action_high)
                actions.append(before)
                x = self.model(x, torch.stack([plan[t], before]))
                if bias is not None:
                    x = x + bias
                states.append(x)
            prior = torch.stack(actions)
        if not bool(torch.isfinite(prior).all()):
            return None
        return torch.stack(states, dim=1), torch.stack([plan, prior])

    def _numpy_prior_dynamics(self) -> NumpyDynamics | None:
        """The model's float64 numpy form for the prior's rollout, where the prior is an actor with a numpy
        action (``Actor.act``) and the model has a numpy form that matches it (checked once per model object;
        built per plan: a hot swap copies new weights into the same model)."""
        if not callable(getattr(self.prior, "act", None)):
            return None
        if self._numpy_prior_model is None or self._numpy_prior_model[0] != id(self.model):
            self._numpy_prior_model = (id(self.model), checked_numpy_dynamics(self.model) is not None)
        return self.model.numpy_dynamics() if self._numpy_prior_model[1] else None

    @functools.cached_property
    def _numpy_limits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        as_numpy = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
        return (as_numpy(self.action_low), as_numpy(self.action_high),
                None if self.max_rate is None else as_numpy(self.max_rate))

    def _prior_rollout_numpy(self, fast: NumpyDynamics, state: torch.Tensor, plan: torch.Tensor,
                             bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``_prior_rollout`` in float64 numpy (the actor's ``act`` and the model's numpy form): torch's overhead
        per operation is most of the time of 30 steps of two states (the car: 13 ms in torch, ~1 ms here)."""
        low, high, rate = self._numpy_limits
        previous, has_previous = (t.detach().double().cpu().numpy() for t in self._previous())
        before = previous
        planned = plan.detach().double().cpu().numpy()
        x = np.repeat(state.detach().double().cpu().numpy()[:, None], 2, axis=1)  # [nx, 2]: the plan, the prior
        offset = 0.0 if bias is None else bias.detach().double().cpu().numpy()[:, None]
        states = np.empty((self.horizon + 1, *x.shape))
        actions = np.empty((self.horizon, self.action_dim))
        states[0] = x
        try:
            for t in range(self.horizon):
                before = actions[t] = _limit_step(self.prior.act(x[:, 1]), before,
                                                  rate if t > 0 or has_previous > 0 else None, low, high, ops=np)
                x = states[t + 1] = fast.step(x, np.stack((planned[t], before), axis=1)) + offset
        except ValueError:  # the actor refuses a state that is not finite
            return None
        if not np.isfinite(actions).all():
            return None
        as_tensor = lambda a: torch.from_numpy(a).to(dtype=self.dtype, device=self.device)  # noqa: E731
        return as_tensor(states.transpose(2, 0, 1).copy()), torch.stack([plan, as_tensor(actions)])

    def warm_start_from_prior(self, state: torch.Tensor, warm_start: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
        """-> (the warm start to plan from, the centre of the prior's share of samples or None, 'policy' |
        'shifted'). The prior's closed-loop actions replace the shifted previous plan as the warm start when
        their cost through the model is lower, and the prior's share of samples is then drawn around the shifted
        plan instead: both stay sampled, and the weights decide. (Drawing every sample around a policy whose
        rollout only looks better over the horizon threw the planner's own plan away: through the stack a poor
        parking policy took MPPI at 100 samples from 19/20 to 13/20; with both kept, 19/20.) An ``open_loop``
        prior is not rolled out: its actions are the prior's centre beside the warm start, scored by the planner
        among its samples (the hand's held proposal: its separate rollout was most of a plan's time)."""
        if self._open_loop_prior():
            actions = self._open_loop_prior_actions(state)
            return warm_start, actions, "shifted"
        rolled = self._prior_rollout(state, warm_start)
        if rolled is None:
            return warm_start, None, "shifted"
        states, both = rolled
        with torch.no_grad():
            costs = self.cost(states, both)
        prior = both[1]
        return (prior, warm_start, "policy") if bool(costs[1] < costs[0]) else (warm_start, prior, "shifted")

    def output_bias(self) -> torch.Tensor | None:
        """A constant ``[nx]`` the planner adds to every predicted step (MPPI's ``bias_correction``), else None;
        the prior's rollout adds it too, and a prior with ``prepare`` is given it."""
        return None

    def reset(self) -> None:
        """Forget the warm start and the previously applied action."""
        self.previous_action = None
        self._reset()

    def forget_transition(self) -> None:
        """The next ``plan``'s state does not follow the last one's by the action applied since (the controller
        sent something else between them). Planners that learn from consecutive states (MPPI's bias correction)
        drop the last state; the others ignore it."""

    def set_model(self, model: DynamicsModel) -> None:
        """Swap in a new model (between cycles, never during one); keeps the warm start."""
        if model.state_dim != self.state_dim or model.action_dim != self.action_dim:
            raise ValueError(f"{self.name}: new model has state/action sizes {model.state_dim}/"
                             f"{model.action_dim}, planner has {self.state_dim}/{self.action_dim}")
        self.model = model

    # For subclasses -------------------------------------------------------
    def _plan(self, state: torch.Tensor) -> PlanResult:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _previous(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The previous action and a 0-d 0/1 flag, as tensors for ``limit_actions``."""
        if self.previous_action is None:
            return self._no_previous
        return self.previous_action, self._one

    @functools.cached_property
    def _no_previous(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros(self.action_dim, dtype=self.dtype, device=self.device),
                torch.zeros((), dtype=self.dtype, device=self.device))

    @functools.cached_property
    def _one(self) -> torch.Tensor:
        return torch.ones((), dtype=self.dtype, device=self.device)

    def limit(self, actions: torch.Tensor) -> torch.Tensor:
        """Bounds and rate limits (against the previously applied action) on ``actions[..., H, nu]``."""
        previous, has_previous = self._previous()
        return limit_actions(actions, self.action_low, self.action_high, self.max_rate, previous, has_previous)

    def initial_actions(self) -> torch.Tensor:
        """The cold-start plan: zero actions, moved inside the bounds."""
        zeros = torch.zeros(self.horizon, self.action_dim, dtype=self.dtype, device=self.device)
        return torch.clamp(zeros, self.action_low, self.action_high)
