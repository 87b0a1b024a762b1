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

The weights are stacked tensors ``[E, in, out]``: training runs all members in
one batched matmul, propagation loops over members on contiguous slices (the
faster layout on a 2-core CPU, measured: a Python loop of ``addmm`` beat
padded ``baddbmm`` on ``[E, K/E, d]``), and a checkpoint's weights transfer
as a handful of tensors.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mbrl_ros.core.models.base import DynamicsModel, Prediction
from mbrl_ros.core.validation import check_state_action_batch

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "relu": F.relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "tanh": torch.tanh,
}
_INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": lambda x: F.silu(x, inplace=True),
    "relu": torch.relu_,
    "elu": lambda x: F.elu(x, inplace=True),
    "gelu": F.gelu,
    "tanh": torch.tanh_,
}
PROPAGATIONS = ("ts1", "tsinf", "mean")
LAYOUTS = ("bmm", "loop")


def wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Wrap to (-pi, pi], differentiably (atan2 of sin/cos)."""
    return torch.atan2(torch.sin(angle), torch.cos(angle))


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

        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.layer_weights = nn.ParameterList()
        self.layer_biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # torch.nn.Linear's default scale
            w = (torch.rand(ensemble_size, fan_in, fan_out, generator=self.generator) * 2 - 1) * bound
            b = (torch.rand(ensemble_size, fan_out, generator=self.generator) * 2 - 1) * bound
            self.layer_weights.append(nn.Parameter(w))
            self.layer_biases.append(nn.Parameter(b))
        self.max_logvar = nn.Parameter(torch.full((state_dim,), float(max_logvar)))
        self.min_logvar = nn.Parameter(torch.full((state_dim,), float(min_logvar)))

        self.register_buffer("input_mean", torch.zeros(self.input_dim))
        self.register_buffer("input_std", torch.ones(self.input_dim))
        self.register_buffer("output_mean", torch.zeros(state_dim))
        self.register_buffer("output_std", torch.ones(state_dim))
        self.register_buffer("elite_indices", torch.arange(num_elites, dtype=torch.long))
        self._elite_list = list(range(num_elites))
        self._layouts: dict[tuple, _GroupLayout] = {}
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
        """Reseed the generator that draws TS1 member assignments."""
        self.generator.manual_seed(int(seed))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._elite_list = [int(i) for i in self.elite_indices.tolist()]

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
    def fit_normalisers(self, states: torch.Tensor, actions: torch.Tensor, next_states: torch.Tensor) -> None:
        """Set input/output mean and std from training data (constant columns get std 1)."""
        if states.shape[0] < 2:
            raise ValueError(f"fit_normalisers: need at least 2 transitions, got {states.shape[0]}")
        for (mean_buf, std_buf), data in (
            ((self.input_mean, self.input_std), self.raw_inputs(states, actions)),
            ((self.output_mean, self.output_std), self.delta_targets(states, next_states)),
        ):
            mean, std = data.mean(0), data.std(0)
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

    def _member_layers(self) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per member, the ``(weight, bias)`` views of every layer (one ``unbind`` per tensor)."""
        weights = [w.unbind(0) for w in self.layer_weights]
        biases = [b.unbind(0) for b in self.layer_biases]
        return [list(zip(w_e, b_e)) for w_e, b_e in zip(zip(*weights), zip(*biases))]

    def _mlp_mean(self, layers: list[tuple[torch.Tensor, torch.Tensor]], inputs: torch.Tensor) -> torch.Tensor:
        """One member's normalised delta mean for ``inputs[b, in]``."""
        act = self._act if torch.is_grad_enabled() else _INPLACE_ACTIVATIONS[self.activation]
        x = inputs
        for w, b in layers[:-1]:
            x = act(torch.addmm(b, x, w))
        w, b = layers[-1]
        return torch.addmm(b, x, w)[:, : self.state_dim]

    def _grouped_means_loop(self, inputs: torch.Tensor, plan: "_GroupPlan") -> torch.Tensor:
        """Layout "loop": one ``addmm`` chain per elite on its contiguous chunk of rows."""
        layers = self._member_layers()
        grouped = inputs.index_select(0, plan.order).split(plan.sizes)
        means = torch.cat([self._mlp_mean(layers[e], x) for e, x in zip(self._elite_list, grouped)])
        return torch.empty_like(means).index_copy_(0, plan.order, means)

    def _grouped_means_bmm(self, inputs: torch.Tensor, plan: "_GroupPlan") -> torch.Tensor:
        """Layout "bmm": rows as ``[n_elites, per_group, in]`` (short groups padded), one ``baddbmm`` per layer."""
        x = inputs.index_select(0, plan.padded_order).view(self.num_elites, plan.per_group, -1)
        n = self.num_elites
        if self._elite_list == list(range(n)):  # views, no copy
            weights = [w[:n] for w in self.layer_weights]
            biases = [b[:n] for b in self.layer_biases]
        else:
            weights = [w.index_select(0, self.elite_indices) for w in self.layer_weights]
            biases = [b.index_select(0, self.elite_indices) for b in self.layer_biases]
        # Without autograd, bias and activation go in place: fewer passes over memory.
        inplace = not torch.is_grad_enabled()
        act = _INPLACE_ACTIVATIONS[self.activation] if inplace else self._act
        last = len(weights) - 1
        for layer, (w, b) in enumerate(zip(weights, biases)):
            x = torch.bmm(x, w)
            x = x.add_(b.unsqueeze(1)) if inplace else x + b.unsqueeze(1)
            if layer < last:
                x = act(x)
        means = x.view(-1, x.shape[-1])[:, : self.state_dim]
        if plan.real_rows is not None:  # drop the padding (duplicates would double gradients)
            means = means.index_select(0, plan.real_rows)
        else:
            means = means.contiguous()
        return torch.empty_like(means).index_copy_(0, plan.order, means)

    def _denormalised_next(self, states: torch.Tensor, delta_mean: torch.Tensor) -> torch.Tensor:
        return states + torch.addcmul(self.output_mean, delta_mean, self.output_std)

    def _group_plan(self, batch: int, device: torch.device) -> "_GroupPlan":
        """Which rows go to which elite this step (random for TS1, fixed and cached for TS-inf)."""
        n = self.num_elites
        if self._propagation == "ts1":
            layout = _GroupLayout.get(self._layouts, batch, n, device)
            order = torch.randperm(batch, generator=self.generator).to(device, non_blocking=True)
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

    # ---- the DynamicsModel interface ---------------------------------------------------
    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        inputs = self.normalised_inputs(states, actions)
        if self._propagation == "mean":
            delta = self.member_outputs(inputs, self._elite_list)[0].mean(0)
        elif self.num_elites == 1:
            delta = self._mlp_mean(self._member_layers()[self._elite_list[0]], inputs)
        elif self.layout == "bmm" and states.shape[0] >= self.num_elites:
            delta = self._grouped_means_bmm(inputs, self._group_plan(states.shape[0], states.device))
        else:
            delta = self._grouped_means_loop(inputs, self._group_plan(states.shape[0], states.device))
        return self._denormalised_next(states, delta)

    def member_predictions(
        self, states: torch.Tensor, actions: torch.Tensor, elites_only: bool = True
    ) -> torch.Tensor:
        """Next-state means of each member, ``[M, B, nx]`` (M = elites, or all E members).

        Every particle through every member, for disagreement penalties and spread.
        """
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
        members = self.member_predictions(states, actions)
        return Prediction(members.mean(0), members.std(0, unbiased=False))

    def extra_repr(self) -> str:
        return (
            f"state_dim={self.state_dim}, action_dim={self.action_dim}, ensemble_size={self.ensemble_size}, "
            f"hidden_sizes={list(self.hidden_sizes)}, activation={self.activation}, "
            f"angle_dims={list(self.angle_dims)}, ignored_input_dims={list(self.ignored_input_dims)}, elites={self._elite_list}, propagation={self._propagation}"
        )


