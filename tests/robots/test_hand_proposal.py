"""HandReach's proposal for the planner (mbrl_ros/robots/hand/proposal.py): the held action whose steady state
through the prior is the cost's fingertip target; the prior's steady state (``LaggedJointsNumpy.held``); the
fingertip term's integral correction (costs.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.hand.costs import separated
from mbrl_ros.robots.hand.joint_lag import JointLagParams, LaggedJoints
from mbrl_ros.robots.hand.proposal import ReachProposal

HAND = get_robot("hand")
TIPS = list(range(48, 63))


def identified_like() -> LaggedJoints:
    """A prior with per-joint lags, a pull (offset) and a little velocity carry, as identification gives."""
    rng = np.random.default_rng(3)
    params = JointLagParams.from_dict({"gain": list(rng.uniform(0.2, 0.35, 24)), "carry": list(rng.uniform(0, 0.01, 24)),
                                       "offset": list(rng.normal(0, 0.005, 24)), "vel_gain": list(rng.uniform(4, 6, 24)),
                                       "vel_carry": list(rng.uniform(0.0, 0.2, 24)), "vel_offset": list(rng.normal(0, 0.02, 24))})
    return LaggedJoints(params, dt=0.04, fingertip_lag=0.002)


def reach_cost(**fingertips):
    section = {"fingertips": {"type": "fingertip_target", "indices": TIPS, "terminal_weight": 5.0, **fingertips},
               "effort": {"weight": 0.001}}
    return build_cost(section, 63, 20, kinds=HAND.term_kinds())


def test_held_is_where_the_prior_settles_with_a_bias_and_its_jacobian_is_the_derivative():
    model = identified_like()
    numpy_form = model.numpy_dynamics()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.9, 0.9, (3, 20))
    bias = rng.normal(0.0, 0.002, 63)
    tips, jacobian = numpy_form.held(actions, bias)
    x = np.zeros((63, 3))
    for _ in range(600):
        x = numpy_form.step(x, actions.T) + bias[:, None]
    inside = np.all(np.abs(x[:24].T - model.target_centre.numpy()) < model.target_half.numpy(), axis=1)
    assert inside.any()
    np.testing.assert_allclose(x[48:].T[inside], tips[inside], atol=1e-9)  # in range, the prior's own steady state
    eps = 1e-6
    for k in (0, 7, 19):
        step = np.zeros(20)
        step[k] = eps
        numeric = (numpy_form.held(actions + step, bias)[0] - numpy_form.held(actions - step, bias)[0]) / (2 * eps)
        np.testing.assert_allclose(jacobian[:, :, k], numeric, atol=1e-6)


def test_held_keeps_each_joint_within_its_range_and_a_target_past_it_moves_nothing():
    numpy_form = identified_like().numpy_dynamics()
    beyond = np.zeros((1, 20))
    beyond[0, 4] = 0.99  # FFJ1's target near the top of its range: the gap takes the joint past it, or not
    offset = np.zeros(63)
    offset[4] = -1.0  # a bias that pushes FFJ1 far past its upper limit (1.571 rad)
    _, jacobian = numpy_form.held(beyond, offset)
    assert np.all(jacobian[0, :, 4] == 0.0)
    with pytest.raises(ValueError, match="distal_tendon"):
        LaggedJoints(dt=0.04, distal_tendon=True).numpy_dynamics().held(beyond)


def plan_episode(planner, proposal, goal, state, plans: int):
    planner.reset()
    planner.cost.set_context("fingertip_target", torch.tensor(goal, dtype=torch.float32))
    for _ in range(plans):
        result = planner.plan(state)
        state = planner.model(state[None], result.action[None])[0]
    return state, result


def test_mppi_with_the_proposal_reaches_a_reachable_goal_that_mppi_alone_misses():
    """On the prior as its own plant: a goal the prior reaches by holding an action, from the open hand. MPPI
    alone ends short of it (as on HandReach's goals); with the proposal the planner holds it within 1 mm."""
    torch.manual_seed(0)
    model = identified_like()
    rng = np.random.default_rng(1)
    goal_action = rng.uniform(-0.6, 0.6, (1, 20))
    goal = model.numpy_dynamics().held(goal_action)[0][0]
    start = torch.zeros(63)
    with torch.no_grad():
        for _ in range(40):
            start = model(start[None], torch.zeros(1, 20))[0]
    settings = {"horizon": 5, "num_samples": 64, "temperature": 0.005, "sigma": 0.15, "noise_smoothing": "beta",
                "beta": 0.98, "zero_noise_fraction": 0.01, "compile": False, "policy_prior_fraction": 0.5}
    alone = build_planner("mppi", model, reach_cost(), settings)
    end, _ = plan_episode(alone, None, goal, start, 20)
    alone_cm = 100 * float(np.linalg.norm(end[48:].numpy() - goal))
    planner = build_planner("mppi", model, reach_cost(), settings)
    proposal = ReachProposal(restarts=8, iterations_per_plan=3, narrow_after=9)
    planner.set_prior(proposal)
    end, result = plan_episode(planner, proposal, goal, start, 20)
    with_cm = 100 * float(np.linalg.norm(end[48:].numpy() - goal))
    assert alone_cm > 1.0, alone_cm
    assert with_cm < 0.1, with_cm
    assert proposal.distance < 1e-4 and len(proposal._solver.x) == 1  # narrowed to its best start
    assert result.info["warm_start"] in ("policy", "shifted")


def test_the_proposal_has_nothing_without_a_goal_or_the_hands_prior_and_restarts_on_a_new_goal():
    model = identified_like()
    planner = build_planner("mppi", model, reach_cost(), {"horizon": 4, "num_samples": 8, "compile": False,
                                                          "policy_prior_fraction": 0.5})
    proposal = ReachProposal(restarts=4)
    assert not proposal.prepare(torch.zeros(63), planner)  # no goal set
    planner.cost.set_context("fingertip_target", torch.full((15,), 1.0))
    assert proposal.prepare(torch.zeros(63), planner)
    first = proposal._solver
    assert proposal.prepare(torch.zeros(63), planner) and proposal._solver is first  # same goal: goes on
    planner.cost.set_context("fingertip_target", torch.full((15,), 1.1))
    assert proposal.prepare(torch.zeros(63), planner) and proposal._solver is not first  # a new goal: again
    other = build_planner("mppi", LaggedJoints(dt=0.04, distal_tendon=True), reach_cost(),
                          {"horizon": 4, "num_samples": 8, "compile": False})
    other.cost.set_context("fingertip_target", torch.full((15,), 1.0))
    assert not proposal.prepare(torch.zeros(63), other)
    with pytest.raises(ValueError, match="restarts"):
        HAND.planner_proposal({"type": "reach", "restarts": 0}, "proposal")
    with pytest.raises(ValueError, match="unknown key"):
        HAND.planner_proposal({"type": "reach", "restart": 3}, "proposal")
    with pytest.raises(ValueError, match="'reach'"):
        HAND.planner_proposal({"type": "ik"}, "proposal")
    assert HAND.planner_proposal({}, "proposal") is None


def test_the_integral_correction_moves_the_target_against_the_settled_error_within_its_limits():
    cost = reach_cost(integral_gain=0.5, integral_radius=0.02, integral_limit=0.004)
    term = cost.terms["fingertips"]
    goal = torch.linspace(0.9, 1.1, 15, dtype=torch.float64)
    cost.set_context("fingertip_target", goal)
    state = torch.zeros(63, dtype=torch.float64)
    state[48:] = goal + 0.05 / np.sqrt(15)  # 5 cm away: outside the radius, no change
    cost.prepare(state)
    torch.testing.assert_close(term.target, goal.to(term.target.dtype))
    error = torch.full((15,), 0.004 / np.sqrt(15), dtype=torch.float64)  # 4 mm away, settled
    state[48:] = goal + error
    cost.prepare(state)
    torch.testing.assert_close(term.target, (goal - 0.5 * error).to(term.target.dtype))
    for _ in range(10):
        cost.prepare(state)
    assert float(torch.linalg.vector_norm(term.goal - term.target)) == pytest.approx(0.004, rel=1e-4)  # the limit
    cost.set_context("fingertip_target", goal)  # a new goal clears it
    torch.testing.assert_close(term.target, goal.to(term.target.dtype))


def test_with_an_expected_hold_the_correction_estimates_the_hold_error_and_does_not_wind_up():
    """A goal out of reach: whatever the target, the model says the plan settles 3 mm short of the goal
    (``expected``: the fingers at their limits), and the hand settles 2 mm off that. The correction converges to
    the 2 mm hold error, where the integral (no ``expected``) winds up to its limit pulling at a target no action
    reaches."""
    goal = torch.linspace(0.9, 1.1, 15, dtype=torch.float64)
    short, hold = (torch.full((15,), d / np.sqrt(15), dtype=torch.float64) for d in (0.003, 0.002))
    corrections = {}
    for observed in (True, False):
        cost = reach_cost(integral_gain=0.5, integral_radius=0.02, integral_limit=0.008)
        term = cost.terms["fingertips"]
        cost.set_context("fingertip_target", goal)
        assert not bool(torch.isfinite(term.expected).any())  # nothing expected before a plan
        state = torch.zeros(63, dtype=torch.float64)
        for _ in range(30):
            expected = goal + short  # where the plan settles, per the model, wherever it aims
            if observed:
                term.expected.copy_(expected)
            state[48:] = expected + hold
            cost.prepare(state)
        corrections[observed] = (term.goal - term.target).to(torch.float64)
    torch.testing.assert_close(corrections[True], hold, atol=1e-6, rtol=0)  # float32 buffers
    assert float(torch.linalg.vector_norm(corrections[False])) == pytest.approx(0.008, rel=1e-4)  # wound up
    cost.set_context("fingertip_target", goal + 0.01)  # a new goal: nothing expected yet
    assert not bool(torch.isfinite(cost.terms["fingertips"].expected).any())


def test_the_proposal_tells_the_term_where_its_action_settles():
    model = identified_like()
    planner = build_planner("mppi", model, reach_cost(), {"horizon": 4, "num_samples": 8, "compile": False,
                                                          "policy_prior_fraction": 0.5})
    planner.cost.set_context("fingertip_target", torch.tensor(model.numpy_dynamics().held(np.full((1, 20), 0.2))[0][0]))
    proposal = ReachProposal(restarts=4)
    assert proposal.prepare(torch.zeros(63), planner)
    settles = model.numpy_dynamics().held(proposal.action[None], None, False)[0][0]
    term = planner.cost.terms["fingertips"]
    np.testing.assert_allclose(term.expected.double().numpy(), settles, atol=1e-6)
    assert float(np.linalg.norm(settles - term.target.double().numpy())) == pytest.approx(proposal.distance, abs=1e-6)


def test_min_separation_moves_goal_fingertips_apart_symmetrically_and_the_integral_aims_from_there():
    thumb, finger = np.array([1.0, 0.9, 0.2]), np.array([1.004, 0.9, 0.2])  # 4 mm apart, as HandReach's pairs
    goal = np.concatenate([finger, [0.9, 0.8, 0.2], [0.9, 0.85, 0.2], [0.9, 0.9, 0.2], thumb])  # ff, mf, rf, lf, th
    aim = separated(torch.tensor(goal), 0.014).numpy().reshape(5, 3)
    np.testing.assert_allclose(aim[0], [1.009, 0.9, 0.2])  # each half the 1 cm shortfall, along their line
    np.testing.assert_allclose(aim[4], [0.995, 0.9, 0.2])
    np.testing.assert_allclose(aim[1:4], goal.reshape(5, 3)[1:4])  # pairs >= 1.4 cm apart stay
    assert float(np.linalg.norm(aim.ravel() - goal)) == pytest.approx(0.01 / np.sqrt(2))
    cost = reach_cost(min_separation=0.014, integral_gain=0.5, integral_radius=0.02, integral_limit=0.004)
    term = cost.terms["fingertips"]
    cost.set_context("fingertip_target", torch.tensor(goal))
    torch.testing.assert_close(term.goal, torch.tensor(goal, dtype=term.goal.dtype))  # the goal as given
    torch.testing.assert_close(term.target, torch.tensor(aim.ravel(), dtype=term.target.dtype))
    state = torch.zeros(63, dtype=torch.float64)
    state[48:] = torch.tensor(aim.ravel()) + 0.001  # settled 1.7 mm off the aim (9 mm off the goal)
    cost.prepare(state)
    torch.testing.assert_close(term.target, torch.tensor(aim.ravel() - 0.0005, dtype=term.target.dtype))
    assert torch.equal(separated(torch.tensor(goal), 0.0), torch.tensor(goal))
    with pytest.raises(ValueError, match="min_separation"):
        reach_cost(min_separation=-0.01)


def test_the_proposal_keeps_apart_only_the_pairs_its_solution_for_the_goal_brings_within_the_separation():
    """The term separates every pair the goal puts too close until the proposal has solved for the goal itself
    (``narrow_after`` steps); then only the pairs that solution brings within ``min_separation``: a reachable pose
    keeps its two pairs closer than 2.5 cm apart; a little-finger-thumb pair 4 mm apart 10 cm beyond the hand
    (the solution holds them >= 3.9 cm apart) is aimed at the goal itself."""
    model = identified_like()
    pose = model.numpy_dynamics().held(np.full((1, 20), 0.2))[0][0].reshape(5, 3)  # ff-mf, mf-rf 2.2 cm apart
    far = pose.copy()
    far[3] += [0.1, 0.0, 0.0]
    far[4] = far[3] + [0.004, 0.0, 0.0]
    for goal, separation, kept in ((pose, 0.025, {(0, 1), (1, 2)}), (far, 0.014, set())):
        planner = build_planner("mppi", model, reach_cost(min_separation=separation),
                                {"horizon": 4, "num_samples": 8, "compile": False, "policy_prior_fraction": 0.5})
        term = planner.cost.terms["fingertips"]
        term.set_fingertip_target(torch.tensor(goal.ravel()))
        assert term.apart is None  # every pair, until the proposal knows
        torch.testing.assert_close(term.aim, separated(term.goal, separation))
        proposal = ReachProposal(restarts=8, iterations_per_plan=3, narrow_after=12)
        for _ in range(3):
            proposal.prepare(torch.zeros(63), planner)
        assert term.apart is None
        proposal.prepare(torch.zeros(63), planner)  # the 12th step: decided
        assert term.apart == kept
        torch.testing.assert_close(term.aim, separated(term.goal, separation, kept))
        torch.testing.assert_close(term.target, term.aim)
