"""The hand's physics prior (mbrl_ros/robots/hand/joint_lag.py, sysid.py): identification and how well it
predicts HandReach's MuJoCo simulation (HandSim), through the robot plug-in as the trainer builds it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import fit_model
from mbrl_ros.core.model_kinds import MODEL_KINDS
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.planners.base import checked_numpy_dynamics
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.hand import JOINTS
from mbrl_ros.robots.hand.joint_lag import JointLagParams, LaggedJoints
from mbrl_ros_hardware.hand.shadow_hand import HandSim

HAND = get_robot("hand")
DT = 0.04


def simulate(episodes: range, steps: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transitions ``[E, T, ...]`` of HandSim under the controller's random exploration (filtered noise)."""
    sim = HandSim("reach")
    xs, us, ys = [], [], []
    for episode in episodes:
        policy = ExplorationPolicy(-np.ones(20), np.ones(20), smoothing=0.8, seed=episode)
        policy.reset()
        s = sim.reset(seed=1000 + episode)
        state = np.concatenate([s.positions, s.velocities, s.fingertips.reshape(-1)])
        x, u, y = [], [], []
        for _ in range(steps):
            action = policy()
            s = sim.step(action).state
            following = np.concatenate([s.positions, s.velocities, s.fingertips.reshape(-1)])
            x.append(state), u.append(action), y.append(following)
            state = following
        xs.append(x), us.append(u), ys.append(y)
    return np.array(xs), np.array(us), np.array(ys)


@pytest.fixture(scope="module")
def data():
    return simulate(range(30))


def episodes(x, u, y, part: slice) -> TransitionDataset:
    dataset = TransitionDataset(63, 20)
    for e in range(*part.indices(len(x))):
        dataset.append(x[e], u[e], y[e], episode_ids=e)
    return dataset


def tip_errors(model, states, actions, following, horizon: int) -> np.ndarray:
    """Fingertip error (m, norm over the 15 coordinates) of ``horizon``-step open-loop predictions from every start."""
    errors = []
    with torch.no_grad():
        for start in range(states.shape[1] - horizon + 1):
            x = torch.tensor(states[:, start], dtype=torch.float32)
            for k in range(horizon):
                x = model(x, torch.tensor(actions[:, start + k], dtype=torch.float32))
            errors.append(np.linalg.norm(x[:, 48:].numpy() - following[:, start + horizon - 1, 48:], axis=1))
    return np.concatenate(errors)


def test_the_hand_offers_every_model_kind_on_its_prior():
    assert HAND.model_kinds() == MODEL_KINDS
    prior = HAND.build_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002,
                              "params": {"gain": 0.3, "vel_gain": [7.0] * 24}})
    assert isinstance(prior, LaggedJoints) and prior.physics_robot == "hand" and prior.settings() == \
        {"dt": DT, "fingertip_lag": 0.002, "distal_tendon": False, "state_dim": 63, "action_dim": 20}
    assert prior.params.gain == [0.3] * 24 and prior.params.carry == JointLagParams.first_order_lag(DT).carry
    for bad, match in (({"params": {"gain": [0.3] * 20}}, r"model.params.gain: expected a finite number or 24"),
                       ({"params": {"lag": 0.1}}, r"model.params: unknown key\(s\) \['lag'\]"),
                       ({"substeps": 2}, r"model: unknown key\(s\) \['substeps'\]"),
                       ({"fingertip_lag": -1.0}, "model: need dt > 0 and fingertip_lag >= 0")):
        with pytest.raises(ValueError, match=match):
            HAND.build_model({"type": "parametric", **bad})


