"""iLQR: the LQR solution on a linear-quadratic problem, line search, regularisation, a bicycle to a goal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.planners.base import rollout
from mbrl_ros.core.planners.ilqr import BackwardPass, IlqrConfig, IlqrPlanner
from mbrl_ros.robots.car.bicycle import KinematicBicycle

A = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.05, 0.0, 0.98]])
B = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.2]])
Q = np.array([1.0, 0.5, 2.0])
R = np.array([0.1, 0.3])
TERMINAL = 4.0  # the last state costs (1 + TERMINAL) * Q
HORIZON = 12


class LinearModel(DynamicsModel):
    """x[t+1] = A x[t] + B u[t], in float64."""

    def __init__(self):
        super().__init__(3, 2)
        self.register_buffer("A", torch.tensor(A))
        self.register_buffer("B", torch.tensor(B))

    def forward(self, states, actions):
        return states @ self.A.T + actions @ self.B.T


def quadratic_cost():
    """sum_{t=1..H} x'Qx + TERMINAL x_H'Q x_H + sum_{t=0..H-1} u'Ru, from the YAML terms."""
    return build_cost(
        {
            "state": {"type": "joint_target", "indices": [0, 1, 2], "weights": Q.tolist(),
                      "stage_weight": 1.0, "terminal_weight": TERMINAL},
            "effort": {"weights": R.tolist()},
        },
        3, 2,
    )


def riccati(x0):
    """Finite-horizon discrete LQR: feedback gains K[t] (u = -K x) and the optimal open-loop actions."""
    q, r = np.diag(Q), np.diag(R)
    p = q * (1.0 + TERMINAL)
    gains = [None] * HORIZON
    for t in range(HORIZON - 1, -1, -1):
        gains[t] = np.linalg.solve(r + B.T @ p @ B, B.T @ p @ A)
        p = q + A.T @ p @ (A - B @ gains[t])  # x_t's own cost (unused at t = 0)
    x, actions = x0, []
    for t in range(HORIZON):
        actions.append(-gains[t] @ x)
        x = A @ x + B @ actions[-1]
    return gains, np.array(actions)


def lq_planner(**overrides):
    cost = quadratic_cost()
    cost.set_context("joint_target", torch.zeros(3))
    config = dict(horizon=HORIZON, action_low=-1e3, action_high=1e3, tolerance=1e-12, max_iterations=20)
    config.update(overrides)
    return IlqrPlanner(LinearModel(), cost, IlqrConfig(**config))


