"""CEM and iCEM: goal reaching on a double integrator, coloured noise spectrum, limits, config errors."""

from __future__ import annotations

import math

import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.planners.cem import CemConfig, CemPlanner, coloured_noise


class DoubleIntegrator(DynamicsModel):
    """Position and velocity, acceleration command in [-1, 1] m/s^2, dt 0.1 s."""

    def __init__(self):
        super().__init__(2, 1)

    def forward(self, states, actions):
        p, v = states.unbind(-1)
        a = actions[..., 0]
        return torch.stack((p + 0.1 * v + 0.005 * a, v + 0.1 * a), dim=-1)


def reach_cost():
    cost = build_cost(
        {"target": {"type": "joint_target", "indices": [0, 1], "weights": [1.0, 0.5], "terminal_weight": 5.0},
         "effort": {"weight": 0.01}},
        2, 1,
    )
    cost.set_context("joint_target", torch.tensor([1.0, 0.0]))
    return cost


@pytest.mark.parametrize(
    "settings",
    [
        {},  # plain CEM with momentum
        {"noise_exponent": 2.0, "keep_elites_fraction": 0.3, "population_decay": 1.25, "return_best": True},  # iCEM
    ],
    ids=["cem", "icem"],
)
def test_cem_reaches_goal_on_double_integrator(settings):
    model = DoubleIntegrator()
    config = {"horizon": 15, "population": 200, "elites": 20, "iterations": 4, "alpha": 0.1, "seed": 3, **settings}
    planner = build_planner("cem", model, reach_cost(), config)
    state = torch.zeros(2)
    for _ in range(60):
        state = model(state[None], planner.plan(state).action[None])[0]
    assert abs(float(state[0]) - 1.0) < 0.05 and abs(float(state[1])) < 0.05, state


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_has_the_requested_spectrum_and_unit_variance(exponent):
    generator = torch.Generator().manual_seed(0)
    noise = coloured_noise((4000, 64), exponent, generator)
    assert float(noise.std()) == pytest.approx(1.0, rel=0.03)
    power = torch.fft.rfft(noise.double(), dim=-1).abs().pow(2).mean(0)
    freqs = torch.fft.rfftfreq(64, dtype=torch.float64)
    x, y = freqs[1:-1].log(), power[1:-1].log()  # leave out DC and Nyquist
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    assert slope == pytest.approx(-exponent, abs=0.1)


def test_bounds_and_rate_limits_hold_and_elites_carry_over():
    planner = CemPlanner(
        DoubleIntegrator(), reach_cost(),
        CemConfig(horizon=10, population=64, elites=8, iterations=3, action_low=-0.4, action_high=0.7,
                  max_rate=0.1, keep_elites_fraction=0.5, num_rollouts_returned=5),
    )
    state, previous = torch.zeros(2), None
    for _ in range(5):
        result = planner.plan(state)
        plan = result.nominal_actions
        assert torch.all(plan >= -0.4) and torch.all(plan <= 0.7)
        assert torch.all((plan[1:] - plan[:-1]).abs() <= 0.1 + 1e-6)
        if previous is not None:
            assert torch.all((plan[0] - previous).abs() <= 0.1 + 1e-6)
        assert result.rollouts.shape == (5, 11, 2)
        previous = result.action
        state = planner.model(state[None], result.action[None])[0]
    # Half of the 8 elites carry over, shifted by one step into the next cycle.
    assert planner._kept.shape == (4, 10, 1)
    assert torch.equal(planner._kept[:, -1], planner._kept[:, -2])


def test_same_seed_same_plan():
    plans = [build_planner("cem", DoubleIntegrator(), reach_cost(), {"horizon": 8, "seed": s}).plan(torch.zeros(2))
             for s in (1, 1, 2)]
    assert torch.equal(plans[0].nominal_actions, plans[1].nominal_actions)
    assert not torch.equal(plans[0].nominal_actions, plans[2].nominal_actions)


def test_config_errors_name_the_key():
    model, cost = DoubleIntegrator(), reach_cost()
    with pytest.raises(ValueError, match=r"cem: elites: at most population"):
        build_planner("cem", model, cost, {"population": 10, "elites": 20})
    with pytest.raises(ValueError, match=r"cem: unknown key\(s\) \['beta'\].*noise_exponent"):
        build_planner("cem", model, cost, {"beta": 2.0})
    with pytest.raises(ValueError, match=r"cem: population_decay"):
        build_planner("cem", model, cost, {"population_decay": 0.5})
    assert math.isfinite(build_planner("cem", model, cost, {"horizon": 4}).plan(torch.zeros(2)).cost)