def test_identification_recovers_known_lag_parameters_from_simulated_transitions():
    rng = np.random.default_rng(0)
    true = JointLagParams.from_array(np.stack([rng.uniform(0.05, 0.4, 24), rng.uniform(0.0, 0.02, 24),
                                               rng.uniform(-0.01, 0.01, 24), rng.uniform(2.0, 8.0, 24),
                                               rng.uniform(-0.2, 0.3, 24), rng.uniform(-0.3, 0.3, 24)], axis=1))
    model = LaggedJoints(true, DT, fingertip_lag=0.002).double()
    states = torch.from_numpy(np.concatenate([rng.uniform(-0.5, 1.5, (400, 24)), rng.normal(0, 2, (400, 24)),
                                              np.zeros((400, 15))], axis=1))
    actions = torch.from_numpy(rng.uniform(-1, 1, (400, 20)))
    following = model(states, actions).detach()
    result = HAND.identify(HAND.build_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002}),
                           states, actions, following)
    assert result.success and result.num_transitions == 400
    assert np.abs(result.params.as_array() - model.theta.numpy()).max() < 1e-8  # theta: true, as float32 holds it
    assert max(result.rms_residual.values()) < 1e-9 < min(result.initial_rms_residual.values())
    assert isinstance(result.model(), LaggedJoints) and result.model().fingertip_lag == 0.002
    constant = actions.clone()
    constant[:, 3] = 0.2
    with pytest.raises(ValueError, match=r"actions \['A_FFJ2'\] are constant"):
        HAND.identify(result.model(), states, constant, following)


def test_the_identified_prior_predicts_handsims_next_state_within_a_few_millimetres(data):
    """Identified on 20 episodes of random exploration (1,000 transitions), scored on 10 others: the
    fingertips 1 step ahead within 4 mm on average (3.0 mm measured), 10 steps ahead within 1.5 cm
    (1.3 cm); the unidentified start and the prior without the fingertips' lag do worse."""
    x, u, y = data
    train, held = slice(0, 20), slice(20, 30)
    fit = fit_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002}, episodes(x, u, y, train), physics=HAND)
    assert fit.details["sysid"]["num_transitions"] == 1000 and len(fit.config["params"]["gain"]) == 24
    one, ten = (tip_errors(fit.model, x[held], u[held], y[held], h) for h in (1, 10))
    assert one.mean() < 0.004 and ten.mean() < 0.015, (one.mean(), ten.mean())
    joints = fit.model(torch.tensor(x[held].reshape(-1, 63), dtype=torch.float32),
                       torch.tensor(u[held].reshape(-1, 20), dtype=torch.float32))[:, :24].detach().numpy()
    assert np.abs(joints - y[held].reshape(-1, 63)[:, :24]).mean() < 0.01  # rad
    start = HAND.build_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002})
    assert tip_errors(start, x[held], u[held], y[held], 1).mean() > 1.5 * one.mean()
    no_lag = LaggedJoints(fit.model.params, DT, fingertip_lag=0.0)
    assert tip_errors(no_lag, x[held], u[held], y[held], 1).mean() > one.mean() + 2e-4


def test_a_semiparametric_hand_model_trains_its_residual_on_the_identified_prior(data):
    x, u, y = data
    config = {"type": "semiparametric", "prior": {"type": "parametric", "dt": DT, "fingertip_lag": 0.002},
              "residual": {"ensemble_size": 2, "hidden_sizes": [32]}}
    fit = fit_model(config, episodes(x, u, y, slice(0, 16)), episodes(x, u, y, slice(16, 20)), training={"epochs": 3}, physics=HAND)
    assert type(fit.model.prior).__name__ == "LaggedJoints" and "sysid" in fit.details and "training" in fit.details
    assert len(fit.config["prior"]["params"]["vel_gain"]) == 24
    assert tip_errors(fit.model.deterministic(), x[20:], u[20:], y[20:], 1).mean() < 0.01


