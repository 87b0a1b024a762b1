"""The controller without ROS: it owns the cost and the planner and decides each cycle.

``RecedingHorizonController.from_config`` builds it from the controller's
parameters (bounds, exploration, ``cost`` and planner sections); run-time
inputs come through its own methods: ``set_context`` (goal, path, ... for the
cost), ``set_model`` (a new dynamics model). ``step`` is everything the
controller node does per cycle between receiving a state and publishing a command:

- a new model, if one arrived, is swapped in first: between cycles, never during one;
- no usable state (stale, invalid, non-finite), an e-stop, or no goal -> the safe action
  (the robot's, through the ``safe`` hook; the configured ``safe_action`` by default);
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
from typing import Any, Callable, Mapping

import numpy as np
import torch

from mbrl_ros.core.costs import TERM_KINDS, CostTerm, TrajectoryCost, build_cost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.planners.base import Planner, PlanResult

# A robot's safe command: (the last measured state or None, the configured safe_action) -> the action.
SafeAction = Callable[[np.ndarray | None, np.ndarray], np.ndarray]


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
                 exploration_smoothing: float = 0.8, seed: int = 0, exploration_steps: int = 0, *,
                 cost: TrajectoryCost | None = None, planner: str = "mppi",
                 planner_config: Mapping[str, Any] | None = None, needs_goal: bool = False,
                 safe: SafeAction | None = None, source: str = "controller") -> None:
        """``exploration_steps``: most random actions sent before the first model (0: no limit).
        A bounded budget keeps 'N random transitions, then learn' honest while training runs.
        ``cost``, ``planner`` and ``planner_config``: what ``set_model`` builds the planner from.
        ``needs_goal``: plan only once a goal context was set. ``safe``: the robot's safe command."""
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
        self.cost = cost
        self.planner_name = planner
        self.planner_config = dict(planner_config or {})
        self.needs_goal = needs_goal
        self.has_goal = False
        self.safe = safe
        self.source = source
        self.planner: Planner | None = None
        self.pending_model: DynamicsModel | None = None
        self.last_action: np.ndarray | None = None

    @classmethod
    def from_config(cls, params: Mapping[str, Any], *, term_kinds: Mapping[str, type[CostTerm]] = TERM_KINDS,
                    safe: SafeAction | None = None, source: str = "controller") -> "RecedingHorizonController":
        """From the controller's parameters: ``action_low``, ``action_high``, ``safe_action``,
        ``max_rate`` ([0.0]: none), ``explore_without_model``, ``exploration_smoothing``, ``seed``,
        ``exploration_steps``, ``needs_goal``, ``state_names`` (the state's size), ``cost`` (its
        section) and ``planner`` with the section of that name. ``term_kinds``: the cost term kinds
        allowed (a robot's). Errors name ``source`` and the parameter."""
        max_rate = None if list(params["max_rate"]) == [0.0] else list(params["max_rate"])
        planner = params["planner"]
        cost = build_cost(params["cost"], len(params["state_names"]), len(params["action_low"]),
                          source=f"{source}: parameter 'cost'", kinds=term_kinds)
        return cls(params["action_low"], params["action_high"], params["safe_action"], max_rate,
                   params["explore_without_model"], params["exploration_smoothing"], params["seed"],
                   params["exploration_steps"], cost=cost, planner=planner,
                   planner_config=params.get(planner) or {}, needs_goal=params["needs_goal"], safe=safe,
                   source=source)

    # --- between cycles -----------------------------------------------------------
    def attach_planner(self, planner: Planner) -> None:
        self.planner = planner

    def set_model(self, model: DynamicsModel) -> None:
        """The first model builds the planner (from the cost and the planner settings); a later one
        replaces the current one at the start of the next cycle (``offer_model``)."""
        if self.planner is None:
            if self.cost is None:
                raise ValueError(f"{self.source}: no cost to plan with (build with from_config, or attach_planner)")
            self.attach_planner(build_planner(self.planner_name, model, self.cost, self.planner_config,
                                              source=f"{self.source}: {self.planner_name}"))
        else:
            self.offer_model(model)

    def offer_model(self, model: DynamicsModel) -> None:
        """Queue a model; it replaces the current one at the start of the next cycle."""
        self.pending_model = model

    def set_context(self, name: str, value: Any, goal: bool = False) -> int:
        """Give the cost its run-time context ``name`` (see ``TrajectoryCost.set_context``); returns how many
        terms read it. A ``goal`` starts a new episode (no warm start from the old one). ValueError when the
        value is bad or no term reads it."""
        readers = 0 if self.cost is None else self.cost.set_context(name, value)
        if not readers:
            raise ValueError(f"the cost has no {name} term")
        if goal:
            self.has_goal = True
            self.reset()
        return readers

    def safe_action_for(self, state: np.ndarray | None) -> np.ndarray:
        """The robot's safe command for its last measured ``state`` (before the output limits)."""
        return self.safe_action if self.safe is None else np.asarray(self.safe(state, self.safe_action), float)

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
    def step(self, state: np.ndarray | None, problem: str = "", has_model: bool | None = None) -> ControlOutput:
        """``problem``: why the state or situation is unusable ('' if it is fine). ``has_model``:
        False to explore even with a planner (default: whether there is one)."""
        started = time.perf_counter()
        self._swap_model()
        plan = None
        has_model = self.planner is not None if has_model is None else has_model
        if not problem and self.needs_goal and not self.has_goal and self.planner is not None:
            problem = "no goal received yet"
        if not problem and state is not None and not np.all(np.isfinite(state)):
            problem = "state has non-finite values"
        if problem:
            action, mode, reason = self.safe_action_for(state), "safe", problem
        elif not has_model or self.planner is None:
            budget_left = not self.exploration_steps or self.explored < self.exploration_steps
            if self.explore and budget_left:
                action, mode, reason = self.exploration(), "explore", "no model yet"
                self.explored += 1
            elif self.explore:
                action, mode, reason = self.safe_action_for(state), "safe", "exploration budget spent; waiting for a model"
            else:
                action, mode, reason = self.safe_action_for(state), "safe", "no model yet"
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
