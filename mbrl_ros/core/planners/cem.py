"""Cross-entropy method (CEM) planning, with the improvements of iCEM as options.

Each planning step runs ``iterations`` rounds of: sample a population of action
sequences around a Gaussian (mean, std per step and dimension) -> roll all of them
out in one batch -> keep the ``elites`` cheapest -> refit mean and std, blended
with the previous ones by ``alpha`` (momentum: ``new = alpha * old + (1 - alpha) *
elite statistics``). The mean is warm-started from the previous step, shifted.

iCEM (Pinneri et al., 2020) options:

- ``noise_exponent`` (their beta): coloured noise with power spectrum
  ``S(f) ~ 1 / f**noise_exponent`` along the horizon, made by shaping white noise
  in the frequency domain (rFFT bins scaled by ``f**(-noise_exponent / 2)``) and
  normalised to unit variance. 0 is white noise; 2 is Brownian-like, smooth.
- ``keep_elites_fraction``: that share of the elites joins the next iteration's
  population and, with ``shift_elites``, shifted by one step, the next planning
  step's first population.
- ``population_decay``: the population shrinks by this factor per iteration.
- ``return_best``: apply the best sequence seen rather than the final mean.

A learned policy as prior (``set_prior``, ``policy_prior_fraction`` > 0): its closed-loop
rollout through the model centres that share of the first iteration's population;
when it beats the shifted previous plan it becomes the mean's warm start instead, and
the share goes around the shifted plan (``Planner.warm_start_from_prior``).

Everything is batched over the population; the only Python loop is over the few
iterations. ``compile: true`` compiles the rollout-and-cost evaluation (one graph
per distinct population size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners.base import (
    Planner,
    PlannerConfig,
    PlanResult,
    _per_dim_ok,
    _positive_int,
    _real,
    per_dim,
    rollout,
    shift_sequence,
    time_major_dynamics,
)

__all__ = ["CemConfig", "CemPlanner", "coloured_noise"]


@dataclass
class CemConfig(PlannerConfig):
    population: int = 400
    elites: int = 40
    iterations: int = 5
    alpha: float = 0.1  # momentum on mean and std
    initial_std: float | list[float] = 0.5
    min_std: float = 0.01
    noise_exponent: float = 0.0  # iCEM's beta; 0: white noise
    keep_elites_fraction: float = 0.0  # iCEM: elites carried to the next iteration and step
    shift_elites: bool = True
    population_decay: float = 1.0  # iCEM's gamma: population / decay**iteration
    return_best: bool = False
    num_rollouts_returned: int = 0
    compile: bool = False
    policy_prior_fraction: float = 0.0  # share of the first population drawn around the prior policy's rollout

    def validate(self, source: str = "cem") -> None:
        super().validate(source)
        _positive_int(source, "population", self.population, minimum=2)
        _positive_int(source, "elites", self.elites, minimum=1)
        if self.elites > self.population:
            raise ValueError(f"{source}: elites: at most population ({self.population}), got {self.elites}")
        _positive_int(source, "iterations", self.iterations)
        _real(source, "alpha", self.alpha, low=0.0, high=0.999)
        _per_dim_ok(source, "initial_std", self.initial_std, positive=True)
        _real(source, "min_std", self.min_std, low=0.0)
        _real(source, "noise_exponent", self.noise_exponent, low=0.0, high=6.0)
        _real(source, "keep_elites_fraction", self.keep_elites_fraction, low=0.0, high=1.0)
        _real(source, "population_decay", self.population_decay, low=1.0)
        _real(source, "policy_prior_fraction", self.policy_prior_fraction, low=0.0, high=1.0)
        _positive_int(source, "num_rollouts_returned", self.num_rollouts_returned, minimum=0)
        for key in ("shift_elites", "return_best", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{source}: {key}: expected true or false, got {getattr(self, key)!r}")


def coloured_noise(
    shape: tuple[int, ...], exponent: float, generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Unit-variance Gaussian noise ``[..., T]`` with power spectrum ``~ 1 / f**exponent`` along the last axis.

    White complex Gaussians per rFFT bin, scaled by ``f**(-exponent / 2)`` (the
    zero-frequency bin gets the lowest non-zero frequency's scale), transformed
    back with the inverse rFFT and divided by the exact standard deviation of
    that linear map, so each entry has variance 1 for any exponent.
    """
    steps = shape[-1]
    if exponent == 0 or steps < 2:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    freqs = torch.fft.rfftfreq(steps, dtype=torch.float64)
    freqs[0] = freqs[1]
    scale = freqs ** (-exponent / 2.0)
    bins = scale.shape[0]
    real = torch.randn((*shape[:-1], bins), generator=generator, dtype=torch.float64, device=device)
    imag = torch.randn((*shape[:-1], bins), generator=generator, dtype=torch.float64, device=device)
    signal = torch.fft.irfft(torch.complex(real, imag) * scale.to(device), n=steps, dim=-1)
    # Variance of irfft's output per entry: the DC bin (and the Nyquist bin for an
    # even length) contribute their real part once, every other bin twice with
    # both parts: var = (s_0^2 + 4 * sum_mid s_k^2 + s_nyq^2) / T^2.
    s2 = scale * scale
    if steps % 2 == 0:
        variance = (s2[0] + 4.0 * s2[1:-1].sum() + s2[-1]) / steps**2
    else:
        variance = (s2[0] + 4.0 * s2[1:].sum()) / steps**2
    return (signal / math.sqrt(float(variance))).to(dtype)


