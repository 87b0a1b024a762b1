"""Model Predictive Path Integral control (MPPI), built for speed on a CPU.

One planning step is a pure function of tensors, ``_step``: sample noise ->
bound the samples -> roll them out through the model -> cost -> softmax weights
-> new nominal sequence -> roll out the nominal -> shift for the warm start. It
has no data-dependent Python branches and no host synchronisation, so
``torch.compile`` (``compile: true``, the default when the model allows it) turns
the whole step, including the rollout unrolled over the horizon, into a few fused
kernels (compiling takes minutes for long horizons; later steps reuse it).

Speed on a CPU comes from three choices: the batch is kept time-major ([H, nu, K]
actions, [H+1, nx, K] states: see ``base.TimeMajorDynamics``); noise is a
counter-based hash inside the graph (``core.counter_random.counter_gaussian``: vectorised,
reproducible from the seed and the step count, identical eager and compiled);
and the cost's per-cycle work (path pruning) happens once in ``cost.prepare``.

Noise smoothing (``noise_smoothing``), all scaled by ``sigma`` per action dimension:

- ``none``: white Gaussian noise, std ``sigma``.
- ``beta``: PDDM's filter ``n[t] = beta * n[t-1] + (1 - beta) * eps[t]``, started
  in its stationary distribution and rescaled by ``sqrt((1 + beta) / (1 - beta))``
  so that ``sigma`` stays the marginal std (only the correlation over time changes:
  ``corr(n[t], n[t+1]) = beta``).
- ``smppi``: the SMPPI idea of perturbing the action *derivative*: white noise of std
  ``sigma`` is sampled per step and integrated over the horizon (a random walk),
  so a sample changes by about ``sigma`` per step instead of jumping. The nominal
  sequence is still kept in action space; because the weighted update is linear,
  that equals updating a derivative sequence and integrating it. Combine with
  ``max_rate`` and the ``smoothness`` cost term for SMPPI-like smooth commands.

Samples are clamped to the action bounds and rate limits before the rollout, so
every sample (and hence the weighted mean, a convex combination) is feasible.
``control_cost_weight`` (gamma) adds the information-theoretic
``gamma * lambda * u^T Sigma^-1 eps`` term. ``zero_noise_fraction`` evaluates that
share of the samples without noise (the nominal itself). ``disagreement_weight``
adds ``weight * sum_t mean_j std_e(x[e, t, j])`` over the members' predictions from
``model.predict_members(states, actions) -> [E, B, nx]``, which steers an ensemble
controller away from where its members disagree.

Iterations (``iterations`` N, ``iteration_decay``): each plan runs N MPPI updates,
each sampling around the previous one's plan (unshifted), iteration i with noise
``sigma * iteration_decay**i``; the same compiled step serves every iteration (its
noise scale is an input), so N costs N steps' time and no more compiling. One update
per control period moves the plan only as far as its samples reach: where the goal
is far (the hand's fingertips start centimetres away), several per period get there
within the episode.

Online bias correction (``bias_correction`` = g in (0, 1], offset-free MPC's constant
output disturbance): each plan compares the state it is given with the model's
prediction from the previous plan's state and the action applied since
(``previous_action``, the controller's last command), and keeps an exponential average
``d = (1 - g) d + g (x_measured - f(x_prev, u_prev))``; every rollout step then
predicts ``f(x, u) + d``. A model whose steady state is off (a physics prior's hold
error) thus settles where the system does near the operating point, and the plan
closes the remaining gap. ``reset`` (a new episode) clears ``d``; ``forget_transition``
(the controller, after a cycle that did not plan) drops the previous state, so a gap
in the cycles is never taken for one step.

A learned policy as prior (``set_prior``, with ``policy_prior_fraction`` > 0; the
policy prior of TD-MPC and POLO): each plan first rolls the policy out in closed loop
through the model from the current state, and ``policy_prior_fraction`` of the
samples are drawn around that action sequence (within bounds and rate limits) instead
of around the warm start, so good plans are found with fewer samples. When its cost
beats the shifted previous plan's, the two swap roles: the policy's rollout becomes
the warm start and the prior's share goes around the shifted plan, so a policy whose
rollout only looks better over the horizon cannot take every sample from the
planner's own plan (``Planner.warm_start_from_prior``).

The prior's share can adapt (``policy_prior_adaptation`` g > 0, population Monte Carlo's
mixture weights): after each plan it moves towards the softmax weight that the samples
around the other centre earned, ``share <- (1 - g) share + g mass``, kept between one
sample and ``policy_prior_fraction`` and reset to the latter each episode. Samples that
lose give their share back to the warm start: a policy whose proposals are poor where
the car is (near the spot, for a policy that only approaches it) is scored as one
candidate, and the planner keeps nearly all its samples for its own plan; where they
win, the share grows back.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.models.base import DynamicsModel, TimeMajorDynamics
from mbrl_ros.core.planners.base import (
    Planner,
    PlannerConfig,
    PlanResult,
    _one_of,
    _per_dim_ok,
    _positive_int,
    _real,
    counter_gaussian,
    limit_actions,
    per_dim,
    shift_sequence,
    time_major_dynamics,
)

__all__ = ["MppiConfig", "MppiPlanner", "NOISE_SMOOTHING"]

NOISE_SMOOTHING = ("none", "beta", "smppi")


@dataclass
class MppiConfig(PlannerConfig):
    num_samples: int = 1000
    temperature: float = 1.0  # lambda: lower follows the best samples more greedily
    sigma: float | list[float] = 0.5  # noise std per action dimension
    noise_smoothing: str = "none"  # none | beta | smppi
    beta: float = 0.7  # for noise_smoothing: beta
    control_cost_weight: float = 0.0  # gamma of the u^T Sigma^-1 eps term
    zero_noise_fraction: float = 0.0  # share of samples evaluated without noise
    iterations: int = 1  # MPPI updates per plan, each sampling around the last (the step compiled once)
    iteration_decay: float = 1.0  # sigma's factor from one iteration to the next (annealing)
    bias_correction: float = 0.0  # gain of the online output-bias estimate (0: none); see the module docstring
    disagreement_weight: float = 0.0  # needs model.predict_members
    num_rollouts_returned: int = 0  # sampled trajectories in PlanResult.rollouts, for visualisation
    policy_prior_fraction: float = 0.0  # share of samples drawn around the prior policy's rollout (set_prior)
    # Gain g of the prior's adaptive share (0: the share stays policy_prior_fraction): see the module docstring.
    policy_prior_adaptation: float = 0.0
    compile: bool | None = None  # None: compile when the model allows it

    def validate(self, source: str = "mppi") -> None:
        super().validate(source)
        _positive_int(source, "num_samples", self.num_samples, minimum=2)
        _real(source, "temperature", self.temperature, low=0.0, open_low=True)
        _per_dim_ok(source, "sigma", self.sigma, positive=True)
        _one_of(source, "noise_smoothing", self.noise_smoothing, NOISE_SMOOTHING)
        _real(source, "beta", self.beta, low=0.0, high=0.999)
        _real(source, "control_cost_weight", self.control_cost_weight, low=0.0)
        _real(source, "zero_noise_fraction", self.zero_noise_fraction, low=0.0, high=1.0)
        _real(source, "disagreement_weight", self.disagreement_weight, low=0.0)
        _real(source, "policy_prior_fraction", self.policy_prior_fraction, low=0.0, high=1.0)
        _real(source, "policy_prior_adaptation", self.policy_prior_adaptation, low=0.0, high=1.0)
        _real(source, "bias_correction", self.bias_correction, low=0.0, high=1.0)
        _positive_int(source, "iterations", self.iterations)
        _real(source, "iteration_decay", self.iteration_decay, low=0.0, high=1.0, open_low=True)
        if self.bias_correction > 0 and self.disagreement_weight > 0:
            raise ValueError(f"{source}: bias_correction and disagreement_weight: not together (the disagreement's "
                             "rollout runs the model's members, without the bias)")
        _positive_int(source, "num_rollouts_returned", self.num_rollouts_returned, minimum=0)
        if self.num_rollouts_returned > self.num_samples:
            raise ValueError(f"{source}: num_rollouts_returned: at most num_samples ({self.num_samples}), "
                             f"got {self.num_rollouts_returned}")
        if self.compile not in (None, True, False):
            raise ValueError(f"{source}: compile: expected true, false or null (auto), got {self.compile!r}")


class BiasedDynamics(TimeMajorDynamics):
    """``inner``'s steps plus a constant output bias ``bias[nx]`` (a tensor the planner updates in place, so a
    compiled step reads its current value)."""

    def __init__(self, inner: TimeMajorDynamics, bias: torch.Tensor) -> None:
        super().__init__(inner.model)
        self.inner, self.bias = inner, bias

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.inner.step(states, actions) + self.bias[:, None]

    def still_valid(self) -> bool:
        return self.inner.still_valid()


class MppiPlanner(Planner):
    """MPPI with warm start by shifting, smoothed noise, bounds, rate limits and optional compile."""

    config_class = MppiConfig
    name = "mppi"
    config: MppiConfig

    # Inductor fuses at most 64 nodes per kernel by default; a rollout is thousands
    # of pointwise nodes per sample, and each extra kernel is a thread barrier. The
    # C++ wrapper saves ~1-2 ms of Python per call: the unrolled rollout leaves
    # hundreds of buffer views for a Python wrapper to create.
    COMPILE_OPTIONS = {"max_fusion_size": 100_000, "cpp_wrapper": True}
    # Tests swap in "aot_eager" to check graph capture (no graph breaks) without minutes of codegen.
    COMPILE_BACKEND = "inductor"

    def __init__(self, model: DynamicsModel, cost: TrajectoryCost, config: MppiConfig | None = None) -> None:
        super().__init__(model, cost, config)
        c = self.config
        try:
            self.sigma = per_dim("sigma", c.sigma, self.action_dim, self.action_low)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        self._noise_mask = self._make_noise_mask(open_loop_prior=False)
        # Samples around the prior: the last ones (the zero-noise ones, first, stay on the warm start); how many is
        # an input of the step (a mask), so an adaptive share needs no recompiling.
        self._sample_index = torch.arange(c.num_samples, device=self.device)
        self._prior_share = c.policy_prior_fraction
        self._check_disagreement(model)
        # Iteration i's noise is sigma * iteration_decay**i (0-d tensors: inputs of the compiled step, one graph).
        self._noise_scales = [torch.tensor(c.iteration_decay ** i, dtype=self.dtype, device=self.device)
                              for i in range(c.iterations)]
        self._build_step()

    # Public -------------------------------------------------------------------
    @property
    def nominal(self) -> torch.Tensor:
        """The warm start the next ``plan`` begins from (the last plan, shifted)."""
        return self._nominal

    @property
    def compiled(self) -> bool:
        """Whether planning steps run through ``torch.compile`` (False after a fallback)."""
        return self._compiled

    def set_model(self, model: DynamicsModel) -> None:
        super().set_model(model)
        self._check_disagreement(model)
        self._build_step()

    def sample_noise(self, num_samples: int | None = None, key: int = 0) -> torch.Tensor:
        """Noise as the planner samples it, ``[K, H, nu]``, for a given key (for tests and plots)."""
        count = num_samples or self.config.num_samples
        eps = counter_gaussian(torch.tensor(key), (self.horizon, self.action_dim, count), self.dtype)
        return (self._smooth(eps) * self.sigma[:, None]).permute(2, 0, 1)

    def set_prior(self, policy) -> None:
        """As ``Planner.set_prior``; an ``open_loop`` prior's centre is also one noise-free sample (the last), so
        its exact actions are scored in the planning step (a change of kind builds the step again)."""
        before = self._open_loop_prior()
        super().set_prior(policy)
        if self._open_loop_prior() != before:
            self._noise_mask = self._make_noise_mask(self._open_loop_prior())
            self._build_step()

    # Internals ----------------------------------------------------------------
    def _make_noise_mask(self, open_loop_prior: bool) -> torch.Tensor | None:
        """[K]: 0 for the samples without noise (the first ``zero_noise_fraction``, on the warm start, and with an
        open-loop prior the last, on the prior's centre), else 1; None where every sample has noise."""
        c = self.config
        mask = torch.ones(c.num_samples, dtype=self.dtype, device=self.device)
        mask[:int(math.ceil(c.zero_noise_fraction * c.num_samples))] = 0.0
        if open_loop_prior:
            mask[-1] = 0.0
        return None if bool((mask == 1.0).all()) else mask

    def _check_disagreement(self, model: DynamicsModel) -> None:
        if self.config.disagreement_weight > 0 and not callable(getattr(model, "predict_members", None)):
            raise ValueError(
                f"{self.name}: disagreement_weight > 0 needs a model with "
                f"predict_members(states, actions) -> [E, B, nx]; {type(model).__name__} has none"
            )

    @property
    def bias(self) -> torch.Tensor:
        """The online output-bias estimate ``d[nx]`` added to each predicted step (zero without
        ``bias_correction``)."""
        return self._bias

    def output_bias(self) -> torch.Tensor | None:
        return self._bias if self.config.bias_correction > 0 else None

    def forget_transition(self) -> None:
        """The next plan's state does not follow the last plan's by one applied action (a cycle without a plan
        came between): it does not update the bias estimate."""
        self._bias_state = None

    def _update_bias(self, state: torch.Tensor) -> None:
        gain = self.config.bias_correction
        if gain > 0 and self._bias_state is not None and self.previous_action is not None:
            with torch.no_grad():
                predicted = self._inner_dynamics.step(self._bias_state[:, None], self.previous_action[:, None])[:, 0]
                residual = state - predicted
                if bool(torch.isfinite(residual).all()):
                    self._bias.mul_(1.0 - gain).add_(gain * residual)
        self._bias_state = state.detach().clone() if gain > 0 else None

    def _build_step(self) -> None:
        self._inner_dynamics = time_major_dynamics(self.model)
        if not hasattr(self, "_bias"):
            self._bias = torch.zeros(self.state_dim, dtype=self.dtype, device=self.device)
            self._bias_state = None
        self._dynamics = (BiasedDynamics(self._inner_dynamics, self._bias) if self.config.bias_correction > 0
                          else self._inner_dynamics)
        use_compile = self.config.compile
        if use_compile is None:
            use_compile = bool(getattr(self.model, "supports_compile", True))
        self._compiled = bool(use_compile)
        self._step_fn = self._step
        if use_compile:
            inductor = self.COMPILE_BACKEND == "inductor"
            self._step_fn = self.compile(self._step, fullgraph=True, dynamic=False, backend=self.COMPILE_BACKEND,
                                          options=self.COMPILE_OPTIONS if inductor else None)

    @property
    def prior_share(self) -> float:
        """The share of the next plan's samples drawn around the other centre of the prior (see the module
        docstring): ``policy_prior_fraction``, or where ``policy_prior_adaptation`` > 0 what it has adapted to."""
        return self._prior_share

    def _prior_mask(self, share: float) -> torch.Tensor:
        """[K]: 1 for the last ``ceil(share * K)`` samples (those drawn around the prior's centre), else 0."""
        count = self.config.num_samples
        return (self._sample_index >= count - int(math.ceil(share * count - 1e-9))).to(self.dtype)

    def _adapt_prior_share(self, mass: float) -> None:
        """The prior's share moves towards the softmax weight its samples earned: ``share <- (1 - g) share + g mass``,
        between one sample and ``policy_prior_fraction``."""
        c = self.config
        if c.policy_prior_adaptation > 0 and math.isfinite(mass):
            share = (1.0 - c.policy_prior_adaptation) * self._prior_share + c.policy_prior_adaptation * mass
            self._prior_share = min(c.policy_prior_fraction, max(1.0 / c.num_samples, share))

    def _reset(self) -> None:
        self._nominal = self.initial_actions()
        self._prior_share = self.config.policy_prior_fraction
        self._steps = 0
        if hasattr(self, "_bias"):  # the base's __init__ resets before _build_step made it
            self._bias.zero_()
        self._bias_state = None

    def _plan(self, state: torch.Tensor) -> PlanResult:
        if not self._inner_dynamics.still_valid():
            self._build_step()
        self._update_bias(state)
        previous, has_previous = self._previous()
        self._nominal, prior, warm_start = self.warm_start_from_prior(state, self._nominal)
        share = self._prior_share
        with_prior = prior is not None
        if prior is None:
            prior = self._nominal
        nominal = self._nominal
        prior_mask = self._prior_mask(share)
        for iteration in range(self.config.iterations):
            # Each step's noise is a pure function of (seed, step count): reproducible, no generator state.
            key = torch.tensor(self.config.seed * 1_000_003 + self._steps, dtype=torch.int64, device=self.device)
            self._steps += 1
            out = self._call_step(state, nominal, prior, prior_mask, previous, has_previous, key,
                                  self._noise_scales[iteration])
            plan, next_nominal, predicted, plan_cost, best_cost, ess, rollouts, prior_mass = out
            if iteration == 0 and with_prior:
                self._adapt_prior_share(float(prior_mass))
            nominal = prior = plan  # the next iteration samples around this one's plan, unshifted
        self._nominal = next_nominal
        return PlanResult(
            action=plan[0],
            nominal_actions=plan,
            predicted_states=predicted,
            cost=float(plan_cost),
            rollouts=rollouts,
            info={"best_sample_cost": float(best_cost), "effective_samples": float(ess), "warm_start": warm_start,
                  **({"prior_share": share} if with_prior else {}),
                  **({"bias_norm": float(torch.linalg.vector_norm(self._bias))} if self.config.bias_correction else {})},
        )

    def _call_step(self, *args: torch.Tensor) -> tuple:
        with torch.no_grad():
            if not self._compiled:
                return self._step(*args)
            try:
                return self._step_fn(*args)
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
                warnings.warn(
                    f"{self.name}: torch.compile of the planning step failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); running eagerly",
                    RuntimeWarning,
                    stacklevel=4,
                )
                self._step_fn = self._step
                self._compiled = False
                return self._step(*args)

    def _smooth(self, eps: torch.Tensor) -> torch.Tensor:
        """Unit white noise ``eps[H, nu, K]`` -> smoothed noise along time (see module docstring)."""
        mode = self.config.noise_smoothing
        if mode == "smppi":
            return torch.cumsum(eps, dim=0)
        if mode == "beta":
            beta = self.config.beta
            # AR(1) with unit marginal variance: the filter n = beta n + (1 - beta) eps,
            # rescaled by sqrt((1 + beta) / (1 - beta)), started in its stationary state.
            innovation = math.sqrt(1.0 - beta * beta)
            n = eps[0]
            steps = [n]
            for t in range(1, eps.shape[0]):
                n = beta * n + innovation * eps[t]
                steps.append(n)
            return torch.stack(steps)
        return eps

    def _rollout_with_spread(self, state: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch-first rollout that also sums the members' spread (for the disagreement penalty)."""
        actions = samples.permute(2, 0, 1)
        x = state.expand(actions.shape[0], -1)
        states, spread = [x], x.new_zeros(actions.shape[0])
        for t in range(actions.shape[1]):
            members = self.model.predict_members(x, actions[:, t])
            spread = spread + members.std(dim=0).mean(dim=-1)
            x = self.model(x, actions[:, t])
            states.append(x)
        return torch.stack(states, dim=1), spread

    def _step(
        self,
        state: torch.Tensor,
        nominal: torch.Tensor,
        prior: torch.Tensor,
        prior_mask: torch.Tensor,
        previous: torch.Tensor,
        has_previous: torch.Tensor,
        key: torch.Tensor,
        noise_scale: torch.Tensor,
    ) -> tuple:
        """One MPPI iteration, time-major ([H, nu, K] actions); pure tensor code that compiles into one graph."""
        c = self.config
        eps = counter_gaussian(key, (self.horizon, self.action_dim, c.num_samples), self.dtype)
        noise = self._smooth(eps) * (self.sigma * noise_scale)[:, None]
        if self._noise_mask is not None:
            noise = noise * self._noise_mask
        centres = nominal[:, :, None] + (prior - nominal)[:, :, None] * prior_mask  # [H, nu, K]
        samples = limit_actions(
            centres + noise, self.action_low, self.action_high, self.max_rate, previous, has_previous,
            time_major=True,
        )
        if c.disagreement_weight > 0:
            batch_states, spread = self._rollout_with_spread(state, samples)
        else:
            batch_states, spread = self._dynamics.rollout(state, samples).permute(2, 0, 1), None
        costs = self.cost(batch_states, samples.permute(2, 0, 1))
        if c.control_cost_weight > 0:
            effective_noise = samples - nominal[:, :, None]
            costs = costs + c.control_cost_weight * c.temperature * (
                (nominal / (self.sigma * self.sigma))[:, :, None] * effective_noise
            ).sum((0, 1))
        if spread is not None:
            costs = costs + c.disagreement_weight * spread
        weights = torch.softmax(-costs / c.temperature, dim=0)
        plan = (samples * weights).sum(-1)
        # A convex combination of feasible samples is feasible; clamp away rounding only.
        plan = limit_actions(plan, self.action_low, self.action_high, self.max_rate, previous, has_previous)
        predicted = self._dynamics.rollout(state, plan[:, :, None])[:, :, 0]
        plan_cost = self.cost(predicted[None], plan[None])[0]
        next_nominal = shift_sequence(plan, c.shift_fill, self.action_low, self.action_high)
        effective_samples = 1.0 / (weights * weights).sum()
        rollouts = batch_states[: c.num_rollouts_returned] if c.num_rollouts_returned else None
        prior_mass = (weights * prior_mask).sum()  # the weight the prior's centre's samples earned
        return plan, next_nominal, predicted, plan_cost, costs.min(), effective_samples, rollouts, prior_mass
