"""SemiparametricDynamics: a learned residual corrects a wrong physics prior."""

import math

import pytest
import torch

from mbrl_ros.core.data import TransitionDataset, multistep_error
from mbrl_ros.core.models import EnsembleDynamics, SemiparametricDynamics
from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle
from mbrl_ros.core.training import train_ensemble


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def drive(model, episodes: int, steps: int, seed: int) -> TransitionDataset:
    """Random held commands from random poses; speeds kept moderate (|v| ~< 3 m/s)."""
    g = torch.Generator().manual_seed(seed)
    state = torch.zeros(episodes, 5)
    state[:, :2] = torch.randn(episodes, 2, generator=g) * 20
    state[:, 2] = torch.rand(episodes, generator=g) * 2 * math.pi - math.pi
    held = torch.zeros(episodes, 2)
    states, actions = [state], []
    with torch.no_grad():
        for _ in range(steps):
            held = torch.where(torch.rand(episodes, 2, generator=g) < 0.3, torch.rand(episodes, 2, generator=g) * 2 - 1, held)
            action = held.clone()
            action[:, 0] = (held[:, 0] - 0.3 * states[-1][:, 3]).clamp(-1, 1)
            states.append(model(states[-1], action))
            actions.append(action)
    states, actions = torch.stack(states, 1), torch.stack(actions, 1)
    dataset = TransitionDataset(5, 2)
    for episode in range(episodes):
        dataset.append_trajectory(states[episode], actions[episode], episode)
    return dataset


TRUE = BicycleParams(lag=0.3)  # highway-env's car with a lagging steering actuator
WRONG = BicycleParams(wheelbase=6.0, rear_axle_to_cg=2.5, speed_gain=4.0, steer_gain=0.65, lag=0.0)


def residual_model(seed=0, **kwargs) -> SemiparametricDynamics:
    options = dict(ensemble_size=5, hidden_sizes=(64, 64), angle_dims=(2,), ignored_input_dims=(0, 1), seed=seed)
    options.update(kwargs)
    return SemiparametricDynamics(KinematicBicycle(WRONG), **options)


def test_residual_on_a_wrong_bicycle_beats_the_prior_alone():
    """1,280 training transitions (40 episodes x 40 steps of 0.2 s, 20 % held out).

    Measured here: the 10-step RMSE drops to ~0.21x the wrong prior's.
    """
    true = KinematicBicycle(TRUE)
    train, val = drive(true, 40, 40, seed=0).split_by_episode(0.2, seed=0)
    test = drive(true, 30, 40, seed=100)
    model = residual_model(propagation="mean")
    prior_params = {k: v.clone() for k, v in model.prior.state_dict().items()}
    train_ensemble(model, train, val, epochs=100, batch_size=256, lr=3e-3, patience=20, seed=0)

    prior_error = multistep_error(model.prior, test, horizons=(1, 10), angle_dims=(2,))
    model_error = multistep_error(model, test, horizons=(1, 10), angle_dims=(2,))
    assert model_error.rmse[10] < 0.4 * prior_error.rmse[10], (model_error, prior_error)
    assert model_error.rmse[1] < 0.4 * prior_error.rmse[1], (model_error, prior_error)
    for name, value in model.prior.state_dict().items():  # the prior is not trained
        assert torch.equal(value, prior_params[name]), name


def test_propagation_modes_and_spread_come_from_the_residual():
    model = residual_model(hidden_sizes=(8,), num_elites=3)
    g = torch.Generator().manual_seed(0)
    states, actions = torch.randn(30, 5, generator=g), torch.rand(30, 2, generator=g) * 2 - 1
    members = model.predict_members(states, actions)
    assert members.shape == (3, 30, 5)
    for mode in ("ts1", "tsinf", "mean"):
        model.propagation = mode
        assert model.residual.propagation == mode
        with torch.no_grad():
            assert model(states, actions).shape == (30, 5)
    model.propagation = "tsinf"
    with torch.no_grad():
        out = model(states, actions)
    for i in range(30):
        torch.testing.assert_close(out[i], members[i % 3, i], rtol=1e-5, atol=1e-5)
    prediction = model.predict(states, actions)
    torch.testing.assert_close(prediction.mean, members.mean(0))
    torch.testing.assert_close(prediction.spread, members.std(0, unbiased=False))


def test_residual_targets_make_the_ensemble_learn_exactly_the_prior_error():
    model = residual_model()
    g = torch.Generator().manual_seed(0)
    states, actions = torch.randn(10, 5, generator=g), torch.rand(10, 2, generator=g) * 2 - 1
    next_states = KinematicBicycle(TRUE)(states, actions)
    pseudo_next = model.residual_targets(states, actions, next_states)
    residual = model.residual.delta_targets(states, pseudo_next)
    torch.testing.assert_close(model.prior(states, actions) + residual, next_states, rtol=1e-5, atol=1e-5)


def test_construction_errors_are_clear():
    with pytest.raises(TypeError, match="prior: expected a DynamicsModel"):
        SemiparametricDynamics(torch.nn.Linear(5, 5))
    with pytest.raises(ValueError, match=r"residual: state/action dims \(4, 2\) differ from the prior's \(5, 2\)"):
        SemiparametricDynamics(KinematicBicycle(), EnsembleDynamics(4, 2))


@pytest.mark.parametrize("prior", [KinematicBicycle(),  # its own time-major form (BicycleTimeMajor)
                                   KinematicBicycle(dt=0.05, substeps=2, lateral_states=True, steer_rate_limit=0.4)])
@pytest.mark.parametrize("propagation", ["ts1", "tsinf", "mean"])
def test_the_time_major_form_is_the_prior_plus_the_residuals_own_and_follows_new_weights(prior, propagation):
    """The sampling planners' form: the prior's time-major form plus the residual ensemble's (which checks its
    weights outside a compiled step); the planners' check against ``forward`` accepts it (no warning), and after
    the residual's weights change in place ``still_valid`` takes them and it still matches ``forward``."""
    import warnings

    from mbrl_ros.core.models.semiparametric import SemiparametricTimeMajor
    from mbrl_ros.core.planners.base import time_major_dynamics
    from mbrl_ros.core.models.base import TimeMajorDynamics

    model = SemiparametricDynamics(prior, ensemble_size=3, hidden_sizes=(16, 16), angle_dims=[2],
                                   propagation=propagation, seed=3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = time_major_dynamics(model)
    assert type(fast) is SemiparametricTimeMajor
    nx = model.state_dim
    g = torch.Generator().manual_seed(0)
    states = torch.randn(nx, 6, generator=g)
    actions = torch.rand(4, 2, 6, generator=g) * 2 - 1
    with torch.no_grad():
        model.residual.layer_weights[0].mul_(1.5)
        assert fast.still_valid()
        model.residual.seed(5)
        got = fast.rollout(states, actions)
        model.residual.seed(5)
        expected = TimeMajorDynamics(model).rollout(states, actions)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
