"""The hand's cost terms: fingertip positions to their targets (HandReach's goal); a held block's orientation
about z to its goal and the block kept in the palm (HandManipulateBlockRotateZ's goal, PDDM's drop penalty)."""

from __future__ import annotations

from typing import Any

import torch

from mbrl_ros.core.angles import wrap_angle
from mbrl_ros.core.costs import (REQUIRED, SQRT_EPS, CostTerm, as_tensor, parse_choice, parse_indices, parse_number,
                                 stage_and_terminal)
from mbrl_ros.core.validation import check_tensor

__all__ = ["BlockOrientationTerm", "BlockPositionTerm", "FingertipTargetTerm", "block_yaw_error", "separated"]


class FingertipTargetTerm(CostTerm):
    """Distance of fingertip positions (3 state entries each) to targets set at run time.

    ``form: norm`` is HandReach's goal distance, the Euclidean norm of the whole
    difference vector; ``form: squared`` is its square (smoother, better for iLQR).

    Integral action (``integral_gain`` k > 0): where the hand settles off where the model predicts (the hand's
    prior: gravity, tendons, contacts; 0.4-2 cm), the plan aims at ``target = goal - c`` instead of the goal,
    ``c += k (measured - goal)`` each cycle (``prepare``, the measured fingertips), only while the fingertips
    are within ``integral_radius`` (m) of the goal (the approach from centimetres away would wind it up), and
    ``|c|`` at most ``integral_limit`` (m; a finger that cannot get there, say blocked by another, must not
    pull the rest away). A new goal clears ``c``. ``goal`` is the goal, ``target`` what the plan aims at.

    ``expected``: where the model says the plan's action holds the fingertips (a proposal's steady state, set by
    it each cycle; NaN: the target itself). ``c`` then estimates the hold error at that action,
    ``c += k (measured - expected - c)``: the same update where the plan reaches its target (``expected`` =
    ``goal - c``), but where it cannot (a finger at its joint limits), ``c`` does not wind up in directions no
    action reaches, which would only pull the other fingertips off (a disturbance observer, not an integral).

    Fingertips are bodies: ``min_separation`` s > 0 moves any two goal fingertips closer than s apart, each
    half the shortfall along the line between them, to s (``aim``, the goal the plan and the integral use; the
    closest point with that pair s apart). HandReach puts the thumb and one finger 0.3-0.7 cm apart, where their
    distal capsules (radii 0.705 and 0.918 cm around the tip sites' axes) stop the sites ~1.25-1.45 cm apart:
    aimed at the goal itself, the contact pushes the finger's passive distal joint back and the finger carries
    most of the gap (1.0 cm against the thumb's 0.2-0.4, a miss), where the gap split evenly costs gap / sqrt(2).
    A pair the hand cannot bring that close anyway (a ring-finger goal at the edge of its reach) only loses by it:
    ``keep_apart(pairs)`` (a proposal that knows where the hand can go) limits the separation to those pairs.
    """

    kind = "fingertip_target"
    defaults = {"indices": REQUIRED, "form": "norm", "stage_weight": 1.0, "terminal_weight": 1.0,
                "integral_gain": 0.0, "integral_radius": 0.02, "integral_limit": 0.02, "min_separation": 0.0}
    context = ("fingertip_target",)

    def configure(self, c: dict[str, Any]) -> None:
        indices = parse_indices("indices", c["indices"], self.state_dim, multiple_of=3)
        self.register_buffer("indices", torch.tensor(indices))
        self.register_buffer("target", torch.zeros(len(indices)))
        self.register_buffer("goal", torch.zeros(len(indices)))
        self.register_buffer("aim", torch.zeros(len(indices)))
        self.register_buffer("expected", torch.full((len(indices),), float("nan")))
        self.form = parse_choice("form", c["form"], ("norm", "squared"))
        self.stage_weight = parse_number("stage_weight", c["stage_weight"], low=0)
        self.terminal_weight = parse_number("terminal_weight", c["terminal_weight"], low=0)
        self.integral_gain = parse_number("integral_gain", c["integral_gain"], low=0)
        self.integral_radius = parse_number("integral_radius", c["integral_radius"], low=0)
        self.integral_limit = parse_number("integral_limit", c["integral_limit"], low=0)
        self.min_separation = parse_number("min_separation", c["min_separation"], low=0)
        self.apart = None  # the pairs min_separation applies to (fingertip indices); None: every pair

    def set_fingertip_target(self, target: torch.Tensor) -> None:
        target = as_tensor("fingertip_target", target, self.target)
        self.goal.copy_(check_tensor("fingertip_target", target, (self.target.shape[0],)))
        self.apart = None
        self.aim.copy_(separated(self.goal, self.min_separation))
        self.target.copy_(self.aim)  # in place: a compiled planner reads this buffer
        self.expected.fill_(float("nan"))
        self._context_set.add("fingertip_target")

    def keep_apart(self, pairs) -> None:
        """Separate only these fingertip pairs (``(i, j)``, ``FINGERTIPS`` indices) from now on, keeping the
        correction: the aim moves, the target with it."""
        self.apart = {tuple(sorted(p)) for p in pairs}
        correction = self.aim - self.target
        self.aim.copy_(separated(self.goal, self.min_separation, self.apart))
        self.target.copy_(self.aim - correction)

    def prepare(self, state: torch.Tensor) -> None:
        if not self.integral_gain or "fingertip_target" not in self._context_set:
            return
        measured = state.index_select(-1, self.indices).to(self.aim.dtype)
        error = measured - self.aim
        if not bool(torch.isfinite(error).all()) or float(torch.linalg.vector_norm(error)) >= self.integral_radius:
            return
        correction = self.aim - self.target
        reference = self.expected if bool(torch.isfinite(self.expected).all()) else self.target
        correction = correction + self.integral_gain * (measured - reference - correction)
        size = float(torch.linalg.vector_norm(correction))
        if size > self.integral_limit:
            correction = correction * (self.integral_limit / size)
        self.target.copy_(self.aim - correction)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        error = states.index_select(-1, self.indices) - self.target
        squared = (error * error).sum(-1)
        per_state = squared if self.form == "squared" else torch.sqrt(torch.clamp(squared, min=SQRT_EPS))
        return stage_and_terminal(per_state, self.stage_weight, self.terminal_weight)


