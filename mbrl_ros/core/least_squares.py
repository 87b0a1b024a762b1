"""Batched nonlinear least squares within box bounds: Levenberg-Marquardt, one solve per row, stepwise.

``BoxLevenbergMarquardt(residuals, low, high)`` minimises ``|r(x)|`` over ``low <= x <= high`` from a batch of
starts (``start(x0[B, n])``: random restarts of one problem, solved side by side). ``residuals(x[B, n],
jacobian) -> (r[B, m], J[B, m, n])``, ``J`` None where ``jacobian`` is False (a trial step needs ``r`` only). Each ``iterate(k)`` takes ``k`` damped Gauss-Newton steps per row, projected onto the
box, keeping a step only where it lowers that row's residual (and loosening the row's damping), else raising the
damping: the solve can be spread over calls (a controller: a few steps per control cycle) and restarted from
any point. float64 NumPy: small problems (tens of unknowns), where torch's per-operation overhead would dominate.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["BoxLevenbergMarquardt"]

Residuals = Callable[[np.ndarray, bool], tuple[np.ndarray, "np.ndarray | None"]]


class BoxLevenbergMarquardt:
    def __init__(self, residuals: Residuals, low: np.ndarray, high: np.ndarray, damping: float = 1e-4,
                 increase: float = 10.0, decrease: float = 0.3) -> None:
        self.residuals = residuals
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        if self.low.shape != self.high.shape or self.low.ndim != 1 or np.any(self.high < self.low):
            raise ValueError(f"least squares: expected bounds low <= high of one size, got {low!r} and {high!r}")
        if not (damping > 0 and increase > 1 and 0 < decrease < 1):
            raise ValueError("least squares: need damping > 0, increase > 1 and 0 < decrease < 1")
        self.damping, self.increase, self.decrease = damping, increase, decrease
        self.x = np.empty((0, self.low.size))
        self.norms = np.empty(0)  # |r(x)| per row
        self.mu = np.empty(0)  # each row's damping

    def start(self, x0: np.ndarray) -> None:
        """Start ``B`` solves from ``x0[B, n]`` (clipped into the box)."""
        x0 = np.atleast_2d(np.asarray(x0, float))
        if x0.shape[1:] != self.low.shape:
            raise ValueError(f"least squares: starts must be [B, {self.low.size}], got {list(x0.shape)}")
        self.x = np.clip(x0, self.low, self.high)
        self.mu = np.full(len(self.x), self.damping)
        self.refresh()

    def refresh(self) -> None:
        """Evaluate the rows again (the residual function changed, say a parameter it reads; ``iterate`` does
        it at each step's start anyway)."""
        self.norms = np.linalg.norm(self.residuals(self.x, False)[0], axis=-1)

    def keep(self, rows) -> None:
        """Go on with these rows only (say the best, once the restarts have settled)."""
        self.x, self.norms, self.mu = self.x[rows], self.norms[rows], self.mu[rows]

    def iterate(self, steps: int = 1) -> None:
        """``steps`` damped Gauss-Newton steps on every row (each row's residual evaluated afresh first: the
        residual function may have changed since the last call)."""
        eye = np.eye(self.low.size)
        for _ in range(steps):
            r, jac = self.residuals(self.x, True)
            self.norms = np.linalg.norm(r, axis=-1)
            jt = jac.transpose(0, 2, 1)
            step = np.linalg.solve(jt @ jac + self.mu[:, None, None] * eye, (jt @ r[..., None]))[..., 0]
            trial = np.clip(self.x - step, self.low, self.high)
            norms = np.linalg.norm(self.residuals(trial, False)[0], axis=-1)
            better = norms < self.norms
            self.x = np.where(better[:, None], trial, self.x)
            self.norms = np.where(better, norms, self.norms)
            self.mu = np.clip(np.where(better, self.mu * self.decrease, self.mu * self.increase), 1e-12, 1e12)

    def best(self) -> tuple[np.ndarray, float]:
        """The row with the smallest residual: (x[n], |r(x)|)."""
        k = int(np.argmin(self.norms))
        return self.x[k].copy(), float(self.norms[k])