def test_ilqr_on_linear_quadratic_problem_matches_riccati():
    x0 = np.array([1.0, -0.5, 0.8])
    gains, optimal_actions = riccati(x0)
    planner = lq_planner()
    result = planner.plan(torch.tensor(x0))
    assert result.info["converged"] and result.info["iterations"] <= 3
    np.testing.assert_allclose(result.nominal_actions.numpy(), optimal_actions, atol=1e-5)
    # iLQR's feedback is u = ubar + K (x - xbar): K = -K_lqr.
    np.testing.assert_allclose(planner.gains.K[0], -gains[0], atol=1e-5)
    np.testing.assert_allclose(planner.gains.K[HORIZON // 2], -gains[HORIZON // 2], atol=1e-5)


def test_line_search_rejects_increases_and_costs_never_rise():
    planner = lq_planner()
    state = torch.tensor([1.0, -0.5, 0.8], dtype=torch.float64)
    actions = planner.initial_actions()
    states = rollout(planner.model, state, actions[None])[0]
    cost = float(planner.cost(states[None], actions[None])[0])
    as64 = [t.detach().numpy() for t in (*planner.linearise(states[:-1], actions), *planner.quadratise(states, actions))]
    good = planner.backward_pass(*as64, mu=0.0)
    assert planner.line_search(state, states, actions, cost, good) is not None
    # The same step, reversed, only increases the cost: every alpha is rejected.
    uphill = BackwardPass(-good.k, np.zeros_like(good.K), -good.d1, good.d2)
    assert planner.line_search(state, states, actions, cost, uphill) is None
    history = planner.plan(state).info["cost_history"]
    assert all(b <= a for a, b in zip(history, history[1:]))


def test_backward_pass_needs_regularisation_for_non_convex_steps():
    # One step, one state, one action: Quu = luu + B' Vxx B = -2 + 1 < 0.
    A1, B1 = np.ones((1, 1, 1)), np.ones((1, 1, 1))
    lx, lu = np.zeros((2, 1)), np.zeros((1, 1))
    lxx, luu, lux = np.ones((2, 1, 1)), -2.0 * np.ones((1, 1, 1)), np.zeros((1, 1, 1))
    assert IlqrPlanner.backward_pass(A1, B1, lx, lu, lxx, luu, lux, mu=0.0) is None
    assert IlqrPlanner.backward_pass(A1, B1, lx, lu, lxx, luu, lux, mu=10.0) is not None


def test_ilqr_drives_bicycle_to_goal_pose():
    """From rest at the origin facing +x to (8, 12) facing +y, stopped; closed loop with warm starts."""
    goal = torch.tensor([8.0, 12.0, math.pi / 2, 0.0, 0.0])
    cost = build_cost(
        {
            "goal_pose": {"position_weight": 1.0, "yaw_weight": 30.0, "speed_weight": 2.0,
                          "stage_weight": 0.1, "terminal_weight": 50.0},
            "effort": {"weight": 0.01},
            "smoothness": {"weight": 0.1},
        },
        5, 2,
    )
    cost.set_context("goal", goal)
    car = KinematicBicycle()
    planner = build_planner("ilqr", car, cost, {"horizon": 40, "tolerance": 1e-4, "max_iterations": 60})
    state = torch.zeros(5)
    iterations = []
    for _ in range(40):
        result = planner.plan(state)
        iterations.append(result.info["iterations"])
        assert torch.all(result.nominal_actions.abs() <= 1.0)
        state = car(state[None], result.action[None])[0]
    error = state - goal
    assert float(error[:2].norm()) < 0.5, state
    assert abs(math.degrees(float(error[2]))) < 10.0, state
    assert abs(float(state[3])) < 0.5, state
    # Warm starts: later solves need far fewer iterations than the cold one.
    assert max(iterations[5:]) < iterations[0]


def test_rate_limits_hold_and_warm_start_shifts():
    planner = lq_planner(max_rate=0.05, action_low=-0.5, action_high=0.5)
    state = torch.tensor([1.0, -0.5, 0.8], dtype=torch.float64)
    first = planner.plan(state)
    plan = first.nominal_actions
    assert torch.all(plan.abs() <= 0.5) and torch.all((plan[1:] - plan[:-1]).abs() <= 0.05 + 1e-9)
    second = planner.plan(first.predicted_states[1])
    assert torch.all((second.action - first.action).abs() <= 0.05 + 1e-9)
    with pytest.raises(ValueError, match="state: expected shape"):
        planner.plan(torch.zeros(5, dtype=torch.float64))


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"ilqr: unknown key\(s\) \['mu'\].*regularisation"):
        build_planner("ilqr", LinearModel(), quadratic_cost(), {"mu": 1.0})
    with pytest.raises(ValueError, match="ilqr: regularisation_factor"):
        build_planner("ilqr", LinearModel(), quadratic_cost(), {"regularisation_factor": 1.0})


@pytest.mark.parametrize("mode", ["mean", "member"])
def test_ilqr_on_an_ensemble_plans_on_one_deterministic_model_and_is_reproducible(mode):
    """iLQR linearises and line-searches one model for the whole solve (TS1 would mix members at random)."""
    from mbrl_ros.core.models import EnsembleDynamics

    cost = build_cost({"goal_pose": {"form": "quadratic", "terminal_weight": 20.0}, "effort": {"weight": 0.1}}, 5, 2)
    cost.set_context("goal", torch.tensor([2.0, 1.0, 0.3, 0.0, 0.0]))

    def solves(seed, count=3):
        """(result, the model it planned on) of ``count`` solves from rest, warm-started."""
        ensemble = EnsembleDynamics(5, 2, hidden_sizes=(32, 32), angle_dims=(2,), propagation="ts1", seed=0)
        planner = build_planner("ilqr", ensemble, cost, {"horizon": 15, "tolerance": 1e-6, "max_iterations": 100,
                                                          "ensemble": mode, "seed": seed})
        return [(planner.plan(torch.zeros(5)), planner.solve_model) for _ in range(count)]

    first = solves(seed=7)
    for result, model in first:
        assert result.info["converged"], result.info
        history = result.info["cost_history"]
        assert all(b <= a for a, b in zip(history, history[1:]))
        # The reported plan and cost are those of the one deterministic model it planned on.
        assert model.member is None if mode == "mean" else model.member in range(5)
        with torch.no_grad():
            states = rollout(model, torch.zeros(5), result.nominal_actions[None])[0]
        torch.testing.assert_close(result.predicted_states, states)
        assert result.cost == pytest.approx(float(cost(states[None], result.nominal_actions[None])[0]), rel=1e-5)
    assert first[0][0].info["cost_history"][-1] < first[0][0].info["cost_history"][0]
    # A fixed seed gives the same plans, solve after solve.
    for (a, _), (b, _) in zip(first, solves(seed=7)):
        torch.testing.assert_close(a.nominal_actions, b.nominal_actions, rtol=0, atol=0)
    if mode == "member":  # other seeds draw other members
        assert len({solves(seed, count=1)[0][1].member for seed in range(8)}) > 1


def test_box_qp_finds_the_bounded_minimum():
    """Against brute force: every dimension at its low bound, its high bound or free, the best feasible."""
    import itertools

    from mbrl_ros.core.planners.ilqr import box_qp

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 4))
        m = rng.normal(size=(n, n))
        H, g = m @ m.T + 0.1 * np.eye(n), 3.0 * rng.normal(size=n)
        low, high = -rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 1.0, n)
        best = np.inf
        for where in itertools.product((0, 1, 2), repeat=n):  # 0: at low, 1: at high, 2: free
            k = np.where(np.array(where) == 0, low, high)
            free = np.array(where) == 2
            if free.any():
                k[free] = np.linalg.solve(H[np.ix_(free, free)], -(g[free] + H[np.ix_(free, ~free)] @ k[~free]))
            if np.all(k >= low - 1e-12) and np.all(k <= high + 1e-12):
                best = min(best, 0.5 * k @ H @ k + g @ k)
        k, free = box_qp(H, g, low, high, np.linalg.solve(H, -g))
        assert np.all(k >= low) and np.all(k <= high)
        assert 0.5 * k @ H @ k + g @ k == pytest.approx(best, abs=1e-10)
        assert np.all(free == ((k > low) & (k < high)) | (np.abs((g + H @ k)) < 1e-9))