def separated(points: torch.Tensor, distance: float, pairs=None) -> torch.Tensor:
    """``points`` (x, y, z each) with every pair (or those of ``pairs``, ``(i, j)`` with i < j) closer than
    ``distance`` moved apart, each half the shortfall along the line between them, in turn (a pair that coincides
    stays: no line)."""
    out = points.detach().clone().reshape(-1, 3)
    if distance > 0:
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                if pairs is not None and (i, j) not in pairs:
                    continue
                gap = out[i] - out[j]
                norm = float(torch.linalg.vector_norm(gap))
                if 0 < norm < distance:
                    shift = gap * ((distance - norm) / (2 * norm))
                    out[i], out[j] = out[i] + shift, out[j] - shift
    return out.reshape(points.shape)


class BlockGoalTerm(CostTerm):
    """A term on the block's state entries against its goal pose, the context ``block_goal``: x, y, z (m) and the
    orientation quaternion qw, qx, qy, qz (the driver's goal_block_pose)."""

    context = ("block_goal",)
    entries = 0  # how many state indices the term reads

    def configure_goal(self, c: dict[str, Any]) -> None:
        indices = parse_indices("indices", c["indices"], self.state_dim)
        if len(indices) != self.entries:
            raise ValueError(f"indices: expected {self.entries} state indices, got {len(indices)}")
        self.register_buffer("indices", torch.tensor(indices))
        self.register_buffer("goal", torch.zeros(7))
        self.stage_weight = parse_number("stage_weight", c["stage_weight"], low=0)
        self.terminal_weight = parse_number("terminal_weight", c["terminal_weight"], low=0)

    def set_block_goal(self, goal: torch.Tensor) -> None:
        goal = check_tensor("block_goal", as_tensor("block_goal", goal, self.goal), (7,))
        if float(torch.linalg.vector_norm(goal[3:])) < 1e-6:
            raise ValueError("block_goal: zero-length orientation quaternion (entries 3..6: qw, qx, qy, qz)")
        self.goal.copy_(goal)
        self._context_set.add("block_goal")


