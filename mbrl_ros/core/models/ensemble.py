"""Ensemble of probabilistic MLPs for dynamics (PETS-style), fast to propagate particles.

Each of the E members maps ``(state, action)`` to a Gaussian over the state
delta ``next_state - state``: a mean and a log-variance, in normalised units.
Predicting deltas rather than next states keeps targets small and centred;
normalising inputs and outputs (statistics fitted from data, kept as buffers so
a checkpoint carries them) lets one learning rate suit metres, radians and m/s.
The log-variance is soft-clamped between learned bounds (``max_logvar`` and
``min_logvar``), so the Gaussian NLL cannot push variances to 0 or infinity on
points the model has not seen; training adds a small penalty on the bounds'
width.

Angles (``angle_dims``, e.g. the yaw) enter the network as sin/cos, so -pi and
pi look the same, and their delta targets are wrapped. State dims the dynamics
do not depend on (``ignored_input_dims``, e.g. a car's position) are not fed
to the network at all; their deltas are still predicted.

Propagation of planner particles uses the elites only (the members best on
held-out data):

- ``"ts1"``: every step, each particle goes through one randomly drawn elite.
  Particles are randomly permuted and cut into near-equal groups, one per
  elite (as in PETS), so each member computes only its share: the work is
  divided by the number of elites instead of multiplied by it.
- ``"tsinf"``: particle ``i`` always uses ``elites[i % n_elites]``, so a
  trajectory keeps one member and its spread reflects model disagreement.
- ``"mean"``: the average of all elites' means.
- ``"ts1_sample"``, ``"tsinf_sample"``: PETS' trajectory sampling. Members are
  bound to particles as in ``"ts1"``/``"tsinf"``, and each particle's next
  state is drawn from its member's predicted Gaussian (mean and variance), so
  rollouts spread with the aleatoric noise the model learned, not only with
  the members' disagreement. Runs the differentiable path.

Random draws (TS1's assignment, the sampled noise) are counter-based
(``core.counter_random``): a pure function of the model's ``seed`` and how many
draws it has made, so a rollout compiles with ``torch.compile`` (a
``torch.Generator`` cannot be traced) and one seed gives one set of rollouts.

The weights are stacked tensors ``[E, in, out]``: training runs all members in
one batched matmul, a checkpoint's weights transfer as a handful of tensors,
and rollouts can use either layout (``layout=``): ``"bmm"`` gathers the groups
into ``[n_elites, K/n_elites, d]`` (short groups padded by one repeated row)
for one ``bmm`` per layer; ``"loop"`` runs one ``addmm`` chain per elite on
contiguous slices. On the 2-core CPU here, TS1 with 5 members of 2x128 and
1,024 particles, "bmm" was 10-20 % faster than "loop" (and the default).
Planner rollouts run without autograd, and then ``forward`` uses the elites'
weights with the input and output normalisation folded into the first and
last layers, bias and activation in place: about 20 % fewer passes over
memory per step than the differentiable path, which is used under autograd.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mbrl_ros.core.angles import wrap_angle
from mbrl_ros.core.counter_random import counter_gaussian, counter_permutation
from mbrl_ros.core.models.base import DynamicsModel, Prediction, TimeMajorDynamics
from mbrl_ros.core.validation import check_state_action_batch

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "relu": F.relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
}


def _silu_(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x, inplace=True)


def _elu_(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, inplace=True)


# For rollouts without autograd: no new tensor per activation. Named functions, so models pickle.
_INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": _silu_,
    "relu": torch.relu_,
    "elu": _elu_,
    "gelu": F.gelu,
    "tanh": torch.tanh_,
}
PROPAGATIONS = ("ts1", "tsinf", "mean", "ts1_sample", "tsinf_sample")
SAMPLED = "_sample"  # the suffix of the propagations that sample each member's predicted variance
LAYOUTS = ("bmm", "loop")


def _state_indices(name: str, dims: Sequence[int], state_dim: int) -> tuple[int, ...]:
    dims = tuple(sorted({int(d) for d in dims}))
    if any(not 0 <= d < state_dim for d in dims):
        raise ValueError(f"{name}: expected indices in [0, {state_dim}), got {list(dims)}")
    return dims


def balanced_group_sizes(count: int, groups: int) -> list[int]:
    """Sizes of ``groups`` contiguous chunks of ``count`` rows differing by at most one."""
    base, extra = divmod(count, groups)
    return [base + (1 if g < extra else 0) for g in range(groups)]


class EnsembleDynamics(DynamicsModel):
    """E probabilistic MLPs predicting normalised state deltas; see the module docstring."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        *,
        ensemble_size: int = 5,
        hidden_sizes: Sequence[int] = (200, 200, 200),
        activation: str = "silu",
        angle_dims: Sequence[int] = (),
        ignored_input_dims: Sequence[int] = (),
        num_elites: int | None = None,
        propagation: str = "ts1",
        min_logvar: float = -10.0,
        max_logvar: float = 0.5,
        seed: int | None = None,
        layout: str = "bmm",
    ) -> None:
        super().__init__(state_dim, action_dim)
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size: expected >= 1, got {ensemble_size}")
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        if any(h < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes: expected positive sizes, got {list(hidden_sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: unknown {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        angle_dims = _state_indices("angle_dims", angle_dims, state_dim)
        ignored_input_dims = _state_indices("ignored_input_dims", ignored_input_dims, state_dim)
        if set(ignored_input_dims) & set(angle_dims):
            raise ValueError(f"ignored_input_dims {list(ignored_input_dims)} and angle_dims {list(angle_dims)} overlap")
        num_elites = ensemble_size if num_elites is None else int(num_elites)
        if not 1 <= num_elites <= ensemble_size:
            raise ValueError(f"num_elites: expected 1..{ensemble_size}, got {num_elites}")
        if not min_logvar < max_logvar:
            raise ValueError(f"min_logvar ({min_logvar}) must be < max_logvar ({max_logvar})")
        # Everything needed to rebuild an identical (untrained) model, e.g. from a checkpoint.
        self.hparams = dict(
            state_dim=self.state_dim, action_dim=self.action_dim, ensemble_size=int(ensemble_size),
            hidden_sizes=list(hidden_sizes), activation=activation, angle_dims=list(angle_dims),
            ignored_input_dims=list(ignored_input_dims), num_elites=num_elites, propagation=propagation,
            min_logvar=float(min_logvar), max_logvar=float(max_logvar), seed=seed, layout=layout,
        )
        self.ensemble_size = int(ensemble_size)
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        self.angle_dims = angle_dims
        self.ignored_input_dims = ignored_input_dims
        plain_dims = [d for d in range(state_dim) if d not in angle_dims and d not in ignored_input_dims]
        self._all_states_plain = len(plain_dims) == state_dim
        self.register_buffer("_plain_dims", torch.tensor(plain_dims, dtype=torch.long), persistent=False)
        self.register_buffer("_angle_dims", torch.tensor(angle_dims, dtype=torch.long), persistent=False)
        self.input_dim = len(plain_dims) + 2 * len(angle_dims) + action_dim
        sizes = [self.input_dim, *hidden_sizes, 2 * state_dim]

        # Draws the initial weights. A fresh Generator always starts from the same default
        # seed, so without a seed it is seeded from the OS.
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.layer_weights = nn.ParameterList()
        self.layer_biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default scale
            w = (torch.rand(ensemble_size, fan_in, fan_out, generator=self.generator) * 2 - 1) * bound
            b = (torch.rand(ensemble_size, fan_out, generator=self.generator) * 2 - 1) * bound
            self.layer_weights.append(nn.Parameter(w))
            self.layer_biases.append(nn.Parameter(b))
        # TS1's member assignments and the sampled noise: draw k uses key seed * 1_000_003 + k.
        draw_seed = int(torch.randint(2**31, (1,), generator=self.generator)) if seed is None else int(seed)
        self.register_buffer("_draw_seed", torch.tensor(draw_seed, dtype=torch.int64), persistent=False)
        self.register_buffer("_draws", torch.tensor(0, dtype=torch.int64), persistent=False)
        self.max_logvar = nn.Parameter(torch.full((state_dim,), float(max_logvar)))
        self.min_logvar = nn.Parameter(torch.full((state_dim,), float(min_logvar)))

        self.register_buffer("input_mean", torch.zeros(self.input_dim))
        self.register_buffer("input_std", torch.ones(self.input_dim))
        self.register_buffer("output_mean", torch.zeros(state_dim))
        self.register_buffer("output_std", torch.ones(state_dim))
        self.register_buffer("elite_indices", torch.arange(num_elites, dtype=torch.long))
        self._elite_list = list(range(num_elites))
        self._layouts: dict[tuple, _GroupLayout] = {}
        self._folded: _FoldedElites | None = None
        self._tsinf_plans: dict[tuple, _GroupPlan] = {}
        if layout not in LAYOUTS:
            raise ValueError(f"layout: unknown {layout!r}; expected one of {LAYOUTS}")
        self.layout = layout
        self.propagation = propagation

    # ---- configuration ----------------------------------------------------------------
    @property
    def propagation(self) -> str:
        return self._propagation

    @propagation.setter
    def propagation(self, mode: str) -> None:
        if mode not in PROPAGATIONS:
            raise ValueError(f"propagation: unknown {mode!r}; expected one of {PROPAGATIONS}")
        self._propagation = mode
        self._members = mode.removesuffix(SAMPLED)  # how particles are bound to members: ts1 | tsinf | mean
        self._sampled = mode.endswith(SAMPLED)

    def own_settings(self) -> dict:
        return {**super().own_settings(), "propagation": self._propagation}

    @property
    def num_elites(self) -> int:
        return len(self._elite_list)

    @property
    def elites(self) -> list[int]:
        return list(self._elite_list)

    def set_elites(self, indices: Sequence[int]) -> None:
        """Use these members for propagation (their count must equal ``num_elites``)."""
        indices = [int(i) for i in indices]
        if len(indices) != self.num_elites or len(set(indices)) != len(indices):
            raise ValueError(f"elites: expected {self.num_elites} distinct member indices, got {indices}")
        if any(not 0 <= i < self.ensemble_size for i in indices):
            raise ValueError(f"elites: indices must be in [0, {self.ensemble_size}), got {indices}")
        self.elite_indices.copy_(torch.tensor(indices))
        self._elite_list = indices

    def seed(self, seed: int) -> None:
        """Restart the random draws (TS1 member assignments, sampled noise) from ``seed``."""
        self._draw_seed.fill_(int(seed))
        self._draws.zero_()

    def _next_draw_key(self) -> torch.Tensor:
        """The key of the next random draw (0-d int64); in place, so a compiled rollout counts too."""
        self._draws.add_(1)
        return self._draw_seed * 1_000_003 + self._draws

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._elite_list = [int(i) for i in self.elite_indices.tolist()]

    def __getstate__(self) -> dict:
        """Pickle (``torch.save(model)``, ``deepcopy``) without the rollout caches; they rebuild."""
        state = self.__dict__.copy()
        state.update(_folded=None, _layouts={}, _tsinf_plans={})
        return state

    def check_finite(self) -> None:
        """Raise ValueError naming every parameter or buffer holding NaN or inf.

        A diverged training run or a corrupt checkpoint must not reach a controller.
        """
        bad = [
            f"{name} ({int((~torch.isfinite(t)).sum())} of {t.numel()} values)"
            for name, t in (*self.named_parameters(), *self.named_buffers())
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        ]
        if bad:
            raise ValueError("EnsembleDynamics: non-finite values in " + ", ".join(bad))

    # ---- normalisation ----------------------------------------------------------------
    def raw_inputs(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Network inputs before normalisation: plain states, sin/cos of angles, actions.

        ``ignored_input_dims`` (e.g. a car's x, y) are left out: the dynamics do not
        depend on them, and feeding them would let the net fit where data happened
        to be recorded instead of how the robot moves.
        """
        if self._all_states_plain:
            return torch.cat((states, actions), dim=-1)
        plain = states.index_select(-1, self._plain_dims)
        if not self.angle_dims:
            return torch.cat((plain, actions), dim=-1)
        angles = states.index_select(-1, self._angle_dims)
        return torch.cat((plain, torch.sin(angles), torch.cos(angles), actions), dim=-1)

    def normalised_inputs(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return (self.raw_inputs(states, actions) - self.input_mean) / self.input_std

    def delta_targets(self, states: torch.Tensor, next_states: torch.Tensor) -> torch.Tensor:
        """``next_states - states`` with angle deltas wrapped to (-pi, pi]."""
        delta = next_states - states
        if self.angle_dims:
            delta = delta.index_copy(-1, self._angle_dims, wrap_angle(delta.index_select(-1, self._angle_dims)))
        return delta

    def normalised_targets(self, states: torch.Tensor, next_states: torch.Tensor) -> torch.Tensor:
        return (self.delta_targets(states, next_states) - self.output_mean) / self.output_std

    @torch.no_grad()
    def fit_normalisers(self, states: torch.Tensor, actions: torch.Tensor, next_states: torch.Tensor,
                        sum_over: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> None:
        """Set input/output mean and std from training data (constant columns get std 1).

        ``sum_over``: sums a tensor over where the rest of the data is (``data_parallel.all_sum``
        when each process holds a shard), so the statistics are those of all the data.
        """
        rows = int(sum_over(torch.tensor(float(states.shape[0]), dtype=torch.float64)))
        if rows < 2:
            raise ValueError(f"fit_normalisers: need at least 2 transitions, got {rows}")
        for (mean_buf, std_buf), data in (
            ((self.input_mean, self.input_std), self.raw_inputs(states, actions)),
            ((self.output_mean, self.output_std), self.delta_targets(states, next_states)),
        ):
            data = data.to(torch.float64)  # sums of many rows, then two passes (as torch.std)
            mean = sum_over(data.sum(0)) / rows
            std = (sum_over((data - mean).square().sum(0)) / (rows - 1)).sqrt()
            mean_buf.copy_(mean)
            std_buf.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    # ---- networks ---------------------------------------------------------------------
    def _bounded_logvar(self, raw: torch.Tensor) -> torch.Tensor:
        """Soft-clamp into (min_logvar, max_logvar): smooth, so gradients never vanish at a wall."""
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def logvar_bound_penalty(self) -> torch.Tensor:
        """Width of the log-variance bounds: training adds a small multiple to keep them tight."""
        return self.max_logvar.sum() - self.min_logvar.sum()

    def member_outputs(
        self, inputs: torch.Tensor, members: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised delta mean and bounded log-variance of several members at once.

        ``inputs``: normalised, ``[B, in]`` (shared by all members) or ``[M, B, in]``
        (one batch per member, as in bootstrapped training). Returns two ``[M, B, nx]``.
        """
        weights, biases = list(self.layer_weights), list(self.layer_biases)
        if members is not None:
            index = torch.as_tensor(list(members), dtype=torch.long, device=weights[0].device)
            weights = [w.index_select(0, index) for w in weights]
            biases = [b.index_select(0, index) for b in biases]
        x = inputs
        last = len(weights) - 1
        for layer, (w, b) in enumerate(zip(weights, biases)):
            x = torch.matmul(x, w) + b.unsqueeze(1)
            if layer < last:
                x = self._act(x)
        mean, raw_logvar = x.split(self.state_dim, dim=-1)
        return mean, self._bounded_logvar(raw_logvar)

    def _grouped_outputs(self, inputs: torch.Tensor, plan: "_GroupPlan", width: int) -> torch.Tensor:
        """Differentiable TS1/TS-inf: chunk g of ``plan.order`` through elite g only; the first ``width``
        outputs (the delta mean, or mean and raw log-variance), normalised units."""
        last = len(self.layer_weights) - 1
        outputs = []
        for member, x in zip(self._elite_list, inputs.index_select(0, plan.order).split(plan.sizes)):
            for layer, (w, b) in enumerate(zip(self.layer_weights, self.layer_biases)):
                x = torch.addmm(b[member], x, w[member])
                if layer < last:
                    x = self._act(x)
            outputs.append(x[:, :width])
        outputs = torch.cat(outputs)
        return torch.empty_like(outputs).index_copy_(0, plan.order, outputs)

    def _sampled_next(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Each particle's next state drawn from its member's Gaussian (PETS' TS1 / TS-inf)."""
        inputs = self.normalised_inputs(states, actions)
        plan = self._group_plan(states.shape[0], states.device)
        mean, raw_logvar = self._grouped_outputs(inputs, plan, 2 * self.state_dim).split(self.state_dim, dim=-1)
        noise = counter_gaussian(self._next_draw_key(), tuple(mean.shape), mean.dtype)
        return self._denormalised_next(states, mean + torch.exp(0.5 * self._bounded_logvar(raw_logvar)) * noise)

    def _denormalised_next(self, states: torch.Tensor, delta_mean: torch.Tensor) -> torch.Tensor:
        return states + torch.addcmul(self.output_mean, delta_mean, self.output_std)

    def _group_plan(self, batch: int, device: torch.device) -> "_GroupPlan":
        """Which rows go to which elite this step (random for TS1, fixed and cached for TS-inf)."""
        n = self.num_elites
        if self._members == "ts1":
            layout = _GroupLayout.get(self._layouts, batch, n, device)
            order = counter_permutation(self._next_draw_key(), batch)
            return layout.plan(order)
        key = (batch, n, str(device))
        plan = self._tsinf_plans.get(key)
        if plan is None:
            # Rows i with i % n == g go to elite slot g; a stable sort keeps them in order.
            slot = torch.arange(batch) % n
            order = torch.sort(slot, stable=True).indices.to(device)
            plan = _GroupLayout.get(self._layouts, batch, n, device).plan(order)
            self._tsinf_plans[key] = plan
        return plan

    def _folded_elites(self) -> "_FoldedElites":
        """The elites' weights with normalisation folded in, rebuilt only when something changed.

        Parameters and buffers change through in-place ops (optimiser steps,
        ``load_state_dict``, ``copy_``), which bump their version counters, or by
        being replaced (``.to()``), which changes their storage: both are in the key.
        """
        sources = (*self.layer_weights, *self.layer_biases, self.input_mean, self.input_std,
                   self.output_mean, self.output_std)
        key = (tuple(self._elite_list), tuple((t.data_ptr(), t._version) for t in sources))
        if self._folded is None or self._folded.key != key:
            self._folded = _FoldedElites(self, key)
        return self._folded

    # ---- the DynamicsModel interface ---------------------------------------------------
    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Next states under the propagation mode (see the module docstring).

        Without autograd (planner rollouts under ``torch.no_grad``) this runs the
        folded fast path; with autograd, a plain differentiable one. They agree to
        float rounding.
        """
        if self._sampled:
            return self._sampled_next(states, actions)
        if not torch.is_grad_enabled():
            return self._forward_fast(states, actions)
        inputs = self.normalised_inputs(states, actions)
        if self._propagation == "mean":
            delta = self.member_outputs(inputs, self._elite_list)[0].mean(0)
        else:
            delta = self._grouped_outputs(inputs, self._group_plan(states.shape[0], states.device), self.state_dim)
        return self._denormalised_next(states, delta)

    def _forward_fast(self, states: torch.Tensor, actions: torch.Tensor,
                      net: "_FoldedElites | None" = None) -> torch.Tensor:
        net = net or self._folded_elites()
        features = net.features(states, actions)
        batch, n = states.shape[0], self.num_elites
        if self._propagation == "mean":
            delta = net.run_all(features).mean(0)
        elif n == 1:
            delta = net.run_member(0, features)
        else:
            plan = self._group_plan(batch, states.device)
            if self.layout == "bmm" and batch >= n:
                grouped = features.index_select(0, plan.padded_order).view(n, plan.per_group, -1)
                delta = net.run_grouped(grouped).view(-1, self.state_dim)
                # Padding rows repeat a row of their own group through the same member, so both
                # copies hold the same value and writing both is harmless (no autograd here).
                # scatter_ with an expanded index measured faster than index_copy_.
                rows = plan.padded_order[:, None].expand(-1, self.state_dim)
                delta = states.new_empty(states.shape).scatter_(0, rows, delta)
            else:
                chunks = features.index_select(0, plan.order).split(plan.sizes)
                delta = torch.cat([net.run_member(e, x) for e, x in enumerate(chunks)])
                rows = plan.order[:, None].expand(-1, self.state_dim)
                delta = torch.empty_like(delta).scatter_(0, rows, delta)
        return delta.add_(states)

    def time_major(self) -> TimeMajorDynamics:
        """The fast path's rollout for the sampling planners (``EnsembleTimeMajor``); the plain view of ``forward``
        for the sampled propagations (they run the differentiable path)."""
        return TimeMajorDynamics(self) if self._sampled else EnsembleTimeMajor(self)

    def deterministic(self, member: int | None = None) -> "EnsembleMean":
        """The mean of the elites' predicted means, or elite slot ``member``'s alone, whatever the propagation."""
        return EnsembleMean(self, member)

    @property
    def deterministic_members(self) -> int:
        return self.num_elites

    def predict_members(
        self, states: torch.Tensor, actions: torch.Tensor, elites_only: bool = True
    ) -> torch.Tensor:
        """Next-state means of each member, ``[M, B, nx]`` (M = elites, or all E members).

        Every particle through every member, for disagreement penalties and spread.
        """
        if elites_only and not torch.is_grad_enabled():
            net = self._folded_elites()
            return net.run_all(net.features(states, actions)).add_(states)
        members = self._elite_list if elites_only else None
        delta = self.member_outputs(self.normalised_inputs(states, actions), members)[0]
        return self._denormalised_next(states, delta)

    def member_distributions(
        self, states: torch.Tensor, actions: torch.Tensor, elites_only: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's Gaussian over the next state: means and variances, ``[M, B, nx]``, state units."""
        members = self._elite_list if elites_only else None
        delta, logvar = self.member_outputs(self.normalised_inputs(states, actions), members)
        return self._denormalised_next(states, delta), logvar.exp() * self.output_std.square()

    def predict(self, states: torch.Tensor, actions: torch.Tensor) -> Prediction:
        """Checked: mean over elites, spread = std of the elites' means (epistemic disagreement)."""
        check_state_action_batch(states, actions, self.state_dim, self.action_dim)
        members = self.predict_members(states, actions)
        return Prediction(members.mean(0), members.std(0, unbiased=False))

    def extra_repr(self) -> str:
        return (
            f"state_dim={self.state_dim}, action_dim={self.action_dim}, ensemble_size={self.ensemble_size}, "
            f"hidden_sizes={list(self.hidden_sizes)}, activation={self.activation}, "
            f"angle_dims={list(self.angle_dims)}, ignored_input_dims={list(self.ignored_input_dims)}, "
            f"elites={self._elite_list}, propagation={self._propagation}, layout={self.layout}"
        )


class EnsembleMean(DynamicsModel):
    """An ensemble as one deterministic model: next state from the mean of its elites' means, or
    from one elite (slot ``member`` of ``ensemble.elites``). A view: it shares the ensemble's weights.

    iLQR linearises and line-searches this, so its derivatives and its cost comparisons see one
    model for a whole solve, not TS1's random mixture of members.
    """

    def __init__(self, ensemble: EnsembleDynamics, member: int | None = None) -> None:
        super().__init__(ensemble.state_dim, ensemble.action_dim)
        if member is not None and not 0 <= member < ensemble.num_elites:
            raise ValueError(f"member: expected an elite slot in [0, {ensemble.num_elites}), got {member}")
        self.ensemble = ensemble
        self.member = member

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        e = self.ensemble
        if not torch.is_grad_enabled():
            net = e._folded_elites()
            features = net.features(states, actions)
            delta = net.run_all(features).mean(0) if self.member is None else net.run_member(self.member, features)
            return delta.add_(states)
        members = e.elites if self.member is None else [e.elites[self.member]]
        delta = e.member_outputs(e.normalised_inputs(states, actions), members)[0].mean(0)
        return e._denormalised_next(states, delta)


class _GroupPlan(NamedTuple):
    order: torch.Tensor  # [B] rows sorted by group: chunk g (of sizes[g] rows) goes to elite g
    sizes: list[int]
    per_group: int  # rows per group in the padded [n, per_group] layout
    padded_order: torch.Tensor  # [n * per_group] rows of the padded layout (short groups repeat a row)


class _GroupLayout:
    """Balanced group sizes and the padding index for a (batch, groups) pair, cached per model."""

    def __init__(self, batch: int, groups: int, device: torch.device) -> None:
        self.sizes = balanced_group_sizes(batch, groups)
        self.per_group = -(-batch // groups)
        self.gather = None  # positions in ``order`` of the padded layout's rows; None: ``order`` itself
        if groups <= batch < groups * self.per_group:  # padding needed, and every group has a row to repeat
            starts = torch.tensor([0, *self.sizes[:-1]]).cumsum(0)
            slot = torch.arange(self.per_group)
            last = torch.tensor(self.sizes) - 1
            self.gather = (starts[:, None] + torch.minimum(slot[None, :], last[:, None])).flatten().to(device)

    @staticmethod
    def get(cache: dict, batch: int, groups: int, device: torch.device) -> "_GroupLayout":
        if torch.compiler.is_compiling():  # a cache filled while tracing changes the guards: a recompile
            return _GroupLayout(batch, groups, device)
        key = (batch, groups, str(device))
        if key not in cache:
            cache[key] = _GroupLayout(batch, groups, device)
        return cache[key]

    def plan(self, order: torch.Tensor) -> _GroupPlan:
        padded = order if self.gather is None else order.index_select(0, self.gather)
        return _GroupPlan(order, self.sizes, self.per_group, padded)


class EnsembleTimeMajor(TimeMajorDynamics):
    """The ensemble in the sampling planners' layout: ``forward``'s fast path on transposed views, with the elites'
    folded weights held here. When the model changes (an optimiser step, a hot swap's ``load_state_dict``) and the
    shapes stay, ``still_valid`` copies the new folded weights into these same tensors: a compiled planning step
    reads them as inputs, so it sees the new model without a recompile. Other shapes: not valid, build anew."""

    def __init__(self, model: EnsembleDynamics) -> None:
        super().__init__(model)
        current = model._folded_elites()
        self.net = _FoldedElites(model, current.key)  # tensors of its own, not the model's cache

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.model._forward_fast(states.T, actions.T, self.net).T

    def still_valid(self) -> bool:
        current = self.model._folded_elites()
        return current.key == self.net.key or self.net.copy_from(current)


class _FoldedElites:
    """The elites' networks rearranged for fast rollouts (no autograd).

    Input normalisation is folded into the first layer and output
    de-normalisation into the last, so a step is: build raw features, then
    matmul/bias/activation per layer, with bias and activation in place. The
    first layer reads raw features ``[states, actions, sin(angles),
    cos(angles), 1]``: rows for angle and ignored state dims are zero and the
    last row is the bias. Weights are ``[n_elites, in, out]``, contiguous.
    """

    def __init__(self, model: EnsembleDynamics, key: tuple) -> None:
        self.key = key
        nx, nu = model.state_dim, model.action_dim
        self.angle_dims = model._angle_dims
        self.contiguous_angles = (
            slice(model.angle_dims[0], model.angle_dims[-1] + 1)
            if model.angle_dims and list(model.angle_dims) == list(range(model.angle_dims[0], model.angle_dims[-1] + 1))
            else None
        )
        self.activation = _INPLACE_ACTIVATIONS[model.activation]
        self._ones: dict[tuple, torch.Tensor] = {}
        with torch.no_grad():
            elites = model.elite_indices
            weights = [w.detach().index_select(0, elites) for w in model.layer_weights]
            biases = [b.detach().index_select(0, elites) for b in model.layer_biases]
            # Last layer: keep the mean head and output state-unit deltas.
            weights[-1] = weights[-1][:, :, :nx] * model.output_std
            biases[-1] = biases[-1][:, :nx] * model.output_std + model.output_mean
            # First layer: (x - mean) / std @ W + b == x @ (W / std) + (b - (mean / std) @ W).
            scaled = weights[0] / model.input_std[None, :, None]
            folded_bias = biases[0] - torch.einsum("i,nio->no", model.input_mean / model.input_std, weights[0])
            n_angles = len(model.angle_dims)
            plain = [d for d in range(nx) if d not in model.angle_dims and d not in model.ignored_input_dims]
            # Normalised-input index -> raw-feature row: plain states, sin, cos, actions (see raw_inputs).
            rows = plain + [nx + nu + k for k in range(2 * n_angles)] + [nx + a for a in range(nu)]
            first = scaled.new_zeros(scaled.shape[0], nx + nu + 2 * n_angles + 1, scaled.shape[2])
            first[:, rows] = scaled
            first[:, -1] = folded_bias
            weights[0] = first
            biases[0] = None
        self.weights = [w.contiguous() for w in weights]
        self.biases = [None if b is None else b.unsqueeze(1).contiguous() for b in biases]

    def copy_from(self, other: "_FoldedElites") -> bool:
        """Take ``other``'s weights into these tensors, in place; False (nothing copied) where shapes differ."""
        mine = [t for t in (*self.weights, *self.biases) if t is not None]
        theirs = [t for t in (*other.weights, *other.biases) if t is not None]
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            return False
        with torch.no_grad():
            for a, b in zip(mine, theirs):
                a.copy_(b)
        self.key = other.key
        return True

    def features(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():  # a cache filled while tracing changes the guards: a recompile
            ones = states.new_ones(states.shape[0], 1)
        else:
            key = (states.shape[0], states.dtype, states.device)
            ones = self._ones.get(key)
            if ones is None:
                ones = self._ones[key] = states.new_ones(states.shape[0], 1)
        if self.angle_dims.numel() == 0:
            return torch.cat((states, actions, ones), dim=1)
        if self.contiguous_angles is not None:
            angles = states[:, self.contiguous_angles]
        else:
            angles = states.index_select(1, self.angle_dims)
        return torch.cat((states, actions, torch.sin(angles), torch.cos(angles), ones), dim=1)

    def run_grouped(self, x: torch.Tensor) -> torch.Tensor:
        """``x[n, rows, in]``: group g through elite g, one ``bmm`` per layer."""
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.bmm(x, w)
            if b is not None:
                x.add_(b)
            if layer < last:
                x = self.activation(x)
        return x

    def run_all(self, x: torch.Tensor) -> torch.Tensor:
        """``x[B, in]`` through every elite: ``[n, B, nx]``."""
        return self.run_grouped(x.expand(len(self.weights[0]), *x.shape))

    def run_member(self, member: int, x: torch.Tensor) -> torch.Tensor:
        """``x[rows, in]`` through elite slot ``member``: one ``mm``/``addmm`` per layer."""
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.mm(x, w[member]) if b is None else torch.addmm(b[member], x, w[member])
            if layer < last:
                x = self.activation(x)
        return x