@pytest.mark.parametrize("distal_tendon", [False, True])
def test_the_numpy_form_is_the_prior_with_closed_form_jacobians(distal_tendon):
    """iLQR's float64 path (LaggedJointsNumpy): the same step, and Jacobians equal to autograd's, actions
    inside and beyond their bounds (a clipped action moves nothing), distal joints inside their tendon's
    band, at its edges and at their limits."""
    model = HAND.build_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002, "distal_tendon": distal_tendon,
                              "params": {"carry": 0.01, "offset": 0.003, "vel_carry": 0.1}}).double()
    generator = torch.Generator().manual_seed(3)
    states = torch.rand(60, 63, generator=generator, dtype=torch.float64) * 2 - 0.5
    actions = torch.rand(60, 20, generator=generator, dtype=torch.float64) * 2.6 - 1.3
    fast = model.numpy_dynamics()
    expected = model(states, actions).detach().numpy()
    assert np.abs(fast.step(states.numpy().T, actions.numpy().T).T - expected).max() < 1e-12
    for got, want in zip(fast.jacobians(states.numpy(), actions.numpy()), model.jacobians(states, actions)):
        assert np.abs(got - want.numpy()).max() < 1e-7
    assert (np.abs(actions.numpy()) > 1).any() and (np.abs(actions.numpy()) < 1).any()
    assert checked_numpy_dynamics(model.float()) is not None


def test_ilqr_on_the_prior_brings_the_fingertips_to_a_pose_it_can_reach():
    """iLQR through the prior (numpy path) on the prior itself: HandReach's cost, a target the hand can hold
    (the fingertips of a held action), reached within 2 mm in 25 steps from the start pose."""
    model = HAND.build_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002}).eval()
    cost = HAND.build_cost({"fingertips": {"type": "fingertip_target", "indices": list(range(48, 63)),
                                           "stage_weight": 1.0, "terminal_weight": 5.0},
                            "effort": {"weight": 0.001}}, 63, 20)
    sim = HandSim("reach")
    s = sim.reset(seed=7)
    state = torch.tensor(np.concatenate([s.positions, s.velocities, s.fingertips.reshape(-1)]), dtype=torch.float32)
    held = torch.tensor(np.random.default_rng(7).uniform(-0.6, 0.6, 20), dtype=torch.float32)
    with torch.no_grad():
        target = model.rollout(state[None], held.expand(1, 60, 20))[0, -1, 48:]
    cost.set_context("fingertip_target", target)
    planner = build_planner("ilqr", model, cost, {"horizon": 10, "max_iterations": 10})
    assert planner.numpy_form
    start = float(torch.linalg.vector_norm(state[48:] - target))
    x = state
    with torch.no_grad():
        for _ in range(25):
            x = model(x[None], planner.plan(x).action[None])[0]
    assert start > 0.03 and float(torch.linalg.vector_norm(x[48:] - target)) < 0.002


def test_the_distal_tendon_holds_each_distal_joint_near_its_steady_state():
    """HandReach's distal joints have no actuator: their tendon keeps J0 within 0.142 rad of 1.142 J1 and
    leaves it free inside. Held targets for 25 steps from HandSim's start: the lag toward J1's target ends
    0.06-0.08 rad off the simulator's J0 (FF, MF, LF; measured), the tendon model within 0.03."""
    x, u, y = simulate(range(20))
    sim, rng = HandSim("reach"), np.random.default_rng(0)
    errors = {}
    for tendon in (False, True):
        model = fit_model({"type": "parametric", "dt": DT, "fingertip_lag": 0.002, "distal_tendon": tendon},
                          episodes(x, u, y, slice(0, 20)), physics=HAND).model
        off = []
        for k in range(10):
            s, target = sim.reset(seed=300 + k), rng.uniform(-0.7, 0.7, 20)
            state = torch.tensor(np.concatenate([s.positions, s.velocities, s.fingertips.reshape(-1)]),
                                 dtype=torch.float32)[None]
            with torch.no_grad():
                for _ in range(25):
                    s = sim.step(target).state
                    state = model(state, torch.tensor(target, dtype=torch.float32)[None])
            off.append(np.abs(state[0, :24].numpy() - s.positions))
        errors[tendon] = np.mean(off, axis=0)
    distal = [JOINTS.index(f"{f}J0") for f in ("FF", "MF", "LF")]
    assert (errors[True][distal] < 0.03).all() and (errors[False][distal] > 0.05).all(), errors
