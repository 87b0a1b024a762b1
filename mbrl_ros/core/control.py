"""The controller's decision each cycle, without ROS: plan, explore, or stop safely.

``RecedingHorizonController.step`` is everything the controller node does per
cycle between receiving a state and publishing a command:

- a new model, if one arrived, is swapped in first: between cycles, never during one;
- no usable state (stale, invalid, non-finite), an e-stop, or no goal -> the safe action;
- no model yet -> exploration (smoothed random actions), when enabled and while the
  exploration budget lasts, else the safe action;
- otherwise the planner's first action.

Whatever the source, the action is clamped to the bounds and rate-limited
against the previously sent action at the output, so no path around the limits
exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners.base import Planner, PlanResult


class ExplorationPolicy:
    """Low-pass filtered uniform noise: random driving that actually goes places.

    ``a[t] = smoothing * a[t-1] + (1 - smoothing) * gain * U(-1, 1)``, clipped to
    the bounds; ``gain`` keeps the filtered signal's spread comparable to the bounds.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, smoothing: float = 0.8, seed: int = 0) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"exploration smoothing: expected 0 <= value < 1, got {smoothing}")
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        self.smoothing = smoothing
        self.gain = 2.0 if smoothing > 0 else 1.0
        self.rng = np.random.default_rng(seed)
        self.action = np.zeros_like(self.low)

    def reset(self) -> None:
        self.action = np.clip(np.zeros_like(self.low), self.low, self.high)

    def __call__(self) -> np.ndarray:
        centre, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        noise = centre + half * self.rng.uniform(-1.0, 1.0, self.low.shape) * self.gain
        self.action = np.clip(self.smoothing * self.action + (1 - self.smoothing) * noise, self.low, self.high)
        return self.action.copy()


@dataclass
class ControlOutput:
    action: np.ndarray
    mode: str  # plan | explore | safe
    reason: str  # why (for safe: what was wrong)
    plan: PlanResult | None
    compute_ms: float


class RecedingHorizonController:
    def __init__(self, action_low, action_high, safe_action, max_rate=None, explore: bool = True,
                 exploration_smoothing: float = 0.8, seed: int = 0, exploration_steps: int = 0) -> None:
        """``exploration_steps``: most random actions sent before the first model (0: no limit).
        A bounded budget keeps 'N random transitions, then learn' honest while training runs."""
        self.low = np.asarray(action_low, dtype=float)
        self.high = np.asarray(action_high, dtype=float)
        self.safe_action = np.asarray(safe_action, dtype=float)
        if not (self.low.shape == self.high.shape == self.safe_action.shape) or np.any(self.high <= self.low):
            raise ValueError(f"action_low {self.low.tolist()}, action_high {self.high.tolist()} and safe_action "
                             f"{self.safe_action.tolist()} must have one size and low < high")
        self.max_rate = None if max_rate is None else np.broadcast_to(np.asarray(max_rate, float), self.low.shape)
        self.explore = explore
        self.exploration = ExplorationPolicy(self.low, self.high, exploration_smoothing, seed)
        if exploration_steps < 0:
            raise ValueError(f"exploration_steps must be >= 0, got {exploration_steps}")
        self.exploration_steps = exploration_steps
        self.explored = 0
        self.planner: Planner | None = None
        self.pending_model: DynamicsModel | None = None
        self.last_action: np.ndarray | None = None

    # --- between cycles -----------------------------------------------------------
    def attach_planner(self, planner: Planner) -> None:
        self.planner = planner

    def offer_model(self, model: DynamicsModel) -> None:
        """Queue a model; it replaces the current one at the start of the next cycle."""
        self.pending_model = model

    def _swap_model(self) -> None:
        if self.pending_model is None or self.planner is None:
            return
        new, current = self.pending_model, self.planner.model
        self.pending_model = None
        if type(new) is type(current) and _same_shapes(new, current):
            # Same architecture: copy the weights in place, so a compiled planner keeps its graph.
            current.load_state_dict(new.state_dict())
        else:
            self.planner.set_model(new)

    # --- one cycle ------------------------------------------------------------------
    def step(self, state: np.ndarray | None, problem: str = "", has_model: bool = True) -> ControlOutput:
        """``problem``: why the state or situation is unusable ('' if it is fine)."""
        started = time.perf_counter()
        self._swap_model()
        plan = None
        if not problem and state is not None and not np.all(np.isfinite(state)):
            problem = "state has non-finite values"
        if problem:
            action, mode, reason = self.safe_action, "safe", problem
        elif not has_model or self.planner is None:
            budget_left = not self.exploration_steps or self.explored < self.exploration_steps
            if self.explore and budget_left:
                action, mode, reason = self.exploration(), "explore", "no model yet"
                self.explored += 1
            elif self.explore:
                action, mode, reason = self.safe_action, "safe", "exploration budget spent; waiting for a model"
            else:
                action, mode, reason = self.safe_action, "safe", "no model yet"
        else:
            previous = None if self.last_action is None else torch.as_tensor(self.last_action, dtype=torch.float32)
            plan = self.planner.plan(torch.as_tensor(state, dtype=torch.float32), previous_action=previous)
            action, mode, reason = plan.action.detach().cpu().numpy().astype(float), "plan", ""
        action = self.limit(action)
        self.last_action = action
        return ControlOutput(action, mode, reason, plan, (time.perf_counter() - started) * 1e3)

    def limit(self, action: np.ndarray) -> np.ndarray:
        action = np.clip(np.asarray(action, dtype=float), self.low, self.high)
        if self.max_rate is not None and self.last_action is not None:
            action = np.clip(action, self.last_action - self.max_rate, self.last_action + self.max_rate)
        return action

    def reset(self) -> None:
        """A new episode: forget the warm start and the exploration state."""
        self.exploration.reset()
        if self.planner is not None:
            self.planner.reset()


def _same_shapes(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