class CemPlanner(Planner):
    """CEM / iCEM over action sequences, batched over the population."""

    config_class = CemConfig
    name = "cem"
    config: CemConfig

    def __init__(self, model: DynamicsModel, cost: TrajectoryCost, config: CemConfig | None = None) -> None:
        super().__init__(model, cost, config)
        try:
            self.initial_std = per_dim("initial_std", self.config.initial_std, self.action_dim, self.action_low)
        except ValueError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        self.generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        self._build_evaluate()

    def set_model(self, model: DynamicsModel) -> None:
        super().set_model(model)
        self._build_evaluate()

    def _build_evaluate(self) -> None:
        self._dynamics = time_major_dynamics(self.model)
        self._evaluate_fn = self._evaluate
        if self.config.compile:
            self._evaluate_fn = self.compile(self._evaluate, fullgraph=True, dynamic=False,
                                              options={"max_fusion_size": 100_000, "cpp_wrapper": True})

    def _reset(self) -> None:
        self._mean = self.initial_actions()
        self._kept: torch.Tensor | None = None

    def _evaluate(self, state: torch.Tensor, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Costs ``[N]`` and states ``[N, H+1, nx]`` of ``samples[N, H, nu]``, rolled out time-major."""
        states = self._dynamics.rollout(state, samples.permute(1, 2, 0)).permute(2, 0, 1)
        return self.cost(states, samples), states

    def _sample(self, count: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        # Noise is coloured along time: lay out [count, nu, H], then put time back in the middle.
        noise = coloured_noise(
            (count, self.action_dim, self.horizon), self.config.noise_exponent, self.generator,
            dtype=self.dtype, device=self.device,
        ).transpose(1, 2)
        return self.limit(mean + std * noise).contiguous()

    @torch.no_grad()
    def _plan(self, state: torch.Tensor) -> PlanResult:
        c = self.config
        if not self._dynamics.still_valid():
            self._build_evaluate()
        mean, prior, warm_start = self.warm_start_from_prior(state, self._mean)
        std = self.initial_std.expand(self.horizon, -1).clone()
        kept = self._kept
        best_cost = torch.tensor(float("inf"), dtype=self.dtype, device=self.device)
        best = mean
        rollouts = None
        for iteration in range(c.iterations):
            count = max(c.elites * 2, int(round(c.population / c.population_decay**iteration)))
            samples = self._sample(count, mean, std)
            if iteration == 0 and prior is not None:
                num_prior = min(count, int(math.ceil(c.policy_prior_fraction * count)))
                samples = torch.cat((self._sample(num_prior, prior, std), samples[num_prior:]))
            if kept is not None:
                samples = torch.cat((samples[: count - kept.shape[0]], self.limit(kept)))
            if iteration == c.iterations - 1:
                # iCEM evaluates the mean itself in the last iteration.
                samples = torch.cat((samples[:-1], self.limit(mean)[None]))
            costs, states = self._evaluate_fn(state, samples)
            elite_costs, elite_index = torch.topk(costs, min(c.elites, count), largest=False)
            elites = samples[elite_index]
            if elite_costs[0] < best_cost:
                best_cost, best = elite_costs[0], elites[0]
            mean = c.alpha * mean + (1.0 - c.alpha) * elites.mean(0)
            std = torch.clamp(c.alpha * std + (1.0 - c.alpha) * elites.std(0, unbiased=False), min=c.min_std)
            num_kept = int(c.keep_elites_fraction * elites.shape[0])
            kept = elites[:num_kept] if num_kept else None
            if c.num_rollouts_returned:
                rollouts = states[: c.num_rollouts_returned]
        plan = self.limit(best if c.return_best else mean)
        predicted = rollout(self.model, state, plan[None])
        plan_cost = self.cost(predicted, plan[None])[0]
        self._mean = shift_sequence(plan, c.shift_fill, self.action_low, self.action_high)
        # Elites carry over to the next step only shifted into its time frame.
        if kept is not None and c.shift_elites:
            self._kept = shift_sequence(kept, c.shift_fill, self.action_low, self.action_high)
        else:
            self._kept = None
        return PlanResult(
            action=plan[0],
            nominal_actions=plan,
            predicted_states=predicted[0],
            cost=float(plan_cost),
            rollouts=rollouts,
            info={"best_sample_cost": float(best_cost), "final_std": std.mean().item(), "warm_start": warm_start},
        )