class _GroupPlan(NamedTuple):
    order: torch.Tensor  # [B] rows sorted by group: chunk g (of sizes[g] rows) goes to elite g
    sizes: list[int]
    per_group: int  # rows per group in the padded [n, per_group] layout
    padded_order: torch.Tensor  # [n * per_group] rows of the padded layout (short groups repeat a row)
    real_rows: torch.Tensor | None  # [B] positions of the real rows in the padded layout, None if no padding


class _GroupLayout:
    """Balanced group sizes and padding index for a (batch, groups) pair, cached per model."""

    def __init__(self, batch: int, groups: int, device: torch.device) -> None:
        self.sizes = balanced_group_sizes(batch, groups)
        self.per_group = -(-batch // groups)
        self.gather = self.real_rows = None
        if batch < groups or batch == groups * self.per_group:
            return  # the padded layout needs every group non-empty; without padding it is ``order``
        starts = torch.tensor([0, *self.sizes[:-1]]).cumsum(0)
        slot = torch.arange(self.per_group)
        # Position in ``order`` of each padded slot: past a group's end, repeat its last row.
        last = torch.tensor(self.sizes) - 1
        self.gather = (starts[:, None] + torch.minimum(slot[None, :], last[:, None])).flatten().to(device)
        real = slot[None, :] < torch.tensor(self.sizes)[:, None]
        self.real_rows = real.flatten().nonzero().flatten().to(device)

    @staticmethod
    def get(cache: dict, batch: int, groups: int, device: torch.device) -> "_GroupLayout":
        key = (batch, groups, str(device))
        if key not in cache:
            cache[key] = _GroupLayout(batch, groups, device)
        return cache[key]

    def plan(self, order: torch.Tensor) -> _GroupPlan:
        padded = order if self.gather is None else order.index_select(0, self.gather)
        return _GroupPlan(order, self.sizes, self.per_group, padded, self.real_rows)
