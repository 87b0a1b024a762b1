"""The batched box-constrained Levenberg-Marquardt (mbrl_ros/core/least_squares.py)."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.core.least_squares import BoxLevenbergMarquardt


def rosenbrock(x: np.ndarray, jacobian: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rosenbrock's residuals (1 - a, 10 (b - a^2)): minimum 0 at (1, 1), a curved valley."""
    a, b = x[:, 0], x[:, 1]
    r = np.stack([1.0 - a, 10.0 * (b - a * a)], axis=1)
    jac = np.zeros((len(x), 2, 2))
    jac[:, 0, 0] = -1.0
    jac[:, 1, 0], jac[:, 1, 1] = -20.0 * a, 10.0
    return r, jac


def test_it_finds_the_minimum_from_every_start_and_never_makes_a_row_worse():
    solver = BoxLevenbergMarquardt(rosenbrock, [-2.0, -2.0], [2.0, 2.0])
    solver.start(np.array([[-1.2, 1.0], [0.0, 0.0], [1.5, -1.5]]))
    before = solver.norms.copy()
    solver.iterate(3)
    assert np.all(solver.norms <= before)
    solver.iterate(60)
    np.testing.assert_allclose(solver.x, np.ones((3, 2)), atol=1e-6)
    x, norm = solver.best()
    assert norm < 1e-6 and x.shape == (2,)


def test_the_box_holds_and_a_bound_minimum_is_found_on_the_bound():
    # |x - (3, 0.5)| within [-1, 1]^2: the closest point is (1, 0.5).
    solver = BoxLevenbergMarquardt(
        lambda x, jacobian: (x - np.array([3.0, 0.5]), np.broadcast_to(np.eye(2), (len(x), 2, 2)) if jacobian else None),
        [-1.0, -1.0], [1.0, 1.0])
    solver.start(np.array([[5.0, -5.0], [0.0, 0.0]]))  # a start outside is clipped in
    assert np.all(np.abs(solver.x) <= 1.0)
    solver.iterate(20)
    np.testing.assert_allclose(solver.best()[0], [1.0, 0.5], atol=1e-9)
    assert solver.best()[1] == pytest.approx(2.0)


def test_steps_spread_over_calls_give_the_same_solve_and_keep_narrows_it():
    once = BoxLevenbergMarquardt(rosenbrock, [-2.0, -2.0], [2.0, 2.0])
    spread = BoxLevenbergMarquardt(rosenbrock, [-2.0, -2.0], [2.0, 2.0])
    starts = np.array([[-1.2, 1.0], [0.5, -0.5]])
    once.start(starts), spread.start(starts)
    once.iterate(6)
    for _ in range(3):
        spread.refresh()
        spread.iterate(2)
    np.testing.assert_array_equal(once.x, spread.x)
    spread.keep([1])
    assert spread.x.shape == (1, 2) and spread.norms.shape == (1,) and spread.mu.shape == (1,)


def test_bad_bounds_and_starts_are_refused():
    with pytest.raises(ValueError, match="low <= high"):
        BoxLevenbergMarquardt(rosenbrock, [1.0, 0.0], [0.0, 1.0])
    solver = BoxLevenbergMarquardt(rosenbrock, [-1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        solver.start(np.zeros((2, 3)))
