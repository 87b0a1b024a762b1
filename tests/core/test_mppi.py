"""MPPI: closed-loop goal reaching, warm start, limits, noise smoothing, disagreement, errors.

All eager (``compile: false``) to keep the suite fast; one small test checks the
compiled step gives the same plan as the eager one.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.planners.base import (
    TimeMajorDynamics,
    counter_gaussian,
    rollout,
    time_major_dynamics,
)
from mbrl_ros.core.planners.mppi import MppiConfig, MppiPlanner
from mbrl_ros.robots.car.bicycle import BicycleParams, BicycleTimeMajor, KinematicBicycle

GOAL = torch.tensor([8.0, 12.0, math.pi / 2, 0.0, 0.0])
# Goal tolerance of the closed-loop test.
POSITION_TOL, YAW_TOL_DEG, SPEED_TOL = 0.5, 10.0, 0.5


def parking_cost():
    cost = build_cost(
        {
            "goal_pose": {"position_weight": 1.0, "yaw_weight": 30.0, "speed_weight": 2.0,
                          "stage_weight": 0.1, "terminal_weight": 50.0},
            "effort": {"weight": 0.01},
            "smoothness": {"weight": 0.1},
        },
        5, 2, source="test: cost",
    )
    cost.set_context("goal", GOAL)
    return cost


def small_planner(**overrides):
    config = dict(horizon=8, num_samples=64, sigma=0.5, compile=False)
    config.update(overrides)
    return MppiPlanner(KinematicBicycle(), parking_cost(), MppiConfig(**config))


def within_tolerance(state):
    error = state - GOAL
    yaw_error = math.degrees(math.remainder(float(error[2]), 2 * math.pi))
    return (float(error[:2].norm()) < POSITION_TOL and abs(yaw_error) < YAW_TOL_DEG
            and abs(float(state[3])) < SPEED_TOL)


def test_mppi_drives_bicycle_to_goal_pose_in_closed_loop():
    """From rest at the origin facing +x to (8, 12) facing +y, stopped: a left turn into a bay."""
    car = KinematicBicycle()
    planner = build_planner(
        "mppi", car, parking_cost(),
        {"horizon": 30, "num_samples": 1000, "temperature": 10.0, "sigma": [0.3, 0.5],
         "noise_smoothing": "beta", "beta": 0.6, "zero_noise_fraction": 0.01, "compile": False, "seed": 0},
    )
    state = torch.zeros(5)
    inside = []
    for _ in range(80):  # 16 s
        action = planner.plan(state).action
        state = car(state[None], action[None])[0]
        inside.append(within_tolerance(state))
    error = state - GOAL
    # Arrives, then holds: sampling noise may jitter the speed by a few tenths of m/s.
    assert inside[-1] and sum(inside[-10:]) >= 9, (
        f"final state {state.tolist()}: position error {float(error[:2].norm()):.2f} m, "
        f"yaw error {math.degrees(float(error[2])):.1f} deg, speed {float(state[3]):.2f} m/s"
    )


def test_warm_start_shifts_the_plan():
    planner = small_planner(shift_fill="last")
    result = planner.plan(torch.zeros(5))
    assert torch.equal(planner.nominal[:-1], result.nominal_actions[1:])
    assert torch.equal(planner.nominal[-1], result.nominal_actions[-1])
    assert torch.equal(result.action, result.nominal_actions[0])
    zero_fill = small_planner(shift_fill="zero")
    zero_fill.plan(torch.zeros(5))
    assert torch.equal(zero_fill.nominal[-1], torch.zeros(2))
    planner.reset()
    assert torch.equal(planner.nominal, torch.zeros(8, 2)) and planner.previous_action is None


def test_bounds_and_rate_limits_hold_on_every_output():
    low, high, rate = torch.tensor([-0.5, -0.3]), torch.tensor([0.8, 0.3]), torch.tensor([0.1, 0.05])
    for smoothing in ("none", "beta", "smppi"):
        planner = small_planner(action_low=low.tolist(), action_high=high.tolist(), max_rate=rate.tolist(),
                                noise_smoothing=smoothing, sigma=2.0, num_rollouts_returned=4)
        car, state, previous = planner.model, torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0]), None
        for _ in range(6):
            result = planner.plan(state)
            plan = result.nominal_actions
            assert torch.all(plan >= low) and torch.all(plan <= high)
            assert torch.all((plan[1:] - plan[:-1]).abs() <= rate + 1e-6)
            if previous is not None:
                assert torch.all((plan[0] - previous).abs() <= rate + 1e-6)
            assert result.rollouts.shape == (4, 9, 5) and result.predicted_states.shape == (9, 5)
            previous = result.action
            state = car(state[None], result.action[None])[0]


def test_predicted_states_are_the_models_rollout_of_the_plan():
    planner = small_planner()
    state = torch.tensor([1.0, -2.0, 0.3, 1.5, 0.0])
    result = planner.plan(state)
    assert torch.equal(result.predicted_states[0], state)
    assert torch.allclose(result.predicted_states, planner.model.rollout(state[None], result.nominal_actions[None])[0])
    assert result.cost == pytest.approx(float(planner.cost(result.predicted_states[None], result.nominal_actions[None])))


def lag1_autocorrelation(noise):
    """Correlation of consecutive steps, pooled over samples and dimensions."""
    a, b = noise[:, :-1].flatten(), noise[:, 1:].flatten()
    return float(torch.corrcoef(torch.stack((a, b)))[0, 1])


def test_beta_filtered_noise_is_smoother_than_white_and_keeps_sigma():
    torch.manual_seed(0)
    sigma = torch.tensor([0.3, 0.6])
    white = small_planner(horizon=40, sigma=sigma.tolist()).sample_noise(4000)
    smooth = small_planner(horizon=40, sigma=sigma.tolist(), noise_smoothing="beta", beta=0.8).sample_noise(4000)
    # Same marginal spread per dimension ...
    assert torch.allclose(white.std(dim=(0, 1)), sigma, rtol=0.03)
    assert torch.allclose(smooth.std(dim=(0, 1)), sigma, rtol=0.05)
    # ... but consecutive steps are correlated by beta, and the steps are much smaller.
    assert abs(lag1_autocorrelation(white)) < 0.02
    assert lag1_autocorrelation(smooth) == pytest.approx(0.8, abs=0.02)
    def step_size(n):
        return (n[:, 1:] - n[:, :-1]).pow(2).mean()
    assert step_size(smooth) < 0.3 * step_size(white)
    # SMPPI-like: integrated derivative noise; per-step changes have std sigma.
    integrated = small_planner(horizon=40, sigma=sigma.tolist(), noise_smoothing="smppi").sample_noise(4000)
    assert torch.allclose((integrated[:, 1:] - integrated[:, :-1]).std(dim=(0, 1)), sigma, rtol=0.03)


def test_same_seed_same_plan_and_global_random_state_untouched():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = small_planner(seed=7), small_planner(seed=7)
    c = small_planner(seed=8)
    state = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    plans = [p.plan(state).nominal_actions for p in (a, b, c)]
    assert torch.equal(plans[0], plans[1]) and not torch.equal(plans[0], plans[2])
    assert torch.equal(torch.random.get_rng_state(), before)


def test_zero_noise_fraction_evaluates_the_nominal_itself():
    planner = small_planner(zero_noise_fraction=1.0)
    result = planner.plan(torch.zeros(5))
    assert torch.equal(result.nominal_actions, torch.zeros(8, 2))


class TwoBicycles(DynamicsModel):
    """A fake ensemble: two bicycles that disagree on the wheelbase, so they disagree when steering."""

    def __init__(self):
        super().__init__(5, 2)
        self.members = torch.nn.ModuleList(
            KinematicBicycle(BicycleParams(wheelbase=w, rear_axle_to_cg=w / 2)) for w in (3.0, 7.0)
        )

    def predict_members(self, states, actions):
        return torch.stack([m(states, actions) for m in self.members])

    def forward(self, states, actions):
        return self.predict_members(states, actions).mean(0)


def test_disagreement_penalty_avoids_where_members_disagree():
    model = TwoBicycles()
    state = torch.tensor([0.0, 0.0, 0.0, 3.0, 0.0])
    # Members agree exactly when driving straight and disagree when steering.
    straight = model.predict_members(state[None], torch.tensor([[0.5, 0.0]]))
    turning = model.predict_members(state[None], torch.tensor([[0.5, 1.0]]))
    assert torch.equal(straight[0], straight[1]) and not torch.allclose(turning[0], turning[1])

    def spread_along(plan):
        x, spread = state[None], 0.0
        for u in plan:
            spread += float(model.predict_members(x, u[None]).std(dim=0).mean())
            x = model(x, u[None])
        return spread

    def planner(weight, **overrides):
        cost = build_cost({"goal_pose": {"terminal_weight": 1.0, "stage_weight": 0.0}}, 5, 2)
        cost.set_context("goal", torch.tensor([15.0, 6.0, 0.0, 3.0, 0.0]))  # reached by steering left
        config = dict(horizon=10, num_samples=512, temperature=1.0, sigma=0.5, disagreement_weight=weight,
                      compile=False)
        config.update(overrides)
        return MppiPlanner(model, cost, MppiConfig(**config))

    # Wiring: with noise off every sample is the nominal, whose cost gains exactly weight * spread.
    turn = torch.tensor([[0.3, 0.6]] * 10)
    plain, penalised = planner(0.0, zero_noise_fraction=1.0), planner(10.0, zero_noise_fraction=1.0)
    plain._nominal, penalised._nominal = turn.clone(), turn.clone()
    added = penalised.plan(state).info["best_sample_cost"] - plain.plan(state).info["best_sample_cost"]
    assert added == pytest.approx(10.0 * spread_along(turn), rel=1e-4)

    # Behaviour: optimising from the same state, the penalised plan disagrees less.
    def optimised_spread(weight):
        mppi = planner(weight)
        for _ in range(8):
            plan = mppi.plan(state).nominal_actions
            mppi._nominal = plan  # keep optimising from the same state
        return spread_along(plan)

    assert optimised_spread(1000.0) < 0.8 * optimised_spread(0.0)


def test_disagreement_needs_predict_members():
    with pytest.raises(ValueError, match="predict_members"):
        small_planner(disagreement_weight=1.0)


def test_bad_input_and_config_errors_name_what_is_wrong():
    planner = small_planner()
    with pytest.raises(ValueError, match=r"state: expected shape \[5\]"):
        planner.plan(torch.zeros(3))
    with pytest.raises(ValueError, match="state: contains a non-finite"):
        planner.plan(torch.tensor([0.0, float("nan"), 0.0, 0.0, 0.0]))
    with pytest.raises(TypeError, match="state"):
        planner.plan([0.0] * 5)
    car, cost = KinematicBicycle(), parking_cost()
    with pytest.raises(ValueError, match="car.yaml: unknown planner 'mpc'.*mppi"):
        build_planner("mpc", car, cost, {}, source="car.yaml")
    with pytest.raises(ValueError, match=r"car.yaml: mppi: unknown key\(s\) \['samples'\].*num_samples"):
        build_planner("mppi", car, cost, {"samples": 10}, source="car.yaml")
    with pytest.raises(ValueError, match="mppi: temperature"):
        build_planner("mppi", car, cost, {"temperature": 0.0})
    with pytest.raises(ValueError, match="noise_smoothing.*smppi"):
        build_planner("mppi", car, cost, {"noise_smoothing": "pink"})
    with pytest.raises(ValueError, match="sigma: expected 2 values"):
        build_planner("mppi", car, cost, {"sigma": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="action_high must exceed action_low"):
        build_planner("mppi", car, cost, {"action_low": 1.0, "action_high": 0.0})
    with pytest.raises(ValueError, match="mppi: iterations: expected an integer >= 1"):
        build_planner("mppi", car, cost, {"iterations": 0})
    with pytest.raises(ValueError, match="mppi: bias_correction: expected a finite number >= 0.0 and <= 1"):
        build_planner("mppi", car, cost, {"bias_correction": 1.5})
    with pytest.raises(ValueError, match="bias_correction and disagreement_weight: not together"):
        build_planner("mppi", car, cost, {"bias_correction": 0.3, "disagreement_weight": 1.0})
    unset = build_cost({"goal_pose": {}}, 5, 2)
    with pytest.raises(RuntimeError, match="goal"):
        MppiPlanner(car, unset, MppiConfig(horizon=4, num_samples=8, compile=False)).plan(torch.zeros(5))


# Graph capture only (aot_eager): the whole step traces with no graph break. The inductor
# backend generates and compiles C++ (minutes on a busy 2-core machine); `mbrl-ros bench
# planners` runs it and reports when it falls back to eager.
@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_step_matches_eager_step(backend, monkeypatch):
    """The compiled step is the same function: same noise (counter-based), same plan."""
    monkeypatch.setattr(MppiPlanner, "COMPILE_BACKEND", backend)
    settings = dict(horizon=3, num_samples=16, noise_smoothing="beta", max_rate=0.3, seed=4)
    eager = small_planner(compile=False, **settings)
    compiled = small_planner(compile=True, **settings)
    state = torch.tensor([0.0, 1.0, 0.2, 2.0, 0.0])
    for _ in range(2):  # the second call has a previous action: same graph, no recompile
        a, b = eager.plan(state), compiled.plan(state)
        assert compiled.compiled, "torch.compile fell back to eager"
        assert torch.allclose(a.nominal_actions, b.nominal_actions, atol=1e-5)
        assert torch.allclose(a.predicted_states, b.predicted_states, atol=1e-4)
        state = a.predicted_states[1]


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_an_ensemble_with_ts1_compiles_and_a_hot_swap_needs_no_recompile(backend, monkeypatch):
    """The ensemble's TS1 rollout traces into one graph (its member assignment is counter-based, not a
    torch.Generator, which dynamo cannot trace), plans as the eager step does, and after the weights change in
    place (an optimiser step, a hot swap) the same compiled graph plans with the new weights: no recompile."""
    from mbrl_ros.core.models.ensemble import EnsembleDynamics

    monkeypatch.setattr(MppiPlanner, "COMPILE_BACKEND", backend)
    settings = MppiConfig(horizon=3, num_samples=16, sigma=0.5, seed=2, compile=False)
    models = [EnsembleDynamics(5, 2, ensemble_size=3, hidden_sizes=(16, 16), propagation="ts1", seed=1).eval()
              for _ in range(2)]
    # The reference plans through the model's forward (its own weight cache, rebuilt on every change).
    monkeypatch.setattr(models[0], "time_major", lambda: TimeMajorDynamics(models[0]))
    eager = MppiPlanner(models[0], parking_cost(), settings)
    compiled = MppiPlanner(models[1], parking_cost(), MppiConfig(**{**settings.__dict__, "compile": True}))
    for model in models:  # the same draws from here (building the planner checked the fast path with some)
        model.seed(1)
    state = torch.tensor([0.0, 1.0, 0.2, 2.0, 0.0])
    same_plans_before_and_after_new_weights(eager, compiled, state, [model.layer_weights[1] for model in models])


def same_plans_before_and_after_new_weights(eager: MppiPlanner, compiled: MppiPlanner, state: torch.Tensor,
                                            weights: list[torch.Tensor]) -> None:
    """The compiled planner plans as the eager one, again without a recompile, and after ``weights`` (both
    models') change in place, with the new weights and still without a recompile."""
    import torch._dynamo

    def same_plans() -> None:
        a, b = eager.plan(state), compiled.plan(state)
        assert compiled.compiled, "torch.compile fell back to eager"
        assert torch.allclose(a.nominal_actions, b.nominal_actions, atol=1e-5)
        assert torch.allclose(a.predicted_states, b.predicted_states, atol=1e-4)

    same_plans()
    with torch._dynamo.config.patch(error_on_recompile=True):  # caches filled while tracing would change guards
        same_plans()
    with torch.no_grad():
        for weight in weights:
            weight.mul_(-0.5)
    with torch._dynamo.config.patch(error_on_recompile=True):
        same_plans()


@pytest.mark.parametrize(
    "car",
    [KinematicBicycle(), KinematicBicycle(BicycleParams(lag=0.3, rear_axle_to_cg=1.0)),
     KinematicBicycle(speed_input="velocity", params=BicycleParams(lag=0.1, speed_gain=3.0))],
    ids=["no-lag", "steering-lag", "velocity-input"],
)
def test_time_major_rollout_matches_the_model(car):
    """The planners' fast bicycle path reproduces KinematicBicycle.forward."""
    fast = time_major_dynamics(car)
    assert isinstance(fast, BicycleTimeMajor)
    generator = torch.Generator().manual_seed(0)
    actions = torch.rand(64, 12, 2, generator=generator) * 2 - 1
    state = torch.tensor([1.0, -2.0, 0.4, 3.0, 0.1])
    expected = rollout(car, state, actions)
    assert torch.allclose(fast.rollout(state, actions.permute(1, 2, 0)).permute(2, 0, 1), expected, atol=1e-4)
    states = torch.rand(5, 64, generator=generator)
    assert torch.allclose(fast.step(states, actions[:, 0].T), car(states.T, actions[:, 0]).T, atol=1e-5)
    assert fast.still_valid()


def test_counter_noise_is_reproducible_and_standard_normal():
    a = counter_gaussian(torch.tensor(7), (40, 2, 1000))
    assert torch.equal(a, counter_gaussian(torch.tensor(7), (40, 2, 1000)))
    b = counter_gaussian(torch.tensor(8), (40, 2, 1000))
    assert abs(float(torch.corrcoef(torch.stack((a.flatten(), b.flatten())))[0, 1])) < 0.02
    assert float(a.mean()) == pytest.approx(0.0, abs=0.02) and float(a.std()) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_a_semiparametric_model_compiles_and_a_hot_swap_needs_no_recompile(backend, monkeypatch):
    """The race's semi-parametric model (the lateral-state bicycle with a steering rate limit, plus a TS1
    residual ensemble) traces into one graph: its residual plans through the ensemble's own time-major form,
    whose weights are checked outside the graph (the model's forward checks them by data pointer, which dynamo
    cannot trace: "Data pointer comparison"). It plans as the eager step does, and after the residual's weights
    change in place the same compiled graph plans with the new weights."""
    from mbrl_ros.core.models.base import TimeMajorDynamics
    from mbrl_ros.core.models.semiparametric import SemiparametricDynamics

    monkeypatch.setattr(MppiPlanner, "COMPILE_BACKEND", backend)

    def race_model() -> SemiparametricDynamics:
        prior = KinematicBicycle(BicycleParams(wheelbase=2.58, rear_axle_to_cg=1.42, speed_gain=6.0, steer_gain=0.4,
                                               lag=0.1), dt=0.05, substeps=2, lateral_states=True,
                                 steer_rate_limit=0.4)
        return SemiparametricDynamics(prior, ensemble_size=3, hidden_sizes=(16, 16), angle_dims=[2],
                                      ignored_input_dims=[0, 1], propagation="ts1", seed=1).eval()

    models = [race_model() for _ in range(2)]
    # The reference plans through the model's forward (the residual's own weight cache, rebuilt on every change).
    monkeypatch.setattr(models[0], "time_major", lambda: TimeMajorDynamics(models[0]))
    cost = build_cost({"goal_pose": {"position_weight": 1.0, "yaw_weight": 30.0}}, 7, 2, source="test: cost")
    cost.set_context("goal", torch.tensor([5.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    settings = MppiConfig(horizon=3, num_samples=16, sigma=0.5, seed=2, compile=False)
    eager = MppiPlanner(models[0], cost, settings)
    compiled = MppiPlanner(models[1], cost, MppiConfig(**{**settings.__dict__, "compile": True}))
    for model in models:  # the same draws from here (building the planner checked the fast path with some)
        model.residual.seed(1)
    state = torch.tensor([0.0, 1.0, 0.2, 8.0, 0.05, 0.1, 0.3])
    assert type(compiled._dynamics).__name__ == "SemiparametricTimeMajor"
    same_plans_before_and_after_new_weights(eager, compiled, state,
                                            [model.residual.layer_weights[1] for model in models])


class _Lag(DynamicsModel):
    """Two position-controlled joints: ``x' = x + 0.3 (u - x) + sag`` (a first-order lag toward the target ``u``;
    ``sag``: a constant pull the model may not know, which moves the steady state to ``u + sag / 0.3``)."""

    def __init__(self, sag: float = 0.0) -> None:
        super().__init__(2, 2)
        self.sag = sag

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return states + 0.3 * (actions - states) + self.sag


TARGET = torch.tensor([0.4, -0.3])


def lag_planner(**overrides) -> MppiPlanner:
    cost = build_cost({"joints": {"type": "joint_target", "indices": [0, 1], "stage_weight": 1.0,
                                  "terminal_weight": 5.0}}, 2, 2, source="test: cost")
    cost.set_context("joint_target", TARGET)
    config = dict(horizon=5, num_samples=128, sigma=0.3, temperature=0.001, noise_smoothing="beta", beta=0.9,
                  zero_noise_fraction=0.01, compile=False, seed=3)
    config.update(overrides)
    return MppiPlanner(_Lag(), cost, MppiConfig(**config))


def closed_loop(planner: MppiPlanner, plant: DynamicsModel, steps: int = 40) -> torch.Tensor:
    state = torch.zeros(2)
    for _ in range(steps):
        action = planner.plan(state).action
        state = plant(state[None], action[None])[0]
    return state


def test_bias_correction_removes_the_steady_state_error_of_a_model_that_misses_a_constant_pull():
    """The model misses the plant's sag (0.02 a step: a steady state 0.067 below the target it holds, 0.094 over
    both joints). Without correction the loop settles off the target (less than that: each plan's first actions
    overshoot to close the gap the model expects to close, a proportional feedback); with it the estimate takes
    the sag up and the loop settles on the target (offset-free MPC's constant output disturbance)."""
    plant = _Lag(sag=-0.02)
    settings = dict(sigma=0.1, temperature=1e-5, iterations=3, iteration_decay=0.3)  # on the exact model: 0.001 off
    plain = float((closed_loop(lag_planner(**settings), plant) - TARGET).norm())
    corrected_planner = lag_planner(bias_correction=0.3, **settings)
    corrected = float((closed_loop(corrected_planner, plant) - TARGET).norm())
    assert plain > 0.025, f"without correction the loop should settle a few hundredths off, got {plain:.4f}"
    assert corrected < 0.005, f"with correction the loop should settle on the target, got {corrected:.4f} (without: {plain:.4f})"
    assert torch.allclose(corrected_planner.bias, torch.tensor([-0.02, -0.02]), atol=2e-3), corrected_planner.bias


def test_bias_estimate_is_cleared_by_reset_and_skips_a_gap_in_the_cycles():
    planner, plant = lag_planner(bias_correction=0.5), _Lag(sag=-0.02)
    state = torch.zeros(2)
    for _ in range(3):
        state = plant(state[None], planner.plan(state).action[None])[0]
    planner.plan(state)
    assert torch.allclose(planner.bias, torch.full((2,), -0.02 * (1 - 0.5 ** 3)), atol=1e-5), planner.bias
    before = planner.bias.clone()
    planner.forget_transition()
    planner.plan(torch.tensor([0.9, 0.9]))  # not one step from the last state: no update
    assert torch.equal(planner.bias, before)
    planner.reset()
    assert torch.equal(planner.bias, torch.zeros(2))


def test_the_controller_tells_the_planner_of_a_cycle_without_a_plan():
    """A stop between two plans (an unusable state) breaks the pair of states the bias learns from."""
    from mbrl_ros.core.control import RecedingHorizonController

    controller = RecedingHorizonController([-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], explore=False)
    controller.attach_planner(lag_planner(bias_correction=0.5))
    controller.step(np.zeros(2))
    controller.step(None, problem="stale state")  # the stop: no plan
    controller.step(np.array([0.5, 0.5]))  # far from where the last plan's action leads: must not count
    assert torch.equal(controller.planner.bias, torch.zeros(2)), controller.planner.bias
    controller.step(np.array([0.5, 0.5]))  # one cycle after a plan: counts
    assert float(controller.planner.bias.abs().sum()) > 0


def test_more_iterations_get_a_cheaper_plan_from_a_cold_start():
    """Each iteration samples around the last one's plan: three in one plan go further than one."""
    state = torch.tensor([-0.8, 0.8])
    costs = {n: lag_planner(iterations=n, temperature=0.01, sigma=0.1).plan(state).cost for n in (1, 3)}
    assert costs[3] < 0.8 * costs[1], costs


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_iterations_and_bias_match_the_eager_ones(backend, monkeypatch):
    """The iterations' noise scales and the bias estimate reach the compiled step as inputs: same plans as eager,
    the bias changing between plans without a recompile."""
    import torch._dynamo

    monkeypatch.setattr(MppiPlanner, "COMPILE_BACKEND", backend)
    settings = dict(iterations=2, iteration_decay=0.5, bias_correction=0.5)
    eager, compiled = lag_planner(**settings), lag_planner(compile=True, **settings)
    plant, state = _Lag(sag=-0.05), torch.zeros(2)
    for k in range(3):
        with torch._dynamo.config.patch(error_on_recompile=k > 0):
            a, b = eager.plan(state), compiled.plan(state)
        assert compiled.compiled, "torch.compile fell back to eager"
        assert torch.allclose(a.nominal_actions, b.nominal_actions, atol=1e-5)
        assert torch.allclose(a.predicted_states, b.predicted_states, atol=1e-5)
        state = plant(state[None], a.action[None])[0]
    assert float(compiled.bias.abs().sum()) > 0