def test_a_solve_runs_on_its_own_thread_count_and_restores_torchs():
    seen = []

    class ThreadsSeen(LinearModel):
        def forward(self, states, actions):
            seen.append(torch.get_num_threads())
            return super().forward(states, actions)

    cost = quadratic_cost()
    cost.set_context("joint_target", torch.zeros(3))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for threads, expected in ((1, 1), (None, 2)):
            seen.clear()
            planner = IlqrPlanner(ThreadsSeen(), cost, IlqrConfig(horizon=5, threads=threads))
            planner.plan(torch.tensor([1.0, -0.5, 0.8], dtype=torch.float64))
            assert set(seen) == {expected} and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="ilqr: threads"):
            build_planner("ilqr", LinearModel(), cost, {"threads": 0})
    finally:
        torch.set_num_threads(before)


def bicycle_problem(dtype, numpy, **overrides):
    """The bench's ilqr_bicycle problem (goal pose and effort, H=50), on the model's numpy form or not."""
    from mbrl_ros.robots.car.bicycle import BicycleParams

    cost = build_cost({"goal_pose": {"form": "quadratic", "terminal_weight": 50.0, "stage_weight": 0.1},
                       "effort": {"weight": 0.1}, "smoothness": {"weight": 0.05}}, 5, 2)
    cost.set_context("goal", torch.tensor([8.0, 4.0, 0.5, 0.0, 0.0]))
    model = KinematicBicycle(BicycleParams(lag=overrides.pop("lag", 0.0)), dt=0.1, substeps=overrides.pop("substeps", 1),
                             speed_input=overrides.pop("speed_input", "acceleration")).to(dtype)
    return build_planner("ilqr", model, cost, {"horizon": 50, "max_iterations": 50, "numpy": numpy, **overrides})


