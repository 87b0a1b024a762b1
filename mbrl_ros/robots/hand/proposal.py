"""HandReach's per-goal solution for the planner: the held joint targets whose steady state puts the fingertips
on the goal, solved through the hand's prior, as the planner's proposal (``Planner.set_prior``).

HandReach's goal is one pose for the whole episode and its actions are absolute joint targets, so the best plan
holds about one action. MPPI's noise rarely finds it (on the prior as its own exact plant MPPI reached 25 of 50
evaluation goals): a plan ends 1-2 cm away. The prior's joints are linear lags, so where it settles with an
action held has a closed form (``LaggedJointsNumpy.held``: each joint its target less a constant gap, the
fingertips by kinematics), and the action that settles on the goal is a 20-unknown least-squares problem:
``BoxLevenbergMarquardt`` from ``restarts`` starts (zero, the last goal's solution, random), a few steps per
control cycle (``iterations_per_plan``) so each cycle stays within its period, the best start kept after
``narrow_after`` steps. The proposal is ``open_loop`` (the held action whatever the state), so the planner does not
roll it out on its own: MPPI draws its prior share of samples around it and scores the held action itself as one
noise-free sample in its (compiled) planning step (``Planner.warm_start_from_prior``). Its separate float64 rollout
beside the shifted plan had been most of a plan's time.

The proposal aims where the cost's fingertip term aims (``FingertipTargetTerm.target``: the goal, less the
term's integral correction of the hand's hold error where that is on), through the model and output bias the
planner predicts with (``Planner.output_bias``), so the planner scores it as it plans. A new goal (the term's
``goal`` changed) restarts the solve. It tells the term where its action settles (``expected``), so the term's
correction estimates the hand's hold error at that action rather than winding up where the target is out of reach.
With the term's ``min_separation``, the first ``narrow_after`` steps solve for the goal itself; the pairs that
solution brings closer than the separation are the ones the term keeps apart (``keep_apart``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from mbrl_ros.core.least_squares import BoxLevenbergMarquardt

__all__ = ["ReachProposal"]


class ReachProposal:
    """``prepare(state, planner)`` once per plan, then ``act(state)`` / ``__call__(states)``: the held action."""

    defaults = {"restarts": 16, "iterations_per_plan": 3, "narrow_after": 12, "seed": 0}
    open_loop = True  # the same action whatever the state: no rollout needed to know its actions

    def __init__(self, restarts: int = 16, iterations_per_plan: int = 3, narrow_after: int = 12, seed: int = 0) -> None:
        for name, value, low in (("restarts", restarts, 1), ("iterations_per_plan", iterations_per_plan, 1),
                                 ("narrow_after", narrow_after, 0), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        self.restarts, self.iterations_per_plan, self.narrow_after = restarts, iterations_per_plan, narrow_after
        self.rng = np.random.default_rng(seed)
        self.goal: np.ndarray | None = None  # the goal the solve started for
        self.target: np.ndarray | None = None  # where the cost aims this cycle
        self.action: np.ndarray | None = None  # the held action, once a solve has started
        self.distance = float("nan")  # where the model (with the bias) settles with it, from the target (m)
        self._solver: BoxLevenbergMarquardt | None = None
        self._steps = 0
        self._bias: np.ndarray | None = None
        self._model: tuple[Any, torch.Tensor] | None = None  # the model and the weights its numpy form was built from
        self._held = None
        self._deciding = False  # solving for the goal itself, to tell which fingertip pairs to keep apart

    @classmethod
    def from_config(cls, values: Mapping[str, Any], source: str = "proposal") -> "ReachProposal":
        unknown = sorted(set(values) - set(cls.defaults) - {"type"})
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(cls.defaults)}")
        try:
            return cls(**{k: values.get(k, v) for k, v in cls.defaults.items()})
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    def prepare(self, state: torch.Tensor, planner) -> bool:
        """This cycle's share of the solve, on ``planner``'s model (the hand's prior; another model: False), its
        cost's fingertip target (none set: False) and its output bias."""
        held = self._held_form(planner.model)
        term = _fingertip_term(planner.cost)
        if held is None or term is None or not bool(torch.isfinite(term.target).all()):
            return False
        goal, self.target = (t.detach().double().cpu().numpy() for t in (term.goal, term.target))
        bias = planner.output_bias()
        self._bias = None if bias is None else bias.detach().double().cpu().numpy()
        if self._solver is None or self.goal is None or not np.array_equal(goal, self.goal):
            self.goal = goal
            self._deciding = term.min_separation > 0
            self._solver = BoxLevenbergMarquardt(self._residuals, -np.ones(20), np.ones(20))
            starts = [np.zeros(20)] + ([self.action] if self.action is not None else [])
            starts += list(self.rng.uniform(-1.0, 1.0, (max(self.restarts - len(starts), 0), 20)))
            self._solver.start(np.array(starts[:self.restarts]))
            self._steps = 0
        if self._deciding:
            self.target = goal
        # The restarts' share first; once narrowed to the best, one step a cycle follows the moving target.
        steps = self.iterations_per_plan if len(self._solver.x) > 1 else 1
        self._solver.iterate(steps)
        self._steps += steps
        if self._steps >= self.narrow_after and len(self._solver.x) > 1:
            self._solver.keep([int(np.argmin(self._solver.norms))])
        if self._deciding and self._steps >= self.narrow_after:
            self._keep_apart(term)
        self.action, self.distance = self._solver.best()
        term.expected.copy_(torch.as_tensor(self._held.held(self.action[None], self._bias, False)[0][0]))
        return True

    def act(self, state: np.ndarray) -> np.ndarray:
        if self.action is None:
            raise ValueError("ReachProposal: no action before prepare() found one")
        return self.action.copy()

    def __call__(self, states: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.act(None), dtype=states.dtype, device=states.device).expand(states.shape[0], -1)

    # Internals --------------------------------------------------------------------------
    def _keep_apart(self, term) -> None:
        """Solved so far for the goal itself: the term's ``min_separation`` then applies only to the pairs this
        solution brings within it (the others the hand cannot bring that close: separating them only aims them
        farther from the goal), and the solve goes on to the term's target."""
        tips = self._held.held(self._solver.best()[0][None], self._bias, False)[0][0].reshape(-1, 3)
        term.keep_apart([(i, j) for i in range(len(tips)) for j in range(i + 1, len(tips))
                         if np.linalg.norm(tips[i] - tips[j]) < term.min_separation])
        self.target = term.target.detach().double().cpu().numpy()
        self._solver.refresh()
        self._deciding = False

    def _residuals(self, actions: np.ndarray, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        tips, derivative = self._held.held(actions, self._bias, jacobian)
        return tips - self.target, derivative

    def _held_form(self, model):
        """The prior's numpy form, built again when the model or its weights change (a hot swap copies weights
        in place); None for a model that is not the hand's prior."""
        from mbrl_ros.robots.hand.joint_lag import LaggedJoints

        if not isinstance(model, LaggedJoints) or model.distal_tendon:
            return None
        if self._model is None or self._model[0] is not model or not torch.equal(self._model[1], model.theta):
            self._model = (model, model.theta.detach().clone())
            self._held = model.numpy_dynamics()
        return self._held


def _fingertip_term(cost):
    """The cost's fingertip target term (``FingertipTargetTerm``) with its goal set, else None."""
    from mbrl_ros.robots.hand.costs import FingertipTargetTerm

    for term in getattr(cost, "terms", {}).values():
        if isinstance(term, FingertipTargetTerm) and not term.missing_context():
            return term
    return None
