"""iLQR's loops over time steps as compiled C (``core/native.py``): the backward pass, and on a
model's symbolic step (``NumpyDynamics.symbolic``) the closed-loop rollouts of the line search and
the linearisation.

They compute what ``IlqrPlanner.backward_pass``, ``IlqrPlanner._closed_loop_numpy`` and the numpy
form's ``jacobians`` compute, step by step, written in casadi symbols; ``tests/core/test_ilqr.py``
checks that the plans are the same.

The backward pass branches on data where an action is at a bound (``box_qp``'s active sets).
Here every branch is computed and the right one selected (``if_else``): the box QP runs a fixed
number of active-set rounds (``BOX_ROUNDS``) and reports, per step, whether its active set had
settled; where it had not (numpy's ``box_qp`` would go on iterating), the caller runs the numpy
pass instead. A round is idempotent once settled, so fixed rounds give numpy's answer.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import casadi as ca
import numpy as np

from mbrl_ros.core.models.base import NumpyDynamics, SymbolicStep
from mbrl_ros.core.native import BufferedFunction, NativeUnavailable, compile_function

__all__ = ["NativeBackwardPass", "NativeModel", "UNSETTLED"]

BOX_ROUNDS = 4  # box_qp's active-set rounds per step (one or two for a handful of actions)
UNSETTLED = object()  # NativeBackwardPass's answer where numpy's box_qp would iterate longer


def _cholesky_solve(matrix: ca.SX, rhs: ca.SX) -> tuple[ca.SX, ca.SX]:
    """``matrix^-1 rhs`` by Cholesky (as LAPACK's posv) -> ``(solution, positive_definite)``."""
    n = matrix.shape[0]
    lower = ca.SX.zeros(n, n)
    positive = ca.SX(1)
    for j in range(n):
        pivot = matrix[j, j] - sum((lower[j, k] * lower[j, k] for k in range(j)), ca.SX(0))
        positive = ca.logic_and(positive, pivot > 0)  # false for NaN too, as posv's info
        lower[j, j] = ca.sqrt(pivot)
        for i in range(j + 1, n):
            lower[i, j] = (matrix[i, j] - sum((lower[i, k] * lower[j, k] for k in range(j)), ca.SX(0))) / lower[j, j]
    y = ca.SX.zeros(rhs.shape)
    for i in range(n):
        y[i, :] = (rhs[i, :] - sum((lower[i, k] * y[k, :] for k in range(i)), ca.SX.zeros(1, rhs.shape[1]))) \
            / lower[i, i]
    x = ca.SX.zeros(rhs.shape)
    for i in range(n - 1, -1, -1):
        x[i, :] = (y[i, :] - sum((lower[k, i] * x[k, :] for k in range(i + 1, n)), ca.SX.zeros(1, rhs.shape[1]))) \
            / lower[i, i]
    return x, positive


def _masked_solve(matrix: ca.SX, rhs: ca.SX, free: ca.SX) -> ca.SX:
    """``matrix[free, free]^-1 rhs[free]`` in the free rows, 0 in the others (``free``: 0/1 per row)."""
    masked = (free @ free.T) * matrix + ca.diag(1 - free)  # the held rows and columns: the identity's
    rows = ca.repmat(free, 1, rhs.shape[1])
    solution, _ = _cholesky_solve(masked, rhs * rows)
    return solution * rows


def _box_qp(quu: ca.SX, g: ca.SX, at_low: ca.SX, at_high: ca.SX, start: ca.SX) -> tuple[ca.SX, ca.SX, ca.SX]:
    """``box_qp`` for the bounds the planner sets (0 where an action is at its bound, else none), in
    ``BOX_ROUNDS`` rounds -> ``(k, free, settled)``."""
    def clip(k):
        k = ca.if_else(at_low, ca.fmax(k, 0), k)
        return ca.if_else(at_high, ca.fmin(k, 0), k)

    def now_held(k, grad):
        return ca.logic_or(ca.logic_and(ca.logic_and(at_low, k <= 0), grad > 0),
                           ca.logic_and(ca.logic_and(at_high, k >= 0), grad < 0))

    k, held = start, ca.SX.zeros(g.shape)
    for _ in range(BOX_ROUNDS):
        k = clip(k)
        held = now_held(k, quu @ k + g)
        # Held actions sit at their bound, 0, so the free ones solve against g alone.
        k = _masked_solve(quu, -g, 1 - held)
    k = clip(k)
    grad = quu @ k + g
    settled = ca.logic_and(_all(now_held(k, grad) == held),
                           _all(ca.logic_or(held, ca.fabs(grad) <= 1e-9 * (1.0 + ca.fabs(g)))))
    return k, 1 - held, settled


def _all(flags: ca.SX) -> ca.SX:
    out = ca.SX(1)
    for i in range(flags.shape[0]):
        out = ca.logic_and(out, flags[i])
    return out


def _rows(vector: ca.SX, rows: int, columns: int) -> ca.SX:
    """A matrix from a numpy C-order (row-major) flattening."""
    return ca.reshape(vector, columns, rows).T


class NativeBackwardPass:
    """``IlqrPlanner.backward_pass`` for ``horizon`` steps of ``nx`` states, ``nu`` actions, compiled."""

    def __init__(self, horizon: int, nx: int, nu: int, directory: str) -> None:
        self.horizon, self.nx, self.nu = horizon, nx, nu
        n = nx + 1
        sizes = {"A": nx * nx, "B": nx * nu, "lx": nx, "lu": nu, "lxx": nx * nx, "luu": nu * nu, "lux": nu * nx,
                 "at_low": nu, "at_high": nu}
        offsets = np.cumsum([0, *sizes.values()])
        self.slices = {key: slice(int(a), int(b)) for key, a, b in zip(sizes, offsets[:-1], offsets[1:])}
        data = ca.SX.sym("data", int(offsets[-1]))
        part = {key: data[s] for key, s in self.slices.items()}
        V = ca.reshape(ca.SX.sym("V", n * n), n, n)  # symmetric: either order
        mu = ca.SX.sym("mu")
        A, B = _rows(part["A"], nx, nx), _rows(part["B"], nx, nu)
        lxx, luu, lux = _rows(part["lxx"], nx, nx), _rows(part["luu"], nu, nu), _rows(part["lux"], nu, nx)
        lx, lu = part["lx"], part["lu"]
        F = ca.SX(n, n + nu)
        F[:nx, :nx], F[:nx, n:], F[nx, nx] = A, B, 1.0
        L = ca.SX(n + nu, n + nu)
        L[:nx, :nx], L[n:, n:], L[n:, :nx], L[:nx, n:] = lxx, luu, lux, lux.T
        L[:nx, nx], L[nx, :nx], L[n:, nx], L[nx, n:] = lx, lx.T, lu, lu.T
        M = L + F.T @ (V @ F)
        quu, mux = M[n:, n:], M[n:, :n]
        quu_reg = quu + mu * ca.SX.eye(nu)
        gains, positive = _cholesky_solve(quu_reg, mux)  # -[K | k]
        k = -gains[:, nx]
        at_low, at_high = part["at_low"], part["at_high"]
        outside = ca.logic_or(ca.logic_and(at_low, k < 0), ca.logic_and(at_high, k > 0))
        violated = 1 - _all(1 - outside)
        k_box, free, settled = _box_qp(quu_reg, M[n:, nx], at_low, at_high, k)
        boxed = ca.horzcat(_masked_solve(quu_reg, mux[:, :nx], free), -k_box)  # no feedback for held actions
        gains = ca.if_else(violated, boxed, gains)
        U = M[:n, :n] + gains.T @ (quu @ gains - 2.0 * mux)
        k = -gains[:, nx]
        step_out = ca.vertcat(ca.reshape(gains.T, -1, 1), k.T @ M[n:, nx], 0.5 * (k.T @ quu @ k),
                              1 - positive, ca.logic_and(violated, 1 - settled))
        step = ca.Function("ilqr_backward_step", [ca.reshape(V, -1, 1), data, mu],
                           [ca.reshape(0.5 * (U + U.T), -1, 1), step_out])
        V0, steps, mu_once = ca.MX.sym("V", n * n), ca.MX.sym("data", data.shape[0], horizon), ca.MX.sym("mu")
        _, outs = step.mapaccum(horizon)(V0, steps, ca.repmat(mu_once, 1, horizon))
        name = f"ilqr_backward_H{horizon}_x{nx}_u{nu}"
        self.function = compile_function(ca.Function(name, [V0, steps, mu_once], [outs]), directory)
        self.call = BufferedFunction(self.function)
        self._gains = slice(0, nu * n)
        self._d1, self._d2, self._fail, self._unsettled = (nu * n + i for i in range(4))

    def __call__(self, A, B, lx, lu, lxx, luu, lux, mu: float, at_low: np.ndarray, at_high: np.ndarray):
        """``(k[H, nu], K[H, nu, nx], d1, d2)``, None where ``Quu + mu I`` is not positive definite, or
        ``UNSETTLED`` where the numpy pass must decide (see the module docstring). Arrays as
        ``backward_pass`` takes them; ``at_low``/``at_high[H, nu]``: the actions at a bound."""
        horizon, nx, nu, n = self.horizon, self.nx, self.nu, self.nx + 1
        V0, data, mu_in = self.call.inputs
        V0[:] = 0.0
        V0 = V0.reshape(n, n)
        V0[:nx, :nx], V0[:nx, nx], V0[nx, :nx] = lxx[horizon], lx[horizon], lx[horizon]
        s = self.slices
        # Time reversed: the accumulation runs forwards over its columns.
        for key, value in (("A", A), ("B", B), ("lx", lx[:horizon]), ("lu", lu), ("lxx", lxx[:horizon]),
                           ("luu", luu), ("lux", lux), ("at_low", at_low), ("at_high", at_high)):
            data[:, s[key]] = value[::-1].reshape(horizon, -1)
        mu_in[:] = mu
        self.call.call()
        out = self.call.outputs[0][::-1]  # [H, ...] in time order
        fails, unsettled = out[:, self._fail] > 0, out[:, self._unsettled] > 0
        if fails.any():
            # The numpy pass stops at its first failure (the last step in time order): a box QP it would
            # have solved differently before that still matters.
            last = horizon - 1 - int(np.argmax(fails[::-1]))
            return UNSETTLED if unsettled[last + 1:].any() else None
        if unsettled.any():
            return UNSETTLED
        minus_gains = out[:, self._gains].reshape(horizon, nu, n)
        return (-minus_gains[:, :, nx], -minus_gains[:, :, :nx], float(out[:, self._d1].sum()),
                float(out[:, self._d2].sum()))


class NativeModel:
    """The compiled loops over a model's symbolic step (``SymbolicStep.step``: ``step(x[nx], u[nu], p[P]) -> x'``
    in casadi symbols): ``IlqrPlanner._closed_loop_numpy``'s rollouts (all step sizes at once) and the
    linearisation along a trajectory (the step's Jacobians, by casadi's algorithmic differentiation)."""

    def __init__(self, horizon: int, nx: int, nu: int, count: int, step: Callable, parameters: int,
                 name: str, directory: str) -> None:
        self.horizon, self.nx, self.nu, self.count = horizon, nx, nu, count
        state = ca.SX.sym("state", nx + nu)  # (x[t], u[t-1])
        offset = ca.SX.sym("offset", nu)  # ubar[t] + alpha k[t] - K[t] xbar[t]
        shared = ca.SX.sym("shared", nu * nx + nu)  # K[t] (row-major), the rate window at t
        limits = ca.SX.sym("limits", 2 * nu + parameters)  # low, high, the model's parameters
        x, before = state[:nx], state[nx:]
        K, window = _rows(shared[: nu * nx], nu, nx), shared[nu * nx:]
        low, high, p = limits[:nu], limits[nu: 2 * nu], limits[2 * nu:]
        u = offset + K @ x
        u = ca.fmax(ca.fmin(u, before + window), before - window)
        u = ca.fmin(ca.fmax(u, low), high)
        step_fn = ca.Function("ilqr_closed_loop_step", [state, offset, shared, limits],
                              [ca.vertcat(step(x, u, p), u)])
        accumulate = step_fn.mapaccum(horizon)
        start, offsets = ca.MX.sym("start", nx + nu), ca.MX.sym("offsets", nu, horizon)
        per_step, once = ca.MX.sym("shared", shared.shape[0], horizon), ca.MX.sym("limits", limits.shape[0])
        rollout = ca.Function("ilqr_rollout", [start, offsets, per_step, once],
                              [accumulate(start, offsets, per_step, ca.repmat(once, 1, horizon))])
        # All step sizes in one call: offsets per step size, the rest shared.
        self.function = compile_function(rollout.map(f"{name}_H{horizon}_A{count}", "serial", count, [0, 2, 3], []),
                                         directory)
        self.call = BufferedFunction(self.function)
        x, u, p = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", parameters)
        following = step(x, u, p)
        # Transposed: each Jacobian's rows are contiguous in the C-order output.
        jacobians = ca.Function("ilqr_linearise_step", [x, u, p], [ca.densify(ca.jacobian(following, x).T),
                                                                   ca.densify(ca.jacobian(following, u).T)])
        self.linearisation = BufferedFunction(compile_function(
            jacobians.map(f"{name}_linearise_H{horizon}", "serial", horizon, [2], []), directory))

    @classmethod
    def checked(cls, horizon: int, nx: int, nu: int, count: int, symbolic: SymbolicStep, numpy_form: NumpyDynamics,
                directory: str) -> "NativeModel":
        """Built for ``symbolic``, once its step and Jacobians are seen to match ``numpy_form``'s (else
        NativeUnavailable)."""
        x, u, p = ca.SX.sym("x", nx), ca.SX.sym("u", nu), ca.SX.sym("p", len(symbolic.parameters))
        try:  # a model's own code: whatever it raises, the planner keeps its numpy path
            following = symbolic.step(x, u, p)
            step = ca.Function("step", [x, u, p], [following, ca.jacobian(following, x), ca.jacobian(following, u)])
        except Exception as err:
            raise NativeUnavailable(f"{type(numpy_form).__name__}.symbolic failed: {type(err).__name__}: {err}") \
                from err
        generator = np.random.default_rng(0)
        states, actions = generator.uniform(-1, 1, (6, nx)), generator.uniform(-1, 1, (6, nu))
        expected = (numpy_form.step(states.T, actions.T).T, *numpy_form.jacobians(states, actions))
        for i in range(len(states)):
            got = step(states[i], actions[i], symbolic.parameters)
            if not all(np.allclose(np.array(g).reshape(e[i].shape), e[i], rtol=1e-9, atol=1e-9)
                       for g, e in zip(got, expected)):
                raise NativeUnavailable(f"{type(numpy_form).__name__}.symbolic does not match its step")
        name = "ilqr_model_" + hashlib.sha256(repr(symbolic.key).encode()).hexdigest()[:8]
        return cls(horizon, nx, nu, count, symbolic.step, len(symbolic.parameters), name, directory)

    def jacobians(self, states: np.ndarray, actions: np.ndarray, parameters: np.ndarray) -> tuple[np.ndarray, ...]:
        """``states[H, nx]``, ``actions[H, nu]`` -> ``(df/dx[H, nx, nx], df/du[H, nx, nu])``, as
        ``NumpyDynamics.jacobians``."""
        x, u, p = self.linearisation.inputs
        x[:], u[:], p[:] = states, actions, parameters
        self.linearisation.call()
        A, B = self.linearisation.outputs
        return A.reshape(self.horizon, self.nx, self.nx).copy(), B.reshape(self.horizon, self.nx, self.nu).copy()

    def rollouts(self, x0: np.ndarray, before: np.ndarray, offsets: np.ndarray, K: np.ndarray,
                 windows: np.ndarray, low: np.ndarray, high: np.ndarray, parameters: np.ndarray):
        """``offsets[H, nu, A]``, ``K[H, nu, nx]``, ``windows[H, nu]`` (the rate limit per step) ->
        ``(states[A, H+1, nx], actions[A, H, nu])``."""
        nx, nu = self.nx, self.nu
        start, offset_in, shared, limits = self.call.inputs
        start[0, :nx], start[0, nx:] = x0, before
        offset_in[:] = offsets.transpose(2, 0, 1).reshape(offset_in.shape)
        shared[:, : nu * nx] = K.reshape(self.horizon, -1)
        shared[:, nu * nx:] = windows
        limits[0, :nu], limits[0, nu: 2 * nu], limits[0, 2 * nu:] = low, high, parameters
        self.call.call()
        out = self.call.outputs[0].reshape(self.count, self.horizon, nx + nu)
        states = np.empty((self.count, self.horizon + 1, nx))
        states[:, 0] = x0
        states[:, 1:] = out[:, :, :nx]
        return states, out[:, :, nx:].copy()