@pytest.mark.parametrize("options", [{}, {"speed_input": "velocity", "lag": 0.3, "substeps": 3, "max_rate": 0.3}])
def test_numpy_fast_path_gives_the_torch_paths_plans(options):
    """The fast path (the bicycle's float64 numpy form for forward passes and linearisation, the cost's own
    derivatives) plans what the torch path plans:
    cold, then warm-started and receding solves, with the same iterations; and the solves converge."""
    # float32: both stop within the tolerance of a flat optimum, where the float32 finite-difference Hessians
    # of the torch path and the exact ones of the fast path can end a hundredth apart in an action at equal cost.
    for dtype, tolerance in ((torch.float64, 1e-7), (torch.float32, 2e-2)):
        fast, generic = bicycle_problem(dtype, True, **options), bicycle_problem(dtype, False, **options)
        state = torch.zeros(5, dtype=dtype)
        for solve in range(4):
            a, b = fast.plan(state), generic.plan(state)
            assert fast._numpy is not None and generic._numpy is None
            assert a.info["converged"] and b.info["converged"], (a.info, b.info)
            history = a.info["cost_history"]
            assert all(y <= x for x, y in zip(history, history[1:]))
            assert solve > 0 or history[-1] < 0.5 * history[0]  # the cold solve gets somewhere
            if dtype == torch.float64:
                assert a.info["iterations"] == b.info["iterations"]
            assert a.cost == pytest.approx(b.cost, rel=1e-9 if dtype == torch.float64 else 1e-5)
            torch.testing.assert_close(a.nominal_actions, b.nominal_actions, rtol=0, atol=tolerance)
            torch.testing.assert_close(a.predicted_states, b.predicted_states, rtol=0, atol=50 * tolerance)
            if "max_rate" in options:
                assert torch.all((a.nominal_actions[1:] - a.nominal_actions[:-1]).abs() <= 0.3 + 1e-6)
            if solve >= 2:  # receding: the car moves along the plan
                state = a.predicted_states[1]


def test_a_numpy_form_that_does_not_match_the_model_is_not_used():
    """A model's numpy form is checked against its forward and jacobians before a planner uses it. (The cost has
    no action term: its zero action derivatives once stopped the solve with an autograd error.)"""
    from mbrl_ros.robots.car.bicycle import BicycleNumpy

    class WrongNumpy(BicycleNumpy):
        def step(self, states, actions):
            return super().step(states, actions) + 0.01

    class Car(KinematicBicycle):
        def numpy_dynamics(self):
            return WrongNumpy(self)

    cost = build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2)
    cost.set_context("goal", torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0]))
    with pytest.warns(RuntimeWarning, match="WrongNumpy does not match Car"):
        planner = build_planner("ilqr", Car(), cost, {"horizon": 10})
    planner.plan(torch.zeros(5))
    assert planner._numpy is None
    with pytest.raises(ValueError, match="ilqr: numpy"):
        build_planner("ilqr", KinematicBicycle(), cost, {"numpy": 1})