def block_yaw_error(quaternion: torch.Tensor, goal: torch.Tensor, double_cover: bool) -> torch.Tensor:
    """The rotation about z from ``goal`` to ``quaternion`` (both ``[..., 4]``: w, x, y, z), the twist angles of
    their swing-twist decompositions about z (``2 atan2(z, w)``, exact with any tilt) subtracted: wrapped to
    (-pi, pi] (a turn of 2 pi is none), or with ``double_cover`` to (-2 pi, 2 pi], as HandManipulate's success
    counts it (it tells a quaternion from its negative: the block's own quaternion must come near the goal's)."""
    twist = 2.0 * torch.atan2(quaternion[..., 3], quaternion[..., 0])
    goal_twist = 2.0 * torch.atan2(goal[..., 3], goal[..., 0])
    error = twist - goal_twist
    return 2.0 * wrap_angle(0.5 * error) if double_cover else wrap_angle(error)


class BlockOrientationTerm(BlockGoalTerm):
    """The block's orientation error about z to its goal (``block_yaw_error``; ``indices``: the state's qw, qx,
    qy, qz) and, with ``tilt_weight``, its tilt (the swing angle of the decomposition, ``2 acos(|(w, z)|)``,
    rad): HandManipulate's success needs the whole rotation within its threshold. ``form: angle``: the
    absolute angles (rad); ``squared``: their squares."""

    kind = "block_orientation"
    entries = 4
    defaults = {"indices": REQUIRED, "form": "angle", "double_cover": False, "tilt_weight": 0.0,
                "stage_weight": 1.0, "terminal_weight": 1.0}

    def configure(self, c: dict[str, Any]) -> None:
        self.configure_goal(c)
        self.form = parse_choice("form", c["form"], ("angle", "squared"))
        if not isinstance(c["double_cover"], bool):
            raise ValueError(f"double_cover: expected true or false, got {c['double_cover']!r}")
        self.double_cover = c["double_cover"]
        self.tilt_weight = parse_number("tilt_weight", c["tilt_weight"], low=0)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        quaternion = states.index_select(-1, self.indices)
        quaternion = quaternion / torch.clamp(torch.linalg.vector_norm(quaternion, dim=-1, keepdim=True), min=1e-6)
        yaw = block_yaw_error(quaternion, self.goal[3:], self.double_cover)
        per_state = yaw.abs() if self.form == "angle" else yaw * yaw
        if self.tilt_weight:
            twist_part = torch.sqrt(torch.clamp(quaternion[..., 0] ** 2 + quaternion[..., 3] ** 2, min=SQRT_EPS))
            tilt = 2.0 * torch.acos(torch.clamp(twist_part, max=1.0))
            per_state = per_state + self.tilt_weight * (tilt if self.form == "angle" else tilt * tilt)
        return stage_and_terminal(per_state, self.stage_weight, self.terminal_weight)


class BlockPositionTerm(BlockGoalTerm):
    """The block kept in the palm: its distance (m) to the goal's position (``indices``: the state's x, y, z;
    HandManipulateBlockRotateZ's goal position is where the block lay at the start), plus ``drop_cost`` for
    each state with the block lower than ``drop_height`` (m, world z): PDDM's drop penalty."""

    kind = "block_position"
    entries = 3
    defaults = {"indices": REQUIRED, "drop_height": 0.0, "drop_cost": 0.0, "stage_weight": 1.0,
                "terminal_weight": 1.0}

    def configure(self, c: dict[str, Any]) -> None:
        self.configure_goal(c)
        self.drop_height = parse_number("drop_height", c["drop_height"])
        self.drop_cost = parse_number("drop_cost", c["drop_cost"], low=0)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        position = states.index_select(-1, self.indices)
        error = position - self.goal[:3]
        per_state = torch.sqrt(torch.clamp((error * error).sum(-1), min=SQRT_EPS))
        if self.drop_cost:
            per_state = per_state + self.drop_cost * (position[..., 2] < self.drop_height).to(states.dtype)
        return stage_and_terminal(per_state, self.stage_weight, self.terminal_weight)
