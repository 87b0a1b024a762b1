"""The controller without ROS: it owns the cost and the planner and decides each cycle.

``RecedingHorizonController.from_config`` builds it from the controller's
parameters (bounds, exploration, ``cost`` and planner sections); run-time
inputs come through its own methods: ``set_context`` (goal, path, ... for the
cost), ``set_model`` (a new dynamics model). ``step`` is everything the
controller node does per cycle between receiving a state and publishing a command:

- a new model, if one arrived, is swapped in first: between cycles, never during one;
- a latched e-stop (``engage_e_stop`` until ``release_e_stop``), no usable state (stale,
  invalid, non-finite), or no goal -> the robot's stop (``core.stop.Stop``: the car brakes
  to a standstill, the hand holds its joints; the configured ``safe_action`` by default);
- no model yet -> exploration (smoothed random actions), when enabled and while the
  exploration budget lasts, else the stop;
- otherwise the planner's first action; with ``planner: policy`` (``controller:=policy``) the
  learned policy's action instead (``set_policy``: an ``Actor``, swapped in between cycles
  like a model; it reads the context named ``policy_context``, the goal by default).

A planning cycle that faults (an exception, a non-finite or out-of-bounds plan, a missing
context) or overruns its period falls back, in order, to the policy's action for the
current state (when a policy is deployed; clipped to the bounds, checked finite; mode
``fallback_policy``), the previous plan shifted by one step (mode ``fallback``), and the stop.

Whatever the source, the action is clamped to the bounds at the output; all but the
stop are also rate-limited against the previously sent action (a stop never waits
for a ramp). Failed cycles (no usable state) for longer than ``failure_tolerance``
seconds put the controller in ``error`` (as Nav2's controller server), the stop held,
until a cycle succeeds again.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from mbrl_ros.core.costs import TERM_KINDS, CostTerm, TrajectoryCost, build_cost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.planners.base import Planner, PlanResult
from mbrl_ros.core.stop import HoldCommand, Stop



# What can go wrong in a planning cycle (counted in RecedingHorizonController.faults).
FAULTS = ("exception", "non_finite_plan", "out_of_limit_plan", "missing_context", "overrun", "policy")
POLICY_CONTROLLER = "policy"  # the planner name that runs the learned policy alone
PLAN_TOLERANCE = 1e-6  # how far a plan may stray out of the action bounds (rounding)


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
    mode: str  # plan | policy | explore | fallback | fallback_policy | safe
    reason: str  # why (for safe: what was wrong)
    plan: PlanResult | None
    compute_ms: float


class RecedingHorizonController:
    def __init__(self, action_low, action_high, safe_action, max_rate=None, explore: bool = True,
                 exploration_smoothing: float = 0.8, seed: int = 0, exploration_steps: int = 0, *,
                 cost: TrajectoryCost | None = None, planner: str = "mppi",
                 planner_config: Mapping[str, Any] | None = None, needs_goal: bool = False,
                 stop: Stop | None = None, failure_tolerance: float = 0.5, state_dim: int | None = None,
                 policy_context: str = "goal", proposal=None, source: str = "controller",
                 speed_cap_margin: float = 0.0) -> None:
        """``exploration_steps``: most random actions sent before the first model (0: no limit).
        A bounded budget keeps 'N random transitions, then learn' honest while training runs.
        ``cost``, ``planner`` and ``planner_config``: what ``set_model`` builds the planner from.
        ``needs_goal``: plan only once a goal context was set. ``stop``: the robot's stop (default: hold
        ``safe_action``). ``failure_tolerance``: seconds of failed cycles before ``error``. ``state_dim``:
        the state's size (a state of another size is unusable; None: not checked). ``proposal``: the robot's
        per-goal solution (``Robot.planner_proposal``), the planner's prior while no learned policy is deployed.
        ``speed_cap_margin`` > 0: the cost's speed caps (``path_tracking`` with ``speed_form: cap``) follow the
        speeds seen: each model that arrives sets them to the fastest speed of the states this controller has had
        so far (its random driving included: about the model's data) plus the margin, at most the configured
        cap, so a learned model is not asked to plan far beyond what its data hold (see ``speed_caps``)."""
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
        self.stop = stop if stop is not None else HoldCommand(self.safe_action)
        if not failure_tolerance >= 0:
            raise ValueError(f"failure_tolerance must be >= 0 seconds, got {failure_tolerance}")
        self.failure_tolerance = failure_tolerance
        self.state_dim = state_dim
        self.failing_since: float | None = None  # time.monotonic() of the first failed cycle in a row
        self.error = False  # failed for longer than failure_tolerance
        self.e_stopped = False
        self.stopped = False  # the last command was the stop
        self.last_state: np.ndarray | None = None  # the last usable state a cycle had
        self.faults: Counter[str] = Counter()  # failed plans by cause (FAULTS), and overruns
        self.last_fault = ""
        self.previous_plan: np.ndarray | None = None  # the last valid plan's actions [H, nu]
        self.first_plan_ms: float | None = None  # how long the first plan took (a compiling planner compiles in it)
        self.plan_index = 0  # which of them was sent last
        self.source = source
        self.planner: Planner | None = None
        self.pending_model: DynamicsModel | None = None
        self.last_action: np.ndarray | None = None
        self.policy = None  # the learned policy (an Actor): controller:=policy, and the fallback before the stop
        self.pending_policy = None
        self.policy_context = policy_context
        self.proposal = proposal
        self.context_values: dict[str, Any] = {}  # the latest value of each context (the policy reads one)
        self._planned = False  # whether this cycle called the planner
        if not speed_cap_margin >= 0:
            raise ValueError(f"{source}: speed_cap_margin must be >= 0 m/s, got {speed_cap_margin}")
        self.speed_cap_margin = float(speed_cap_margin)
        # The capped terms and their configured caps; the fastest speed (their speed index) of the states so far.
        self._caps = {} if cost is None or not speed_cap_margin else {
            name: (term, term.target_speed) for name, term in cost.terms.items()
            if getattr(term, "speed_form", None) == "cap" and getattr(term, "speed_weight", 0)}
        self.fastest_seen: float | None = None

    @classmethod
    def from_config(cls, params: Mapping[str, Any], *, term_kinds: Mapping[str, type[CostTerm]] = TERM_KINDS,
                    stop: Stop | None = None, proposal=None, source: str = "controller") -> "RecedingHorizonController":
        """From the controller's parameters: ``action_low``, ``action_high``, ``safe_action``,
        ``max_rate`` ([0.0]: none), ``explore_without_model``, ``exploration_smoothing``, ``seed``,
        ``exploration_steps``, ``needs_goal``, ``failure_tolerance``, ``state_names`` (the state's size), ``cost`` (its
        section), ``policy_context`` and ``planner`` with the section of that name (``policy``: none). ``term_kinds``: the cost term kinds
        allowed (a robot's). Errors name ``source`` and the parameter."""
        max_rate = None if list(params["max_rate"]) == [0.0] else list(params["max_rate"])
        planner = params["planner"]
        # The planner plans within the controller's action bounds unless its own section narrows them.
        planner_config = {"action_low": list(params["action_low"]), "action_high": list(params["action_high"]),
                          **(params.get(planner) or {})}
        cost = build_cost(params["cost"], len(params["state_names"]), len(params["action_low"]),
                          source=f"{source}: parameter 'cost'", kinds=term_kinds)
        return cls(params["action_low"], params["action_high"], params["safe_action"], max_rate,
                   params["explore_without_model"], params["exploration_smoothing"], params["seed"],
                   params["exploration_steps"], cost=cost, planner=planner,
                   planner_config=planner_config, needs_goal=params["needs_goal"], stop=stop,
                   failure_tolerance=params.get("failure_tolerance", 0.5), state_dim=len(params["state_names"]),
                   policy_context=params.get("policy_context", "goal"), proposal=proposal, source=source,
                   speed_cap_margin=params.get("speed_cap_margin", 0.0))

    # --- between cycles -----------------------------------------------------------
    def attach_planner(self, planner: Planner) -> None:
        self.planner = planner

    @property
    def speed_caps(self) -> dict[str, float]:
        """The speed caps in use where they follow the speeds seen (``speed_cap_margin``), by cost term."""
        return {name: term.target_speed for name, (term, _) in self._caps.items()}

    def _follow_speeds(self) -> None:
        """Each followed cap: the fastest speed seen plus the margin, at most its configured value (none seen
        yet: the margin alone). The cap is an input of a compiled planning step, so no recompile."""
        for term, configured in self._caps.values():
            fastest = max(0.0, self.fastest_seen or 0.0)
            term.target_speed = min(configured, fastest + self.speed_cap_margin)

    def set_model(self, model: DynamicsModel) -> None:
        """The first model builds the planner (from the cost and the planner settings); a later one
        replaces the current one at the start of the next cycle (``offer_model``)."""
        if self.planner_name == POLICY_CONTROLLER:
            return  # the policy alone: no planner to build (the model serves the trainer and the prior)
        self._follow_speeds()
        if self.planner is None:
            if self.cost is None:
                raise ValueError(f"{self.source}: no cost to plan with (build with from_config, or attach_planner)")
            self.attach_planner(build_planner(self.planner_name, model, self.cost, self.planner_config,
                                              source=f"{self.source}: {self.planner_name}"))
            self._give_prior()
        else:
            self.offer_model(model)

    def offer_model(self, model: DynamicsModel) -> None:
        """Queue a model; it replaces the current one at the start of the next cycle."""
        self.pending_model = model

    def set_policy(self, policy) -> None:
        """A learned policy (``core.policies.Actor``, checked by the caller); it replaces the current one
        at the start of the next cycle."""
        self.pending_policy = policy

    def _swap_policy(self) -> None:
        if self.pending_policy is None:
            return
        self.policy, self.pending_policy = self.pending_policy, None
        self._give_policy_context()
        self._give_prior()

    def _give_prior(self) -> None:
        """The policy (else the robot's proposal) as the planner's sampling prior and warm start, where the planner
        takes one (MPPI, CEM)."""
        if self.planner is not None and hasattr(self.planner, "set_prior"):
            self.planner.set_prior(self.policy if self.policy is not None else self.proposal)

    def _give_policy_context(self) -> None:
        value = self.context_values.get(self.policy_context)
        if self.policy is not None and self.policy.context_dim and value is not None:
            try:
                self.policy.set_context(torch.as_tensor(np.asarray(value, dtype=float), dtype=torch.float32))
            except ValueError as err:  # another size: the policy cannot act (its act() raises, counted there)
                self.last_fault = f"policy: context {self.policy_context!r}: {err}"

    def policy_action(self, state: np.ndarray) -> tuple[np.ndarray | None, str]:
        """The policy's action for ``state`` clipped to the bounds, or None and why (no policy, it raises,
        a non-finite action: counted as the fault 'policy')."""
        if self.policy is None:
            return None, "no policy"
        try:
            action = np.asarray(self.policy.act(state), dtype=float)
            if action.shape != self.low.shape or not np.all(np.isfinite(action)):
                raise ValueError(f"the policy's action {action.tolist()} is not {self.low.size} finite numbers")
        except Exception as err:  # a cycle never kills the loop
            self.faults["policy"] += 1
            self.last_fault = f"policy: {type(err).__name__}: {err}"
            return None, self.last_fault
        return np.clip(action, self.low, self.high), ""

    def set_context(self, name: str, value: Any, goal: bool = False) -> int:
        """Give the cost its run-time context ``name`` (see ``TrajectoryCost.set_context``); returns how many
        terms read it. A ``goal`` starts a new episode (no warm start from the old one). ValueError when the
        value is bad or no term reads it."""
        readers = 0 if self.cost is None else self.cost.set_context(name, value)
        if not readers:
            raise ValueError(f"the cost has no {name} term")
        self.context_values[name] = value
        if name == self.policy_context:
            self._give_policy_context()
        if goal:
            self.has_goal = True
            self.reset()
        return readers

    def engage_e_stop(self) -> None:
        """Latch the e-stop: every cycle is the stop until ``release_e_stop``."""
        self.e_stopped = True

    def release_e_stop(self) -> None:
        """Clear the e-stop; the next plan starts fresh (no warm start from before the stop)."""
        self.e_stopped = False
        self.reset()

    def stop_command(self, state: np.ndarray | None) -> np.ndarray:
        """The robot's stop for its measured ``state`` (None: unusable now), within the bounds, not
        rate-limited; it becomes the last action sent. A stop that begins without a usable state starts
        from the last one the controller had (the car brakes from the last measured speed)."""
        if state is None and not self.stopped:
            state = self.last_state
        action = np.asarray(self.stop.command(state, self.last_action), dtype=float)
        if action.shape != self.low.shape or not np.all(np.isfinite(action)):
            action = self.safe_action  # a broken stop still stops with the configured command
        self.last_action = np.clip(action, self.low, self.high)
        self.stopped = True
        return self.last_action

    def _swap_model(self) -> None:
        if self.pending_model is None or self.planner is None:
            return
        new, current = self.pending_model, self.planner.model
        self.pending_model = None
        if type(new) is type(current) and _same_shapes(new, current) and new.settings() == current.settings():
            # Same architecture and settings: copy the weights in place, so a compiled planner keeps its
            # graph. Other settings (dt, substeps, propagation) are not in the weights: the planner
            # takes the new model itself.
            current.load_state_dict(new.state_dict())
        else:
            self.planner.set_model(new)

    # --- one cycle ------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether there is something to control with: a planner (a model came), or the policy for ``policy``."""
        return self.policy is not None if self.planner_name == POLICY_CONTROLLER else self.planner is not None

    @property
    def waiting_for_model(self) -> bool:
        """Exploration is over and nothing to control with has come: the stop is all there is to command."""
        budget_spent = bool(self.exploration_steps) and self.explored >= self.exploration_steps
        return self.explore and budget_spent and not self.ready

    def step(self, state: np.ndarray | None, problem: str = "", has_model: bool | None = None,
             now: float | None = None, deadline_s: float = float("inf")) -> ControlOutput:
        """``state``: the latest measured state, None when there is none usable; ``problem``: why (''
        if it is fine). ``has_model``: False to explore even with a planner (default: whether there
        is one). ``now``: time.monotonic() (for ``failure_tolerance``). ``deadline_s``: the control
        period; a plan that takes longer is an overrun."""
        self._planned = False
        out = self._step(state, problem, has_model, now, deadline_s)
        if not self._planned and self.planner is not None:
            # The planner's next state will not follow its last one by the action sent since (its bias estimate).
            self.planner.forget_transition()
        return out

    def _step(self, state: np.ndarray | None, problem: str, has_model: bool | None, now: float | None,
              deadline_s: float) -> ControlOutput:
        started = time.perf_counter()
        now = time.monotonic() if now is None else now
        self._swap_model()
        self._swap_policy()
        plan = None
        policy_alone = self.planner_name == POLICY_CONTROLLER
        ready = self.ready
        has_model = ready if has_model is None else has_model
        if state is not None:
            state = np.asarray(state, dtype=float)
            if self.state_dim is not None and state.shape != (self.state_dim,):
                state, problem = None, problem or f"state has shape {state.shape}, expected ({self.state_dim},)"
            elif not np.all(np.isfinite(state)):
                state, problem = None, problem or "state has non-finite values"
        if state is not None:
            self.last_state = state
            for term, _ in self._caps.values():
                speed = float(state[term.iv])
                self.fastest_seen = speed if self.fastest_seen is None else max(self.fastest_seen, speed)
        failed = bool(problem)  # the state is unusable: a failed cycle
        if self.e_stopped:
            problem = "e-stop engaged"
        elif not problem and self.needs_goal and not self.has_goal and ready:
            problem = "no goal received yet"
        if not problem and (not has_model or not ready):
            budget_left = not self.exploration_steps or self.explored < self.exploration_steps
            if not self.explore:
                problem = "no model yet"
            elif not budget_left:
                problem = "exploration budget spent; waiting for a model"
        if failed:
            self._count_failure(True, now)
        if problem:
            action = self.stop_command(state)
            return ControlOutput(action, "safe", problem, None, (time.perf_counter() - started) * 1e3)
        if not has_model or not ready:
            action, mode, reason = self.exploration(), "explore", "no model yet"
            self.explored += 1
        elif policy_alone:
            action, reason = self.policy_action(state)
            self._count_failure(action is None, now)
            if action is None:
                if self.error:
                    reason = f"error: cycles failed for over {self.failure_tolerance} s ({reason})"
                return ControlOutput(self.stop_command(state), "safe", reason, None,
                                     (time.perf_counter() - started) * 1e3)
            mode = "policy"
        else:
            action, mode, reason, plan = self._plan(state, deadline_s)
            self._count_failure(mode == "safe" or (mode.startswith("fallback") and plan is None), now)
            if mode == "safe" or (self.error and plan is None):  # no plan, nothing left of the last one, or error
                if self.error:
                    reason = f"error: cycles failed for over {self.failure_tolerance} s ({reason})"
                return ControlOutput(self.stop_command(state), "safe", reason, None,
                                     (time.perf_counter() - started) * 1e3)
        if mode == "explore":
            self._count_failure(False, now)
        if self.stopped:
            self.stop.reset()
            self.stopped = False
        action = self.limit(action)
        self.last_action = action
        return ControlOutput(action, mode, reason, plan, (time.perf_counter() - started) * 1e3)

    def _plan(self, state: np.ndarray, deadline_s: float):
        """Plan, guarded: an exception, a non-finite or out-of-bounds plan, a missing context or an overrun
        gives the policy's action for this state (mode 'fallback_policy'), else the previous plan shifted by
        one step while it lasts (mode 'fallback'), else no action (the caller stops). Each cause is counted
        in ``faults``. Returns (action, mode, reason, plan)."""
        previous = None if self.last_action is None else torch.as_tensor(self.last_action, dtype=torch.float32)
        plan, fault, reason = None, "", ""
        started = time.perf_counter()
        try:
            if self.cost is not None:
                self.cost.check_ready()
            self._planned = True
            plan = self.planner.plan(torch.as_tensor(state, dtype=torch.float32), previous_action=previous)
            if self.first_plan_ms is None:
                self.first_plan_ms = (time.perf_counter() - started) * 1e3
            actions = plan.nominal_actions.detach().cpu().numpy().astype(float).reshape(-1, len(self.low))
            if not np.all(np.isfinite(actions)) or not np.all(np.isfinite(plan.action.detach().cpu().numpy())):
                fault, reason = "non_finite_plan", "the plan has non-finite actions"
            elif np.any(actions < self.low - PLAN_TOLERANCE) or np.any(actions > self.high + PLAN_TOLERANCE):
                fault, reason = "out_of_limit_plan", "the plan leaves the action bounds"
        except RuntimeError as err:
            fault, reason = ("missing_context" if "context not set" in str(err) else "exception"), str(err)
        except Exception as err:  # a cycle never kills the loop: counted, reported, the stop or the last plan
            fault, reason = "exception", f"{type(err).__name__}: {err}"
        if not fault:
            late = time.perf_counter() - started > deadline_s
            if late:  # what the policy or the previous plan has for now
                self.faults["overrun"] += 1
                reason = f"planning overran its {deadline_s * 1e3:.0f} ms period"
                action, mode = self._fallback(state)
            self.previous_plan, self.plan_index = actions, 0
            if late and action is not None:  # plan is returned too: a valid plan, counted as an overrun, not a failure
                return action, mode, reason, plan
            return plan.action.detach().cpu().numpy().astype(float), "plan", "", plan
        self.faults[fault] += 1
        self.last_fault = f"{fault}: {reason}"
        self.planner.reset()  # its warm start may hold what went wrong
        action, mode = self._fallback(state)
        if action is None:
            return None, "safe", reason, None
        return action, mode, reason, None

    def _fallback(self, state: np.ndarray) -> tuple[np.ndarray | None, str]:
        """The policy's action for this state, else the previous plan's next action: (action, mode), or (None, '')."""
        action, _ = self.policy_action(state)
        if action is not None:
            return action, "fallback_policy"
        shifted = self._shifted_plan()
        return (shifted, "fallback") if shifted is not None else (None, "")

    def _shifted_plan(self) -> np.ndarray | None:
        """The previous valid plan's next action, while it has one."""
        if self.previous_plan is None or self.plan_index + 1 >= len(self.previous_plan):
            return None
        self.plan_index += 1
        return self.previous_plan[self.plan_index]

    def _count_failure(self, failed: bool, now: float) -> None:
        if not failed:
            self.failing_since, self.error = None, False
            return
        if self.failing_since is None:
            self.failing_since = now
        self.error = now - self.failing_since > self.failure_tolerance

    def limit(self, action: np.ndarray) -> np.ndarray:
        action = np.clip(np.asarray(action, dtype=float), self.low, self.high)
        if self.max_rate is not None and self.last_action is not None:
            action = np.clip(action, self.last_action - self.max_rate, self.last_action + self.max_rate)
        return action

    def reset(self) -> None:
        """A new episode: forget the warm start, the previous plan and the exploration state."""
        self.exploration.reset()
        self.previous_plan = None
        if self.planner is not None:
            self.planner.reset()


def _same_shapes(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