def test_the_costs_own_derivatives_are_the_numerical_ones():
    """CostTerm.numpy_derivatives (goal pose with angle wrap, effort, smoothness with and without a previous
    action, joint targets with a repeated index) equal quadratise's autograd gradient and finite-difference
    Hessian blocks; a cost with a term that has none (path tracking) gives None, and quadratise is used."""
    cost = build_cost({"goal_pose": {"form": "quadratic", "terminal_weight": 50.0, "stage_weight": 0.3,
                                     "yaw_weight": 2.0, "weight": 1.5},
                       "effort": {"weights": [0.1, 0.4], "reference": [0.2, -0.1]},
                       "smoothness": {"weights": [0.5, 0.05]},
                       "joints": {"type": "joint_target", "indices": [3, 4, 3], "weights": [1.0, 2.0, 0.5],
                                  "stage_weight": 0.2, "terminal_weight": 3.0, "weight": 0.7}}, 5, 2)
    cost.set_context("goal", torch.tensor([8.0, 4.0, 3.0, 0.5, 0.0]))
    cost.set_context("joint_target", torch.tensor([1.0, 0.1, 1.0]))
    planner = build_planner("ilqr", KinematicBicycle().double(), cost, {"horizon": 12})
    g = torch.Generator().manual_seed(0)
    states = torch.randn(13, 5, generator=g, dtype=torch.float64) * 3.0  # yaw errors beyond pi: wrapped
    actions = torch.rand(12, 2, generator=g, dtype=torch.float64) * 2 - 1
    for previous in (None, torch.tensor([0.3, -0.2], dtype=torch.float64)):
        cost.set_context("previous_action", previous)
        with torch.enable_grad():
            expected = [t.detach().numpy() for t in planner.quadratise(states, actions)]
        got = cost.numpy_derivatives(states.numpy(), actions.numpy())
        for name, a, b in zip(("lx", "lu", "lxx", "luu", "lux"), got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)
        assert np.abs(got[0]).max() > 1.0 and np.abs(got[3]).max() > 0.1
    path = build_cost({"path_tracking": {}, "effort": {}}, 5, 2)
    assert path.numpy_derivatives(states.numpy(), actions.numpy()) is None


# Native path (ilqr_native.py): compiled backward pass and closed-loop rollouts --------------------------
def random_backward_problem(rng, horizon=8, nx=4, nu=3):
    """Derivatives of a random problem, as backward_pass takes them, and random actions at bounds."""
    A = np.eye(nx) + 0.3 * rng.normal(size=(horizon, nx, nx))
    B = rng.normal(size=(horizon, nx, nu))
    lx, lu = rng.normal(size=(horizon + 1, nx)), 3.0 * rng.normal(size=(horizon, nu))
    m = rng.normal(size=(horizon + 1, nx, nx))
    lxx = m @ m.transpose(0, 2, 1) + 0.1 * np.eye(nx)
    r = rng.normal(size=(horizon, nu, nu))
    luu = r @ r.transpose(0, 2, 1) + 0.05 * np.eye(nu) - rng.uniform(0.0, 1.5) * np.eye(nu)  # at times indefinite
    lux = 0.2 * rng.normal(size=(horizon, nu, nx))
    at = rng.integers(0, 3, size=(horizon, nu))  # 0: at the low bound, 1: at the high bound, 2: inside
    return [A, B, lx, lu, lxx, luu, lux], at == 0, at == 1


