"""Iterative LQR for any differentiable ``DynamicsModel`` and ``TrajectoryCost``.

Each iteration:

1. **Linearise** the dynamics along the current trajectory: ``A[t] = df/dx``,
   ``B[t] = df/du`` for all H steps in one batched call of the model's
   ``jacobians`` (analytic for a physics prior such as the car's bicycle,
   ``torch.func`` jacobians with vmap for networks).
2. **Quadratise** the cost: the cost's own derivatives where every term has them
   (``CostTerm.numpy_derivatives``: goal pose, effort, smoothness, joint targets), else
   the exact gradient (autograd), and the Hessian's
   diagonal blocks ``l_xx[t], l_uu[t], l_ux[t]`` from ``2 * (nx + nu)`` Hessian
   columns, each a central difference of exact gradients along a direction that
   perturbs one coordinate at every other time step at once (graph colouring).
   That recovers the diagonal blocks whenever the cost couples at most
   neighbouring steps (true of every term in ``costs.py``), exactly for quadratic
   terms. All perturbed trajectories are one batch through the cost.
   *Approximation*: the off-diagonal blocks from the smoothness term (``u[t]``
   with ``u[t+1]``) are dropped; the gradient keeps them, so the fixed point is
   the true optimum, only the Newton steps are approximate.
3. **Backward pass** (float64 numpy and LAPACK's ``posv``, Cholesky and solve in one
   call: 5x5 matrices are far cheaper there than as torch ops): Riccati-like recursion for feedforward ``k[t]`` and feedback
   ``K[t]``, with Levenberg-Marquardt regularisation ``Quu + mu I``; a non
   positive-definite ``Quu`` raises ``mu`` (by ``regularisation_factor``) and
   restarts the pass; a successful iteration lowers it. An action at a bound
   may only move inwards: where the Newton step would push it out, ``k[t]``
   comes from a small box QP (``box_qp``) and that action gets no feedback, as
   in control-limited DDP (Tassa et al. 2014) restricted to the bounds already
   reached. Without it, clamping in the forward pass leaves Newton steps that
   predict a decrease no feasible step achieves, and the solve stalls in
   rejected line searches.
4. **Forward pass with backtracking line search**: closed-loop rollouts
   ``u = ubar + alpha k + K (x - xbar)`` for ``alpha = 1, 1/2, 1/4, ...``, all in
   one batch; the largest alpha whose actual decrease is at least
   ``sufficient_decrease`` times the predicted one is taken. None: raise ``mu``.

Action bounds and rate limits are enforced by clamping inside the forward pass
(not the boxed-QP variant), so every iterate is feasible. Stops when the relative
cost decrease (or the predicted one) falls below ``tolerance`` or after
``max_iterations``. Warm starts from the previous solution shifted by one step.
A model with a float64 numpy form (``DynamicsModel.numpy_dynamics``; the car's
bicycle) runs the closed-loop forward pass and the linearisation in numpy
(``numpy: true``, the default): at these sizes (H steps of ~10 rows) torch's
per-op overhead, not arithmetic, was most of a solve. The rollouts go through the
cost as one batch, in numpy where every term has a numpy form
(``TrajectoryCost.numpy_cost``). ``native: true`` (the default) goes further: the
backward pass (for any model) and, on a model whose numpy form has a symbolic step
(``NumpyDynamics.symbolic``), the closed-loop rollouts run as C compiled once by the
machine's compiler and cached on disk (``ilqr_native.py``): one call each instead of
hundreds of numpy calls. They compute the same steps, so they plan the same.
``compile: true`` compiles the torch path's closed-loop forward pass, which in eager
mode is most of an iteration's time (H sequential model calls of tiny batches).

On an ensemble (or a semi-parametric model), iLQR plans on one deterministic
model for the whole solve (``model.deterministic``): the mean of the elites
(``ensemble: mean``), or one elite drawn per solve from the planner's seeded
generator (``ensemble: member``). Derivatives and line-search costs come from
that same model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg.lapack import dposv as posv

from mbrl_ros.core.costs import TrajectoryCost, as_float64
from mbrl_ros.core.models.base import DynamicsModel, NumpyDynamics, SymbolicStep
from mbrl_ros.core.native import NativeUnavailable
from mbrl_ros.core.planners.base import (
    Planner,
    PlannerConfig,
    PlanResult,
    _one_of,
    _positive_int,
    _real,
    checked_numpy_dynamics,
    shift_sequence,
    time_major_dynamics,
)
from mbrl_ros.core.planners.ilqr_native import UNSETTLED, NativeBackwardPass, NativeModel

__all__ = ["IlqrConfig", "IlqrPlanner", "BackwardPass"]

log = logging.getLogger(__name__)
NATIVE_MAX_SIZE = 16  # the largest nx + nu whose loops are compiled (IlqrConfig.native)


@dataclass
class IlqrConfig(PlannerConfig):
    max_iterations: int = 50
    tolerance: float = 1e-6  # stop when (J_old - J_new) < tolerance * max(1, |J_old|)
    regularisation: float = 1e-6  # initial mu
    regularisation_min: float = 1e-9  # below this mu becomes 0 (pure Gauss-Newton steps)
    regularisation_max: float = 1e10  # give up above this
    regularisation_factor: float = 10.0
    line_search_steps: int = 10  # alphas 1, 1/2, ..., 2**-(steps - 1)
    sufficient_decrease: float = 1e-4  # Armijo constant on actual / predicted decrease
    warm_start: bool = True
    # Compile the closed-loop forward pass (all rollouts of a solve). Much faster
    # per iteration, but the first solve pays minutes of compilation.
    compile: bool = False
    # On a model that samples (an ensemble): plan on the mean of its elites ("mean"), or on one
    # elite drawn per solve ("member"); see DynamicsModel.deterministic.
    ensemble: str = "mean"
    # Forward passes and linearisation on the model's float64 numpy form (DynamicsModel.numpy_dynamics)
    # where it has one, and the cost's own derivatives (TrajectoryCost.numpy_derivatives) where all its
    # terms have them: a step of ~10 rows costs about a microsecond per numpy call against several per
    # torch op. false: always the torch path (the model's time-major step and jacobians, the cost's
    # derivatives by autograd and finite differences).
    numpy: bool = True
    # torch threads while solving (restored after); null leaves torch's setting. Every tensor of a
    # solve is tiny, so a second thread only adds waits: on a loaded 2-core machine, 2 threads made
    # receding-horizon solves of ilqr_bicycle_H50 about 8x slower (206 ms against 25 ms median).
    threads: int | None = 1
    # The backward pass, and the closed-loop rollouts and linearisation on a model with a symbolic step
    # (NumpyDynamics.symbolic: the car's bicycle), as C compiled once with the machine's compiler
    # (ilqr_native.py), kept in native_cache across starts; for nx + nu <= NATIVE_MAX_SIZE. Without a
    # compiler or a writable cache, the numpy path (a logged warning says why).
    native: bool = True
    native_cache: str = "~/.cache/mbrl_ros/native"

    def validate(self, source: str = "ilqr") -> None:
        super().validate(source)
        _positive_int(source, "max_iterations", self.max_iterations)
        _real(source, "tolerance", self.tolerance, low=0.0)
        _real(source, "regularisation", self.regularisation, low=0.0)
        _real(source, "regularisation_min", self.regularisation_min, low=0.0)
        _real(source, "regularisation_max", self.regularisation_max, low=0.0, open_low=True)
        _real(source, "regularisation_factor", self.regularisation_factor, low=1.0, open_low=True)
        _positive_int(source, "line_search_steps", self.line_search_steps)
        _real(source, "sufficient_decrease", self.sufficient_decrease, low=0.0, high=1.0)
        _one_of(source, "ensemble", self.ensemble, ("mean", "member"))
        if self.threads is not None:
            _positive_int(source, "threads", self.threads)
        if not isinstance(self.native_cache, str) or not self.native_cache:
            raise ValueError(f"{source}: native_cache: expected a directory, got {self.native_cache!r}")
        for key in ("warm_start", "compile", "numpy", "native"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{source}: {key}: expected true or false, got {getattr(self, key)!r}")


@dataclass
class BackwardPass:
    """Gains of one backward pass and the predicted cost change ``alpha * d1 + alpha^2 * d2``."""

    k: np.ndarray  # [H, nu] feedforward
    K: np.ndarray  # [H, nu, nx] feedback
    d1: float
    d2: float

    def expected_change(self, alpha: float) -> float:
        return alpha * self.d1 + alpha * alpha * self.d2


def box_qp(H: np.ndarray, g: np.ndarray, low: np.ndarray, high: np.ndarray, start: np.ndarray,
           iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``argmin 0.5 k'Hk + g'k`` over ``low <= k <= high`` (H positive definite) -> ``(k, free)``.

    Active sets, as in projected Newton: clip into the box, hold the dimensions at a
    bound whose gradient points outwards, solve for the others with those held, and
    repeat until the held set no longer changes. ``free`` marks the dimensions not held
    at a bound. For one step's actions: a handful of dimensions, one or two rounds.
    """
    k = start
    held = np.zeros(len(g), dtype=bool)
    # Few numpy calls per round (their overhead, not arithmetic, is the cost at these sizes).
    for _ in range(iterations):
        k = np.minimum(np.maximum(k, low), high)
        grad = g + H @ k
        now_held = ((k <= low) & (grad > 0)) | ((k >= high) & (grad < 0))
        free = ~now_held
        if now_held.tolist() == held.tolist() and bool(
                (np.abs(grad[free]) <= 1e-9 * (1.0 + np.abs(g[free]))).all()):
            break
        held = now_held
        if not now_held.any():
            k = posv(H, -g, lower=1)[1]
        elif not now_held.all():
            rows = H[free]
            k[free] = posv(rows[:, free], -(g[free] + rows[:, held] @ k[held]), lower=1)[1]
    return k, ~held