def test_native_backward_pass_is_the_numpy_one(tmp_path):
    """On random problems, with actions at bounds (box QPs) and indefinite Quu: the same gains, predicted change,
    and the same refusals; a box QP that would need more rounds goes back to numpy (UNSETTLED), never a guess."""
    from mbrl_ros.core.planners.ilqr_native import UNSETTLED, NativeBackwardPass

    native = NativeBackwardPass(8, 4, 3, str(tmp_path))
    rng = np.random.default_rng(1)
    outcomes = {"solved": 0, "refused": 0, "boxed": 0, "unsettled": 0}
    for _ in range(300):
        derivatives, at_low, at_high = random_backward_problem(rng)
        mu = float(rng.choice([0.0, 1e-3, 1.0]))
        low, high = np.where(at_low, 0.0, -np.inf), np.where(at_high, 0.0, np.inf)
        expected = IlqrPlanner.backward_pass(*derivatives, mu=mu, low=low, high=high)
        got = native(*derivatives, mu, at_low, at_high)
        if got is UNSETTLED:
            outcomes["unsettled"] += 1
            continue
        if expected is None:
            assert got is None
            outcomes["refused"] += 1
            continue
        k, K, d1, d2 = got
        np.testing.assert_allclose(k, expected.k, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(K, expected.K, rtol=1e-9, atol=1e-9)
        assert (d1, d2) == pytest.approx((expected.d1, expected.d2), rel=1e-9, abs=1e-12)
        assert np.all(k[at_low] >= 0.0) and np.all(k[at_high] <= 0.0)
        outcomes["solved"] += 1
        outcomes["boxed"] += int(np.any((K == 0).all(axis=2)))  # an action held at its bound: no feedback
    assert outcomes["solved"] > 100 and outcomes["refused"] > 20 and outcomes["boxed"] > 50, outcomes
    assert outcomes["unsettled"] < 10, outcomes


@pytest.mark.parametrize("options", [{}, {"speed_input": "velocity", "lag": 0.3, "substeps": 3, "max_rate": 0.3}])
def test_native_path_gives_the_numpy_paths_plans(options, monkeypatch):
    """Compiled backward pass and rollouts (the bicycle's symbolic step) plan what the numpy path plans, cold, warm
    and receding, with the same iterations, through solves whose actions sit at their bounds (box QPs)."""
    numpy_passes = []
    numpy_backward = IlqrPlanner.backward_pass
    monkeypatch.setattr(IlqrPlanner, "backward_pass",
                        staticmethod(lambda *a, **k: numpy_passes.append(1) or numpy_backward(*a, **k)))
    for dtype in (torch.float64, torch.float32):
        native, plain = bicycle_problem(dtype, True, **options), bicycle_problem(dtype, True, native=False, **options)
        assert native.native_status == "backward pass, closed-loop rollouts, linearisation"
        assert plain.native_status == "off"
        state, at_bounds = torch.zeros(5, dtype=dtype), 0
        for solve in range(5):
            numpy_passes.clear()
            a = native.plan(state)
            assert native.native_status == "backward pass, closed-loop rollouts, linearisation" and not numpy_passes
            b = plain.plan(state)
            assert numpy_passes and a.info["converged"] and b.info["converged"]
            assert a.info["iterations"] == b.info["iterations"]
            assert a.cost == pytest.approx(b.cost, rel=1e-9)
            torch.testing.assert_close(a.nominal_actions, b.nominal_actions, rtol=0, atol=1e-7)
            torch.testing.assert_close(a.predicted_states, b.predicted_states, rtol=0, atol=1e-6)
            at_bounds += int((a.nominal_actions.abs() >= 1.0).sum())
            if solve >= 2:  # receding: the car moves along the plan
                state = a.predicted_states[1]
        assert at_bounds > 0


def test_without_a_compiler_or_a_writable_cache_ilqr_plans_on_the_numpy_path(tmp_path, monkeypatch, caplog):
    """No compiler, or a cache directory that cannot be made: a logged reason, and the numpy path's plans."""
    plain = bicycle_problem(torch.float64, True, native=False).plan(torch.zeros(5, dtype=torch.float64))
    (tmp_path / "a_file").write_text("")
    for cache, cc, reason in ((tmp_path / "empty", str(tmp_path / "no_cc"), "no C compiler"),
                              (tmp_path / "a_file" / "cache", None, "cannot write the compile cache")):
        if cc:
            monkeypatch.setenv("CC", cc)
        else:
            monkeypatch.delenv("CC", raising=False)
        caplog.clear()
        with caplog.at_level("WARNING", logger="mbrl_ros.core.planners.ilqr"):
            planner = bicycle_problem(torch.float64, True, native_cache=str(cache))
            result = planner.plan(torch.zeros(5, dtype=torch.float64))
        assert planner.native_status.startswith("numpy path:") and reason in planner.native_status
        assert any(reason in r.getMessage() for r in caplog.records), caplog.records
        assert planner._native_backward is None and planner._native_model is None
        assert result.info["iterations"] == plain.info["iterations"]
        torch.testing.assert_close(result.nominal_actions, plain.nominal_actions, rtol=0, atol=1e-12)


def test_a_later_start_loads_the_compiled_code_without_a_compiler(tmp_path, monkeypatch):
    """The first planner compiles into native_cache; the next ones (another start) load it: they need no compiler,
    and a different model setting (another symbolic step) is compiled apart, not confused with it."""
    cache = str(tmp_path / "cache")
    first = bicycle_problem(torch.float64, True, native_cache=cache)
    first.plan(torch.zeros(5, dtype=torch.float64))
    built = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(built) == 3 and all(name.endswith(".so") for name in built), built
    monkeypatch.setenv("CC", str(tmp_path / "no_cc"))
    again = bicycle_problem(torch.float64, True, native_cache=cache)
    again.plan(torch.zeros(5, dtype=torch.float64))
    assert again.native_status == "backward pass, closed-loop rollouts, linearisation"
    other = bicycle_problem(torch.float64, True, native_cache=cache, substeps=2)
    other.plan(torch.zeros(5, dtype=torch.float64))
    assert other.native_status.startswith("backward pass; numpy path for the rest: no C compiler")
    assert other._native_backward is not None and other._native_model is None


def test_a_refit_that_moves_the_lag_across_a_substep_keeps_the_compiled_code(tmp_path):
    """A new model whose steering lag passes the substep (the numpy form's steer_settles flips) swaps in between
    solves without a compile (in the control loop, that would be a long cycle), and still plans as numpy does."""
    from mbrl_ros.robots.car.bicycle import BicycleParams

    native = bicycle_problem(torch.float64, True, native_cache=str(tmp_path))  # lag 0: settles in a substep
    plain = bicycle_problem(torch.float64, True, native=False)
    built, state = native._native_model, torch.zeros(5, dtype=torch.float64)
    for planner in (native, plain):
        planner.plan(state)
        planner.set_model(KinematicBicycle(BicycleParams(lag=0.3), dt=0.1, substeps=1).double())
    a, b = native.plan(state), plain.plan(state)
    assert native._native_model is built and native.native_status == "backward pass, closed-loop rollouts, linearisation"
    assert a.info["iterations"] == b.info["iterations"]
    torch.testing.assert_close(a.nominal_actions, b.nominal_actions, rtol=0, atol=1e-7)


def test_a_symbolic_step_that_does_not_match_the_model_is_not_compiled(tmp_path, caplog):
    from mbrl_ros.core.models.base import SymbolicStep
    from mbrl_ros.robots.car.bicycle import BicycleNumpy

    class WrongSymbolic(BicycleNumpy):
        def symbolic(self):
            right = super().symbolic()
            return SymbolicStep(right.key, right.parameters, lambda x, u, p: right.step(x, u, p) + 0.01)

    class Car(KinematicBicycle):
        def numpy_dynamics(self):
            return WrongSymbolic(self)

    cost = build_cost({"goal_pose": {"form": "quadratic"}, "effort": {}}, 5, 2)
    cost.set_context("goal", torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0]))
    with caplog.at_level("WARNING", logger="mbrl_ros.core.planners.ilqr"):
        planner = build_planner("ilqr", Car(), cost, {"horizon": 10, "native_cache": str(tmp_path)})
        planner.plan(torch.zeros(5))
    assert "WrongSymbolic.symbolic does not match its step" in planner.native_status
    assert any("does not match" in r.getMessage() for r in caplog.records)
    assert planner._native_model is None and planner._native_backward is not None
    with pytest.raises(ValueError, match="ilqr: native_cache"):
        build_planner("ilqr", KinematicBicycle(), cost, {"native_cache": ""})


def test_large_problems_keep_the_numpy_backward_pass():
    """Above NATIVE_MAX_SIZE states + actions the compiled code would take minutes to build (it grows with the
    cube): such a planner says so and plans on numpy, compiling nothing."""
    from mbrl_ros.core.planners.ilqr import NATIVE_MAX_SIZE

    class Chain(DynamicsModel):
        def __init__(self):
            super().__init__(NATIVE_MAX_SIZE - 1, 2)

        def forward(self, states, actions):
            return torch.cat((states[:, 1:], actions[:, :1]), 1) + 0.1 * actions[:, 1:]

    cost = build_cost({"state": {"type": "joint_target", "indices": [0, 1]}, "effort": {}}, NATIVE_MAX_SIZE - 1, 2)
    cost.set_context("joint_target", torch.ones(2))
    planner = build_planner("ilqr", Chain().double(), cost, {"horizon": 20, "native_cache": "/nonexistent/cache"})
    assert planner.native_status == f"numpy path: nx + nu = {NATIVE_MAX_SIZE + 1} > {NATIVE_MAX_SIZE}"
    assert planner._native_backward is None
    result = planner.plan(torch.zeros(NATIVE_MAX_SIZE - 1, dtype=torch.float64))
    assert result.info["converged"] and result.cost < result.info["cost_history"][0]