class IlqrPlanner(Planner):
    """iLQR with LM regularisation, batched line search and warm start."""

    config_class = IlqrConfig
    name = "ilqr"
    config: IlqrConfig

    def __init__(self, model: DynamicsModel, cost: TrajectoryCost, config: IlqrConfig | None = None) -> None:
        super().__init__(model, cost, config)
        c = self.config
        self.alphas = torch.tensor([0.5**i for i in range(c.line_search_steps)], dtype=self.dtype, device=self.device)
        self._tangents = self._colouring_tangents()
        self.gains: BackwardPass | None = None
        self._native_backward: NativeBackwardPass | None = None
        self._native_model: NativeModel | None = None
        self._native_key: tuple | None = None
        self._fixed64: tuple | None = None  # a solve's constants in float64 (_closed_loop_native)
        self._native_problem: str | None = None  # why a part is not compiled
        if c.native and self.state_dim + self.action_dim > NATIVE_MAX_SIZE:
            # Its C grows with (nx + nu)^3 and takes minutes to compile (the hand: 63 + 20); at such sizes
            # numpy's calls are arithmetic more than overhead.
            self._native_problem = f"nx + nu = {self.state_dim + self.action_dim} > {NATIVE_MAX_SIZE}"
        elif c.native:
            self._native_backward = self._native(
                "backward pass", lambda: NativeBackwardPass(self.horizon, self.state_dim, self.action_dim,
                                                            c.native_cache))
        self._use_model(model)
        self._closed_loop_fn = self._closed_loop
        if c.compile:
            self._closed_loop_fn = self.compile(self._closed_loop, fullgraph=True, dynamic=False,
                                                 options={"max_fusion_size": 100_000})

    def _reset(self) -> None:
        self._warm: torch.Tensor | None = None
        self._generator = torch.Generator().manual_seed(self.config.seed)

    def set_model(self, model: DynamicsModel) -> None:
        super().set_model(model)
        self._use_model(model)

    def _use_model(self, model: DynamicsModel) -> None:
        """Plan on ``model``'s deterministic form (``solve_model``) and its fastest time-major view."""
        self.solve_model = model.deterministic()
        self._dynamics = time_major_dynamics(self.solve_model)
        self.numpy_form = self.config.numpy and checked_numpy_dynamics(self.solve_model) is not None
        self._numpy: NumpyDynamics | None = None
        self._symbolic: SymbolicStep | None = None
        if self.numpy_form:
            self._use_symbolic_step(self.solve_model.numpy_dynamics())  # compiled now, not in the first solve
        # An ensemble member per solve when configured (a model that does not sample ignores it).
        self._members = model.deterministic_members if self.config.ensemble == "member" else 0

    def _solve_model_for_this_solve(self) -> None:
        if self._members:
            member = int(torch.randint(self._members, (), generator=self._generator))
            self.solve_model = self.model.deterministic(member)
            self._dynamics = time_major_dynamics(self.solve_model)
        elif not self._dynamics.still_valid():
            self._dynamics = time_major_dynamics(self.solve_model)
        # Built per solve: it holds the parameters of the moment.
        self._numpy = self.solve_model.numpy_dynamics() if self.numpy_form else None
        if self._numpy is not None:
            self._use_symbolic_step(self._numpy)

    def _use_symbolic_step(self, numpy_form: NumpyDynamics) -> None:
        """The rollouts compiled for ``numpy_form``'s symbolic step (built, or failed, once per kind of step)."""
        self._symbolic = numpy_form.symbolic() if self._native_backward is not None else None
        if self._symbolic is not None and self._symbolic.key != self._native_key:
            self._native_key = self._symbolic.key
            self._native_model = self._native("closed-loop rollouts, linearisation", lambda: NativeModel.checked(
                self.horizon, self.state_dim, self.action_dim, len(self.alphas), self._symbolic, numpy_form,
                self.config.native_cache))

    def _native(self, what: str, build):
        """``build()``, or None with a logged reason (``native_status``)."""
        try:
            return build()
        except NativeUnavailable as err:
            self._native_problem = str(err)
            log.warning("ilqr: %s on the numpy path: %s", what, err)
            return None

    @property
    def native_status(self) -> str:
        """Which parts run compiled (``native``), and why the others do not."""
        parts = [what for what, built in (("backward pass", self._native_backward),
                                          ("closed-loop rollouts, linearisation",
                                           self._native_model if self._symbolic is not None else None)) if built]
        if self._native_problem is None:
            return ", ".join(parts) or "off"
        return f"{', '.join(parts)}; numpy path for the rest: {self._native_problem}" if parts else \
            f"numpy path: {self._native_problem}"

    # Derivatives -----------------------------------------------------------
    def linearise(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``states[H, nx]``, ``actions[H, nu]`` -> ``A[H, nx, nx]``, ``B[H, nx, nu]``: one batched call of
        the solve model's ``jacobians``."""
        with torch.enable_grad():
            return self.solve_model.jacobians(states.detach(), actions.detach())

    def _linearise64(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``linearise`` in float64 numpy, from the model's numpy form where the solve has one."""
        if self._native_model is not None and self._symbolic is not None:
            return self._native_model.jacobians(as_float64(states), as_float64(actions), self._symbolic.parameters)
        if self._numpy is not None:
            return self._numpy.jacobians(as_float64(states), as_float64(actions))
        return tuple(as_float64(t) for t in self.linearise(states, actions))

    def _quadratise64(self, states: torch.Tensor, actions: torch.Tensor) -> list[np.ndarray]:
        """``quadratise`` in float64 numpy: the cost's own derivatives (``TrajectoryCost.numpy_derivatives``,
        where every term has them and ``numpy`` is on), else ``quadratise``'s numerical ones."""
        if self.config.numpy:
            derivatives = self.cost.numpy_derivatives(as_float64(states), as_float64(actions))
            if derivatives is not None:
                return derivatives
        with torch.enable_grad():
            return [as_float64(t) for t in self.quadratise(states, actions)]

    def _colouring_tangents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Directions for Hessian columns: coordinate j at every step of one parity, ``2 * (nx + nu)`` of them."""
        nx, nu, horizon = self.state_dim, self.action_dim, self.horizon
        n = nx + nu
        vx = torch.zeros(2, n, horizon + 1, nx, dtype=self.dtype, device=self.device)
        vu = torch.zeros(2, n, horizon, nu, dtype=self.dtype, device=self.device)
        for parity in (0, 1):
            for j in range(nx):
                vx[parity, j, parity::2, j] = 1.0
            for j in range(nu):
                vu[parity, nx + j, parity::2, j] = 1.0
        return vx.reshape(2 * n, horizon + 1, nx), vu.reshape(2 * n, horizon, nu)

    def quadratise(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Cost derivatives along ``states[H+1, nx]``, ``actions[H, nu]``.

        Returns ``l_x[H+1, nx], l_u[H, nu], l_xx[H+1, nx, nx], l_uu[H, nu, nu], l_ux[H, nu, nx]``.
        The gradient is exact (autograd). Hessian columns are central differences of
        exact gradients along the colouring directions; all ``1 + 4 * (nx + nu)``
        trajectories go through the cost as one batch and one backward pass, which
        on a CPU is about 20x faster than vmapped forward-over-reverse products
        and exact for quadratic terms. The step is ``cbrt(machine eps) * (1 + |z|)``.
        """
        nx, nu, horizon = self.state_dim, self.action_dim, self.horizon
        n = nx + nu
        vx, vu = self._tangents
        step = torch.finfo(self.dtype).eps ** (1.0 / 3.0)
        hx_step = step * (1.0 + states.detach().abs())  # [H+1, nx]
        hu_step = step * (1.0 + actions.detach().abs())
        dx, du = vx * hx_step, vu * hu_step  # [2n, ...]
        batch_x = torch.cat((states[None], states + dx, states - dx)).detach().requires_grad_(True)
        batch_u = torch.cat((actions[None], actions + du, actions - du)).detach().requires_grad_(True)
        # materialize_grads: a cost without an action (or state) term has zero, not missing, derivatives.
        gx, gu = torch.autograd.grad(self.cost(batch_x, batch_u).sum(), (batch_x, batch_u), materialize_grads=True)
        lx, lu = gx[0], gu[0]
        count = 2 * n
        # Column j of the diagonal block at step t, from the direction of t's parity.
        hx = ((gx[1 : 1 + count] - gx[1 + count :]) / 2.0).reshape(2, n, horizon + 1, nx)
        hu = ((gu[1 : 1 + count] - gu[1 + count :]) / 2.0).reshape(2, n, horizon, nu)
        steps_x = torch.arange(horizon + 1, device=self.device)
        steps_u = steps_x[:-1]
        blocks_x = hx[steps_x % 2, :, steps_x, :]  # [H+1, n, nx]: [t, j, i], divided below by step_j
        blocks_u = hu[steps_u % 2, :, steps_u, :]  # [H, n, nu]
        lxx = (blocks_x[:, :nx, :] / hx_step[:, :, None]).transpose(1, 2)
        lux = (blocks_u[:, :nx, :] / hx_step[:-1, :, None]).transpose(1, 2)
        luu = (blocks_u[:, nx:, :] / hu_step[:, :, None]).transpose(1, 2)
        lxx = 0.5 * (lxx + lxx.transpose(1, 2))
        luu = 0.5 * (luu + luu.transpose(1, 2))
        return lx, lu, lxx, luu, lux

    # Backward pass -----------------------------------------------------------
    @staticmethod
    def backward_pass(A, B, lx, lu, lxx, luu, lux, mu: float, low=None, high=None) -> BackwardPass | None:
        """Riccati-like recursion in float64; None when ``Quu + mu I`` is not positive definite.

        ``low[H, nu]``, ``high[H, nu]`` (optional) bound the feedforward step ``k[t]``.
        Written for few numpy calls per step (their overhead, not arithmetic, is the
        cost at these sizes): the value function is one matrix ``V`` over ``(dx, 1)``,
        ``[[Vxx, Vx], [Vx', .]]``, and a step's Q-function one matrix over
        ``(dx, 1, du)``, ``M = L[t] + F[t]' V F[t]`` with ``F[t] = [[A, 0, B], [0, 1, 0]]``
        and ``L[t]`` the cost's derivatives in the same layout. Then the gains
        ``G = [K | k] = -Quu^-1 M[u, (x, 1)]`` and the next ``V = T' M T`` with
        ``T = [[I], [G]]``.
        """
        horizon, nx, nu = B.shape
        n = nx + 1  # (dx, 1)
        F = np.zeros((horizon, n, n + nu))
        F[:, :nx, :nx], F[:, :nx, n:], F[:, nx, nx] = A, B, 1.0
        FT = F.transpose(0, 2, 1).copy()
        L = np.zeros((horizon, n + nu, n + nu))
        L[:, :nx, :nx], L[:, n:, n:] = lxx[:horizon], luu
        L[:, n:, :nx], L[:, :nx, n:] = lux, lux.transpose(0, 2, 1)
        L[:, :nx, nx], L[:, nx, :nx] = lx[:horizon], lx[:horizon]
        L[:, n:, nx], L[:, nx, n:] = lu, lu
        V = np.zeros((n, n))
        V[:nx, :nx], V[:nx, nx], V[nx, :nx] = lxx[horizon], lx[horizon], lx[horizon]
        minus_gains = np.zeros((horizon, nu, n))  # -[K | k]
        Ms = [None] * horizon
        reg = mu * np.eye(nu)
        bounded = [False] * horizon if low is None else list(np.isfinite(low).any(1) | np.isfinite(high).any(1))
        for t in range(horizon - 1, -1, -1):
            M = Ms[t] = L[t] + FT[t] @ (V @ F[t])
            quu, mux = M[n:, n:], M[n:, :n]
            quu_reg = quu + reg
            # Cholesky factor and solve in one LAPACK call; info > 0: Quu + mu I is not positive definite.
            _, Gn, info = posv(quu_reg, mux, lower=1)
            if info:
                return None
            if bounded[t]:
                kt = -Gn[:, nx]
                if ((kt < low[t]) | (kt > high[t])).any():
                    kt, free = box_qp(quu_reg, M[n:, nx], low[t], high[t], kt)
                    Gn = np.zeros((nu, n))  # no feedback on an action held at a bound
                    Gn[:, nx] = -kt
                    if free.any():
                        Gn[free, :nx] = posv(quu_reg[free][:, free], mux[free, :nx], lower=1)[1]
            minus_gains[t] = Gn
            # V = Mxx + P + P' + G' Quu G with P = Mxu G, G = -Gn: symmetric by construction, then exactly.
            U = M[:n, :n] + Gn.T @ (quu @ Gn - 2.0 * mux)
            V = 0.5 * (U + U.T)
        Ms = np.stack(Ms)
        quu, qu = Ms[:, n:, n:], Ms[:, n:, nx]
        k, K = -minus_gains[:, :, nx], -minus_gains[:, :, :nx]
        d1 = float(np.einsum("ti,ti->", k, qu))
        d2 = float(0.5 * np.einsum("ti,tij,tj->", k, quu, k))
        return BackwardPass(k, K, d1, d2)

    def _backward(self, as64: list[np.ndarray], mu: float, at_low: np.ndarray, at_high: np.ndarray,
                  step_low: np.ndarray, step_high: np.ndarray) -> BackwardPass | None:
        """``backward_pass``, compiled where it can be (``NativeBackwardPass``), else (or where its box QPs
        have not settled) in numpy."""
        if self._native_backward is not None:
            native = self._native_backward(*as64, mu, at_low, at_high)
            if native is None:
                return None
            if native is not UNSETTLED:
                return BackwardPass(*native)
        return self.backward_pass(*as64, mu=mu, low=step_low, high=step_high)

    # Forward pass ------------------------------------------------------------
    def forward_pass(
        self, state: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, gains: BackwardPass,
        alphas: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Closed-loop rollouts for all ``alphas[A]`` at once -> ``(costs[A], states[A, H+1, nx], actions[A, H, nu])``."""
        if self._native_model is not None and self._symbolic is not None:
            return self._closed_loop_native(state, states, actions, gains, alphas)
        if self._numpy is not None:
            return self._closed_loop_numpy(state, states, actions, gains, alphas)
        k = torch.as_tensor(gains.k, dtype=self.dtype, device=self.device)
        K = torch.as_tensor(gains.K, dtype=self.dtype, device=self.device)
        previous, has_previous = self._previous()
        with torch.no_grad():
            return self._closed_loop_fn(state, states, actions, k, K, alphas, previous, has_previous)

    def _closed_loop(
        self, state: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, k: torch.Tensor, K: torch.Tensor,
        alphas: torch.Tensor, previous: torch.Tensor, has_previous: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``u = ubar + alpha k + K (x - xbar)``, clamped to rate limits and bounds; pure tensor code.

        Time-major (``x[nx, A]``, ``u[nu, A]``) so that the model step is the
        planners' fast one (``TimeMajorDynamics``).
        """
        low, high = self.action_low[:, None], self.action_high[:, None]
        rate = None if self.max_rate is None else self.max_rate[:, None]
        x = state[:, None].expand(-1, alphas.shape[0])
        before = previous[:, None].expand(-1, alphas.shape[0])
        # u[t] = (ubar[t] + alpha k[t] - K[t] xbar[t]) + K[t] x[t]: the part in brackets for all steps at once.
        offsets = (actions - (K @ states[:-1, :, None])[..., 0])[:, :, None] + k[:, :, None] * alphas  # [H, nu, A]
        xs, us = [x], []
        for t in range(self.horizon):
            u = torch.addmm(offsets[t], K[t], x)
            if rate is not None:
                window = torch.where(has_previous > 0, rate, torch.full_like(rate, float("inf"))) if t == 0 else rate
                u = torch.maximum(torch.minimum(u, before + window), before - window)
            u = torch.clamp(u, low, high)
            x = self._dynamics.step(x, u)
            xs.append(x)
            us.append(u)
            before = u
        new_states, new_actions = torch.stack(xs).permute(2, 0, 1), torch.stack(us).permute(2, 0, 1)
        return self.cost(new_states, new_actions), new_states, new_actions

    def _closed_loop_numpy(
        self, state: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, gains: BackwardPass,
        alphas: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_closed_loop`` on the model's float64 numpy form; the rollouts then go through the cost as one
        batch (``_scored``)."""
        horizon, count = self.horizon, alphas.shape[0]
        low, high = as_float64(self.action_low)[:, None], as_float64(self.action_high)[:, None]
        rate = None if self.max_rate is None else as_float64(self.max_rate)[:, None]
        previous, has_previous = self._previous()
        before = as_float64(previous)[:, None]
        offsets = _offsets(states, actions, gains, as_float64(alphas))
        xs = np.empty((horizon + 1, self.state_dim, count))
        us = np.empty((horizon, self.action_dim, count))
        x = xs[0] = as_float64(state)[:, None]
        step = self._numpy.step
        for t in range(horizon):
            u = offsets[t] + gains.K[t] @ x
            if rate is not None and (t > 0 or float(has_previous) > 0):
                u = np.maximum(np.minimum(u, before + rate), before - rate)
            u = us[t] = np.minimum(np.maximum(u, low), high)
            x = xs[t + 1] = step(x, u)
            before = u
        return self._scored(xs.transpose(2, 0, 1), us.transpose(2, 0, 1))

    def _scored(self, states: np.ndarray, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(costs[A], states, actions)`` of float64 rollouts ``states[A, H+1, nx]``, ``actions[A, H, nu]``: the
        cost's numpy form where all its terms have one (``TrajectoryCost.numpy_cost``, in float64), else the
        cost in the planner's dtype; states and actions as tensors in that dtype."""
        costs = self.cost.numpy_cost(states, actions)
        new_states = torch.from_numpy(states).to(dtype=self.dtype, device=self.device)
        new_actions = torch.from_numpy(actions).to(dtype=self.dtype, device=self.device)
        if costs is not None:
            return torch.from_numpy(costs), new_states, new_actions
        with torch.no_grad():
            return self.cost(new_states, new_actions), new_states, new_actions

    def _closed_loop_native(
        self, state: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, gains: BackwardPass,
        alphas: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_closed_loop_numpy``'s rollouts in one compiled call (``NativeModel``)."""
        # What stays the same in a solve, converted once (reset by _solve; a call from outside a solve: per state).
        if self._fixed64 is None or self._fixed64[0] is not state:
            rate = np.full(self.action_dim, np.inf) if self.max_rate is None else as_float64(self.max_rate)
            previous, has_previous = self._previous()
            windows = np.empty((self.horizon, self.action_dim))
            windows[:] = rate
            if not float(has_previous) > 0:
                windows[0] = np.inf  # no previous action: the first step's rate is free
            self._fixed64 = (state, as_float64(state), as_float64(previous), windows, as_float64(self.action_low),
                             as_float64(self.action_high), as_float64(alphas))
        _, x0, previous, windows, low, high, alphas64 = self._fixed64
        return self._scored(*self._native_model.rollouts(x0, previous, _offsets(states, actions, gains, alphas64),
                                                         gains.K, windows, low, high, self._symbolic.parameters))

    def open_loop(self, state: torch.Tensor, actions: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """Cost, states and (limited) actions of ``actions[H, nu]`` from ``state``, via the forward pass."""
        nx, nu = self.state_dim, self.action_dim
        zero = BackwardPass(np.zeros((self.horizon, nu)), np.zeros((self.horizon, nu, nx)), 0.0, 0.0)
        anchor = torch.zeros(self.horizon + 1, nx, dtype=self.dtype, device=self.device)
        costs, states, limited = self.forward_pass(state, anchor, actions, zero, self.alphas)
        return float(costs[0]), states[0].contiguous(), limited[0].contiguous()

    def line_search(
        self, state: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, cost: float, gains: BackwardPass
    ) -> tuple[float, torch.Tensor, torch.Tensor, float] | None:
        """Largest alpha with sufficient decrease -> ``(alpha, states, actions, cost)``; None rejects the step."""
        costs, new_states, new_actions = self.forward_pass(state, states, actions, gains, self.alphas)
        for i, alpha in enumerate(self.alphas.tolist()):
            new_cost = float(costs[i])
            expected = -gains.expected_change(alpha)
            decrease = cost - new_cost
            if np.isfinite(new_cost) and decrease > 0 and decrease >= self.config.sufficient_decrease * expected:
                # Contiguous copies: the next forward pass sees the same strides (one compiled graph).
                return alpha, new_states[i].contiguous(), new_actions[i].contiguous(), new_cost
        return None

    # Solve -------------------------------------------------------------------
    def _plan(self, state: torch.Tensor) -> PlanResult:
        threads = torch.get_num_threads()
        if self.config.threads is None or self.config.threads == threads:
            return self._solve(state)
        torch.set_num_threads(self.config.threads)
        try:
            return self._solve(state)
        finally:
            torch.set_num_threads(threads)

    def _solve(self, state: torch.Tensor) -> PlanResult:
        c = self.config
        self._fixed64 = None
        self._solve_model_for_this_solve()
        actions = self._warm if (c.warm_start and self._warm is not None) else self.initial_actions()
        cost, states, actions = self.open_loop(state, actions)
        history = [cost]
        mu = c.regularisation
        converged = False
        iterations = 0
        gains = None
        as64 = None  # derivatives along (states, actions), kept while a rejected step leaves them unchanged
        for iterations in range(1, c.max_iterations + 1):
            if as64 is None:
                as64 = [*self._linearise64(states[:-1], actions), *self._quadratise64(states, actions)]
                # Actions at a bound may only move inwards: k's box.
                at_low, at_high = (actions <= self.action_low).cpu().numpy(), (actions >= self.action_high).cpu().numpy()
                step_low, step_high = np.where(at_low, 0.0, -np.inf), np.where(at_high, 0.0, np.inf)
            gains = None
            while gains is None and mu <= c.regularisation_max:
                gains = self._backward(as64, mu, at_low, at_high, step_low, step_high)
                if gains is None:
                    mu = max(mu * c.regularisation_factor, c.regularisation_min or 1e-9)
            if gains is None:
                break
            if -gains.expected_change(1.0) < c.tolerance * max(1.0, abs(cost)):
                converged = True  # no predicted improvement left: at a (local) minimum
                break
            step = self.line_search(state, states, actions, cost, gains)
            if step is None:
                mu = max(mu * c.regularisation_factor, c.regularisation_min or 1e-9)
                if mu > c.regularisation_max:
                    break
                continue
            _, states, actions, new_cost = step
            as64 = None
            decrease = cost - new_cost
            cost = new_cost
            history.append(cost)
            mu = mu / c.regularisation_factor
            if mu < c.regularisation_min:
                mu = 0.0
            if decrease < c.tolerance * max(1.0, abs(history[-2])):
                converged = True
                break
        self.gains = gains
        self._warm = shift_sequence(actions, c.shift_fill, self.action_low, self.action_high)
        return PlanResult(
            action=actions[0],
            nominal_actions=actions,
            predicted_states=states,
            cost=cost,
            info={
                "iterations": iterations,
                "converged": converged,
                "cost_history": history,
                "regularisation": mu,
            },
        )


def _offsets(states: torch.Tensor, actions: torch.Tensor, gains: BackwardPass, alphas: np.ndarray) -> np.ndarray:
    """``u[t] = (ubar[t] + alpha k[t] - K[t] xbar[t]) + K[t] x[t]``: the part in brackets, ``[H, nu, A]``."""
    return ((as_float64(actions) - np.einsum("tij,tj->ti", gains.K, as_float64(states)[:-1]))[:, :, None]
            + gains.k[:, :, None] * alphas)