def test_the_costs_numpy_form_is_its_forward():
    """TrajectoryCost.numpy_cost (iLQR's line search) equals forward on a batch, each term; None with a term that
    has no numpy form."""
    cost = build_cost({"goal_pose": {"form": "quadratic", "terminal_weight": 50.0, "stage_weight": 0.3,
                                     "yaw_weight": 2.0, "weight": 1.5},
                       "effort": {"weights": [0.1, 0.4], "reference": [0.2, -0.1]},
                       "smoothness": {"weights": [0.5, 0.05]},
                       "joints": {"type": "joint_target", "indices": [3, 4, 3], "weights": [1.0, 2.0, 0.5],
                                  "stage_weight": 0.2, "terminal_weight": 3.0, "weight": 0.7}}, 5, 2).double()
    cost.set_context("goal", torch.tensor([8.0, 4.0, 3.0, 0.5, 0.0]))
    cost.set_context("joint_target", torch.tensor([1.0, 0.1, 1.0]))
    g = torch.Generator().manual_seed(0)
    states = torch.randn(7, 13, 5, generator=g, dtype=torch.float64) * 3.0
    actions = torch.rand(7, 12, 2, generator=g, dtype=torch.float64) * 2 - 1
    for previous in (None, torch.tensor([0.3, -0.2], dtype=torch.float64)):
        cost.set_context("previous_action", previous)
        np.testing.assert_allclose(cost.numpy_cost(states.numpy(), actions.numpy()), cost(states, actions).numpy(),
                                   rtol=1e-12)
        for name, term in cost.terms.items():
            np.testing.assert_allclose(term.numpy_cost(states.numpy(), actions.numpy()),
                                       term(states, actions).numpy(), rtol=1e-12, err_msg=name)
    path = build_cost({"path_tracking": {}, "effort": {}}, 5, 2)
    assert path.numpy_cost(states.numpy(), actions.numpy()) is None
