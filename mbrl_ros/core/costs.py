"""Trajectory costs composed of named, weighted terms, like Nav2's MPPI critics.

A term is a small ``nn.Module`` that scores whole batched trajectories at once::

    term(states[K, H+1, nx], actions[K, H, nu]) -> cost[K]

``states[:, 0]`` is the current (measured) state, the same for every sample, and
``states[:, t+1]`` is the prediction after ``actions[:, t]``. Scoring whole
trajectories, instead of one step at a time as pytorch_mppi's ``running_cost``
does, lets a term see neighbouring steps (smoothness, progress along a path)
and lets ``torch.compile`` fuse a term over the full [K, H+1] batch.

Per-state terms sum over the predicted states ``t = 1..H`` (times ``stage_weight``)
and add ``terminal_weight`` times the last state's value; the current state is left
out because no action can change it.

``TrajectoryCost`` sums the terms with their weights, reports the per-term
breakdown, and holds the task context that changes at run time (goal, reference
path, obstacles, the previously applied action, joint targets, and whatever a
robot's own terms read). Context is set through one setter,
``cost.set_context(name, value)``, which copies into fixed-size buffers in place,
so a compiled planner keeps its graph when the goal moves or a new path arrives.

``build_cost`` reads a YAML section such as::

    cost:
      goal_pose: {weight: 1.0, form: quadratic}
      effort: {weight: 0.1}
      left_wall: {type: obstacles, weight: 1.0, margin: 0.5}

A key names a term kind, or any name when ``type`` gives the kind. The kinds are
this module's generic ``TERM_KINDS``; a robot plug-in adds its own (the car's
parking reward, the hand's fingertip targets) by passing ``kinds``. Errors name
the source, the term and the key at fault and list what is valid.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mbrl_ros.core.angles import wrap_angle
from mbrl_ros.core.validation import check_tensor

__all__ = [
    "CostTerm",
    "GoalPoseTerm",
    "PathTrackingTerm",
    "ObstaclesTerm",
    "EffortTerm",
    "SmoothnessTerm",
    "JointTargetTerm",
    "TrajectoryCost",
    "TERM_KINDS",
    "build_cost",
    "REQUIRED",
    "SQRT_EPS",
    "as_tensor",
    "as_float64",
    "parse_choice",
    "parse_index",
    "parse_indices",
    "parse_number",
    "stage_and_terminal",
    "parse_vector",
]

# Marks a config key that has no default and must be given.
REQUIRED = object()
# Added under square roots so gradients stay finite at zero distance.
SQRT_EPS = 1e-12


# --------------------------------------------------------------------------- for term authors
# Config parsing and shared arithmetic of the terms here and of robots' own terms.
def parse_number(key: str, value: Any, *, low: float | None = None, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{key}: expected a value >= {low}, got {value!r}")
    return int(value) if integer else float(value)


def parse_vector(key: str, value: Any, length: int, *, low: float | None = None) -> list[float]:
    """A scalar (broadcast) or a list of ``length`` numbers."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [parse_number(key, value, low=low)] * length
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"{key}: expected a number or a list of {length} numbers, got {value!r}")
    return [parse_number(f"{key}[{i}]", v, low=low) for i, v in enumerate(value)]


def parse_indices(key: str, value: Any, state_dim: int, *, multiple_of: int = 1) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{key}: expected a non-empty list of state indices, got {value!r}")
    out = [parse_number(f"{key}[{i}]", v, low=0, integer=True) for i, v in enumerate(value)]
    if max(out) >= state_dim:
        raise ValueError(f"{key}: index {max(out)} is out of range for a state of size {state_dim}")
    if len(out) % multiple_of:
        raise ValueError(f"{key}: expected a multiple of {multiple_of} indices, got {len(out)}")
    return out


def parse_index(key: str, value: Any, state_dim: int) -> int:
    index = parse_number(key, value, low=0, integer=True)
    if index >= state_dim:
        raise ValueError(f"{key}: index {index} is out of range for a state of size {state_dim}")
    return index


def parse_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{key}: expected one of {list(choices)}, got {value!r}")
    return value


def as_tensor(name: str, value: Any, like: torch.Tensor) -> torch.Tensor:
    """Accept tensors, numpy arrays and lists; return a tensor with ``like``'s dtype and device."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value, dtype=like.dtype)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name}: expected a tensor or a list of numbers, got {type(value).__name__}") from exc
    return value.to(dtype=like.dtype, device=like.device)


def _capacity(n: int, minimum: int = 8) -> int:
    """Buffer size for ``n`` items: the next power of two, so sizes (and compiled graphs) rarely change."""
    return max(minimum, 1 << max(0, n - 1).bit_length())


def stage_and_terminal_weights(steps: int, stage_weight: float, terminal_weight: float) -> np.ndarray:
    """Each state's factor in ``stage_and_terminal`` over ``steps`` = H+1 states, ``[H+1]`` (0 for the current)."""
    factors = np.full(steps, float(stage_weight))
    factors[0] = 0.0
    factors[-1] += terminal_weight
    return factors


def zero_derivatives(states: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
    """``[l_x, l_u, l_xx, l_uu, l_ux]`` of a term that is zero, to add a term's own into."""
    (steps, nx), nu = states.shape, actions.shape[1]
    return [np.zeros((steps, nx)), np.zeros((steps - 1, nu)), np.zeros((steps, nx, nx)),
            np.zeros((steps - 1, nu, nu)), np.zeros((steps - 1, nu, nx))]


def add_squares(lx: np.ndarray, lxx: np.ndarray, index, errors: np.ndarray, weights) -> None:
    """Add the derivatives of ``sum weights * errors**2`` over the entries ``index`` (``errors[T, len(index)]``,
    each entry's error moving one for one with it; ``weights`` broadcast to ``[T, len(index)]``)."""
    lx[:, index] += 2.0 * weights * errors
    lxx[:, index, index] += 2.0 * weights


def as_float64(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of ``tensor``, in few torch calls (each costs microseconds: numpy solvers call this
    often)."""
    if tensor.device.type == "cpu":
        return tensor.detach().numpy().astype(np.float64)
    return tensor.detach().to(torch.float64).cpu().numpy()


def stage_and_terminal(per_state: torch.Tensor, stage_weight: float, terminal_weight: float) -> torch.Tensor:
    """``per_state[K, H+1]`` -> [K]: stage sum over predicted states plus the weighted last state (torch
    tensors or numpy arrays)."""
    total = np.zeros(len(per_state)) if isinstance(per_state, np.ndarray) else per_state.new_zeros(per_state.shape[0])
    if stage_weight:
        total = total + stage_weight * per_state[:, 1:].sum(1)
    if terminal_weight:
        total = total + terminal_weight * per_state[:, -1]
    return total


# --------------------------------------------------------------------------- terms
class CostTerm(nn.Module):
    """One named cost term.

    Subclasses set ``kind`` (the YAML name), ``defaults`` (every config key they
    accept, with its default, ``REQUIRED`` where there is none), ``context`` (the
    run-time inputs they need before planning) and ``optional_context`` (those they
    can do without), each set through ``set_context(name, value)``, which calls the
    term's ``set_<name>(value)``; and they parse their config in ``configure``.
    ``config`` keeps the resolved values, so a cost can be written back to YAML.
    """

    kind: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    context: ClassVar[tuple[str, ...]] = ()
    optional_context: ClassVar[tuple[str, ...]] = ()

    def __init__(self, state_dim: int, action_dim: int, **config: Any) -> None:
        super().__init__()
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; valid keys: {sorted(self.defaults)}")
        missing = sorted(k for k, v in self.defaults.items() if v is REQUIRED and k not in config)
        if missing:
            raise ValueError(f"missing required key(s) {missing}")
        values = {k: v for k, v in self.defaults.items() if v is not REQUIRED}
        values.update(config)
        self.config: dict[str, Any] = values
        self._context_set: set[str] = set()
        self.configure(values)

    def configure(self, values: dict[str, Any]) -> None:
        raise NotImplementedError

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, state: torch.Tensor) -> None:
        """Per-cycle set-up from the current state ``[nx]``, run once before a planning step."""

    def numpy_derivatives(self, states: np.ndarray, actions: np.ndarray) -> list[np.ndarray] | None:
        """Derivatives of this term along one trajectory, ``states[H+1, nx]``, ``actions[H, nu]`` (float64):
        ``[l_x[H+1, nx], l_u[H, nu], l_xx[H+1, nx, nx], l_uu[H, nu, nu], l_ux[H, nu, nx]]``, the exact gradient
        and the Hessian's diagonal blocks (per step), as iLQR uses them; None (the default): the planner
        differentiates the term numerically. A subclass that changes what a form computes overrides this."""
        return None

    def numpy_cost(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        """``forward`` in float64 numpy (``states[K, H+1, nx]``, ``actions[K, H, nu]`` -> ``[K]``), or None (the
        default): the planner calls ``forward``. For solvers that score a few trajectories at a time (iLQR's
        line search), where torch's per-op overhead is most of the cost. A subclass that changes what a form
        computes overrides this."""
        return None

    def reads(self, name: str) -> bool:
        """Whether this term reads the run-time context ``name``."""
        return name in self.context or name in self.optional_context

    def set_context(self, name: str, value: Any) -> None:
        getattr(self, f"set_{name}")(value)

    def missing_context(self) -> list[str]:
        """Context this term reads that has not been set yet."""
        return [name for name in self.context if name not in self._context_set]


class GoalPoseTerm(CostTerm):
    """Distance of the pose (and speed) to a goal state, the context ``goal`` (a state vector [nx]).

    ``form: quadratic``: ``position_weight * |p - g|^2 + yaw_weight * wrap(yaw - g)^2
    + speed_weight * (v - g_v)^2``. A robot's subclass may add forms (``forms``,
    ``per_state``): the car's adds highway-env's parking reward.
    """

    forms: ClassVar[tuple[str, ...]] = ("quadratic",)

    kind = "goal_pose"
    defaults = {
        "form": "quadratic",
        "position_weight": 1.0,
        "yaw_weight": 1.0,
        "speed_weight": 0.1,
        "stage_weight": 1.0,
        "terminal_weight": 10.0,
        "x_index": 0,
        "y_index": 1,
        "yaw_index": 2,
        "speed_index": 3,
    }
    context = ("goal",)

    def configure(self, c: dict[str, Any]) -> None:
        self.form = parse_choice("form", c["form"], self.forms)
        self.position_weight = parse_number("position_weight", c["position_weight"], low=0)
        self.yaw_weight = parse_number("yaw_weight", c["yaw_weight"], low=0)
        self.speed_weight = parse_number("speed_weight", c["speed_weight"], low=0)
        self.stage_weight = parse_number("stage_weight", c["stage_weight"], low=0)
        self.terminal_weight = parse_number("terminal_weight", c["terminal_weight"], low=0)
        self.ix, self.iy, self.iyaw, self.iv = (
            parse_index(k, c[k], self.state_dim) for k in ("x_index", "y_index", "yaw_index", "speed_index")
        )
        self.register_buffer("goal", torch.zeros(self.state_dim))

    def set_goal(self, goal: torch.Tensor) -> None:
        goal = check_tensor("goal", as_tensor("goal", goal, self.goal), (self.state_dim,))
        self.goal.copy_(goal)
        self._context_set.add("goal")

    def per_state(self, states: torch.Tensor) -> torch.Tensor:
        """[..., nx] -> [...]: the term's value for each state."""
        x, y, yaw, v = (states[..., i] for i in (self.ix, self.iy, self.iyaw, self.iv))
        g = self.goal
        dx, dy = x - g[self.ix], y - g[self.iy]
        dyaw = wrap_angle(yaw - g[self.iyaw])
        dv = v - g[self.iv]
        return (
            self.position_weight * (dx * dx + dy * dy)
            + self.yaw_weight * dyaw * dyaw
            + self.speed_weight * dv * dv
        )

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return stage_and_terminal(self.per_state(states), self.stage_weight, self.terminal_weight)

    def _numpy_errors(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The quadratic form's errors ``[..., 4]`` (x, y, wrapped yaw, v) of ``states[..., nx]`` and their weights."""
        index = [self.ix, self.iy, self.iyaw, self.iv]
        errors = states[..., index] - as_float64(self.goal)[index]
        errors[..., 2] = wrap_angle(errors[..., 2])
        return errors, np.array([self.position_weight, self.position_weight, self.yaw_weight, self.speed_weight])

    def numpy_cost(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        if self.form != "quadratic":
            return None
        errors, weights = self._numpy_errors(states)
        return stage_and_terminal((errors * errors) @ weights, self.stage_weight, self.terminal_weight)

    def numpy_derivatives(self, states: np.ndarray, actions: np.ndarray) -> list[np.ndarray] | None:
        if self.form != "quadratic":
            return None
        out = zero_derivatives(states, actions)
        factors = stage_and_terminal_weights(len(states), self.stage_weight, self.terminal_weight)[:, None]
        errors, weights = self._numpy_errors(states)
        # One index at a time: two entries may name the same state (their derivatives add up).
        for j, index in enumerate((self.ix, self.iy, self.iyaw, self.iv)):
            add_squares(out[0], out[2], index, errors[:, j], factors[:, 0] * weights[j])
        return out


class PathTrackingTerm(CostTerm):
    """Tracking of a reference polyline ``path[P, 2]`` set with ``set_path``.

    Per state: ``distance_weight * d^2`` (d: distance to the nearest segment),
    ``heading_weight * (1 - cos(yaw - heading of that segment))`` and
    ``speed_weight * (v - target_speed)^2`` (``speed_form: set_point``) or
    ``speed_weight * max(0, v - target_speed)^2`` (``cap``: the target speed is a limit,
    and the progress part sets the pace, as a contouring racing cost does) and, where the path is the centre line
    of a track ``half_width`` wide each side, ``edge_weight * max(0, d - (half_width
    - edge_margin))^2``: nothing within the margin of the edges, steep towards and
    beyond them, so leaving the track costs more than any loss of speed (the
    distance and speed parts alone trade an exit for a few m/s); per trajectory,
    ``-progress_weight * (s(x_H) - s(x_0))`` with ``s`` the arc length of the
    nearest point on the path (the path should not cross itself near the car).
    ``closed: true``: the path is a loop (a race track's centre line): its last point
    joins its first, the window wraps round the join and progress counts across it
    (an open path ends there: a car crossing the start line would see its
    predictions leave the path and brake for it).

    All K*(H+1) points are measured against all segments in one fused batched
    computation, the term that dominates a path-following planner's cost. Two
    knobs bound that work, as Nav2 does: ``window_segments > 0`` keeps only that
    many segments, starting a quarter window behind the one nearest the current
    state (chosen once per cycle in ``prepare``, like Nav2's path pruning), and
    ``time_stride > 1`` scores every that many-th state (scaled to keep the sum's
    size; the last state is always scored for the terminal and progress parts).
    The path is padded to a power-of-two capacity with zero-length segments at
    its end point, which changes no distance, so a new path of similar length
    keeps the same buffer shapes (and compiled graph).
    """

    kind = "path_tracking"
    speed_forms: ClassVar[tuple[str, ...]] = ("set_point", "cap")
    defaults = {
        "distance_weight": 1.0,
        "heading_weight": 0.0,
        "progress_weight": 0.0,
        "speed_weight": 0.0,
        "target_speed": 0.0,
        "speed_form": "set_point",  # set_point | cap
        "closed": False,         # the path is a loop
        "half_width": 0.0,       # m each side of the path; 0: no edges
        "edge_margin": 0.0,      # m inside the edges where the edge part starts
        "edge_weight": 0.0,
        "stage_weight": 1.0,
        "terminal_weight": 0.0,
        "window_segments": 0,
        "time_stride": 1,
        "x_index": 0,
        "y_index": 1,
        "yaw_index": 2,
        "speed_index": 3,
    }
    context = ("path",)

    def configure(self, c: dict[str, Any]) -> None:
        self.distance_weight = parse_number("distance_weight", c["distance_weight"], low=0)
        self.heading_weight = parse_number("heading_weight", c["heading_weight"], low=0)
        self.progress_weight = parse_number("progress_weight", c["progress_weight"], low=0)
        self.speed_weight = parse_number("speed_weight", c["speed_weight"], low=0)
        # A buffer, not a float: a compiled planning step reads it as an input, so a new target speed (a race's
        # cap) changes the plan without a recompile, and the compile cache's graph does not depend on it.
        speed = parse_number("target_speed", c["target_speed"])
        old = getattr(self, "_target_speed", None)
        self.register_buffer("_target_speed", torch.tensor(speed) if old is None else old.new_tensor(speed),
                             persistent=False)
        self.speed_form = parse_choice("speed_form", c["speed_form"], self.speed_forms)
        if not isinstance(c["closed"], bool):
            raise ValueError(f"closed: expected true or false, got {c['closed']!r}")
        self.closed = c["closed"]
        self.half_width = parse_number("half_width", c["half_width"], low=0)
        self.edge_margin = parse_number("edge_margin", c["edge_margin"], low=0)
        self.edge_weight = parse_number("edge_weight", c["edge_weight"], low=0)
        if self.edge_weight and not self.edge_margin < self.half_width:
            raise ValueError(f"edge_weight > 0 needs 0 <= edge_margin < half_width, got edge_margin "
                             f"{self.edge_margin} and half_width {self.half_width}")
        self.stage_weight = parse_number("stage_weight", c["stage_weight"], low=0)
        self.terminal_weight = parse_number("terminal_weight", c["terminal_weight"], low=0)
        self.window_segments = parse_number("window_segments", c["window_segments"], low=0, integer=True)
        self.time_stride = parse_number("time_stride", c["time_stride"], low=1, integer=True)
        self.ix, self.iy, self.iyaw, self.iv = (
            parse_index(k, c[k], self.state_dim) for k in ("x_index", "y_index", "yaw_index", "speed_index")
        )
        self._allocate(_capacity(self.window_segments or 1))

    @property
    def target_speed(self) -> float:
        return float(self._target_speed)

    @target_speed.setter
    def target_speed(self, value: float) -> None:
        """Set in place: a compiled planner keeps its graph."""
        self._target_speed.fill_(parse_number("target_speed", value))
        self.config["target_speed"] = float(value)

    def _allocate(self, capacity: int) -> None:
        # Segment table: start (2), direction (2), 1/|d|^2, unit heading (2), arc length at start, length.
        old = getattr(self, "segments", None)
        table = torch.zeros(capacity, 9) if old is None else old.new_zeros(capacity, 9)
        self.register_buffer("segments", table)
        # The segments scored: all of them, or the window chosen in prepare().
        window = self.window_segments if 0 < self.window_segments < capacity else capacity
        self.register_buffer("active", table.new_zeros(window, 9))
        self.num_segments = 0
        self.path_length = 0.0

    def set_path(self, path: torch.Tensor) -> None:
        path = check_tensor("path", as_tensor("path", path, self.segments), (None, 2))
        if path.shape[0] < 2:
            raise ValueError(f"path: expected at least 2 points, got {path.shape[0]}")
        if self.closed and bool((path[-1] != path[0]).any()):
            path = torch.cat((path, path[:1]))
        start, end = path[:-1], path[1:]
        direction = end - start
        length = direction.norm(dim=-1)
        heading = direction / length.clamp(min=1e-9)[:, None]
        arc = torch.cat((length.new_zeros(1), length.cumsum(0)[:-1]))
        inv_len2 = torch.where(length > 0, 1.0 / (length * length).clamp(min=1e-18), torch.zeros_like(length))
        table = torch.cat((start, direction, inv_len2[:, None], heading, arc[:, None], length[:, None]), dim=1)
        count = table.shape[0]
        capacity = max(self.segments.shape[0], _capacity(count))
        if capacity != self.segments.shape[0]:
            self._allocate(capacity)
        # Padding: zero-length segments at the end point, heading of the last segment.
        pad = table[-1:].clone()
        pad[:, 0:2] = path[-1]
        pad[:, 2:5] = 0.0
        pad[:, 7] = arc[-1] + length[-1]
        pad[:, 8] = 0.0
        self.segments[:count] = table
        self.segments[count:] = pad
        self.num_segments = count
        self.path_length = float(arc[-1] + length[-1])
        self._select_window(path[0])
        self._context_set.add("path")

    def prepare(self, state: torch.Tensor) -> None:
        if "path" in self._context_set and (self.closed or self.active.shape[0] < self.segments.shape[0]):
            self._select_window(state[[self.ix, self.iy]])

    def _select_window(self, position: torch.Tensor) -> None:
        window = self.active.shape[0]
        if self.closed:
            self._select_loop_window(position, window)
            return
        if window == self.segments.shape[0]:
            self.active.copy_(self.segments)
            return
        d2, _ = _segment_distances2(position[0], position[1], self.segments)
        nearest = int(d2.argmin())
        first = min(max(nearest - window // 4, 0), self.segments.shape[0] - window)
        self.active.copy_(self.segments[first : first + window])

    def _select_loop_window(self, position: torch.Tensor, window: int) -> None:
        """A closed path's window: the segments from a quarter window behind the nearest one, taken round the
        loop, their arc lengths continued across the join (so progress there is the distance gained, not minus
        a lap); rows beyond one lap are zero-length segments at the last one's end."""
        count = self.num_segments
        d2, _ = _segment_distances2(position[0], position[1], self.segments[:count])
        rows = min(window, count)
        along = int(d2.argmin()) - rows // 4 + torch.arange(rows, device=self.segments.device)
        table = self.segments[along % count].clone()
        table[:, 7] += torch.div(along, count, rounding_mode="floor").to(table.dtype) * self.path_length
        self.active[:rows] = table
        if rows < window:
            pad = table[-1:].clone()
            pad[:, 0:2] = table[-1, 0:2] + table[-1, 2:4]
            pad[:, 2:5] = 0.0
            pad[:, 7] = table[-1, 7] + table[-1, 8]
            pad[:, 8] = 0.0
            self.active[rows:] = pad

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        segments = self.active
        stride = self.time_stride
        total = states.new_zeros(states.shape[0])
        if self.stage_weight:
            total = total + self.stage_weight * stride * self._per_state(states[:, stride::stride], segments).sum(1)
        if self.terminal_weight:
            total = total + self.terminal_weight * self._per_state(states[:, -1:], segments)[:, 0]
        if self.progress_weight:
            total = total - self.progress_weight * (
                self._arc_length(states[:, -1], segments) - self._arc_length(states[:, 0], segments)
            )
        return total

    def _per_state(self, states: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        x, y = states[..., self.ix], states[..., self.iy]
        per_state = torch.zeros_like(x)
        if self.heading_weight > 0:
            d2, nearest, _ = _point_segment_distance2(x, y, segments, with_index=True)
            yaw = states[..., self.iyaw]
            alignment = torch.cos(yaw) * segments[nearest, 5] + torch.sin(yaw) * segments[nearest, 6]
            per_state = per_state + self.distance_weight * d2 + self.heading_weight * (1.0 - alignment)
        elif self.distance_weight or self.edge_weight:
            d2, _, _ = _point_segment_distance2(x, y, segments)
            per_state = per_state + self.distance_weight * d2
        if self.edge_weight:
            beyond = torch.relu(torch.sqrt(d2 + SQRT_EPS) - (self.half_width - self.edge_margin))
            per_state = per_state + self.edge_weight * beyond * beyond
        if self.speed_weight:
            dv = states[..., self.iv] - self._target_speed
            if self.speed_form == "cap":
                dv = torch.relu(dv)
            per_state = per_state + self.speed_weight * dv * dv
        return per_state

    def _arc_length(self, points: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        _, nearest, t = _point_segment_distance2(points[:, self.ix], points[:, self.iy], segments, with_index=True)
        return segments[nearest, 7] + t * segments[nearest, 8]


def _point_segment_distance2(
    x: torch.Tensor, y: torch.Tensor, segments: torch.Tensor, with_index: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Squared distance of points ``(x, y)[...]`` to their nearest segment, in one batched pass.

    With ``with_index`` also returns the nearest segment and the projection's
    fraction along it; the distance is then recomputed to that one segment, so it
    stays differentiable.
    """
    if not with_index:
        d2, _ = _segment_distances2(x, y, segments)
        return d2.min(dim=-1).values, None, None
    nearest = _nearest_segment(x, y, segments)
    ax, ay, dx, dy, inv_len2 = (segments[nearest, i] for i in range(5))
    wx, wy = x - ax, y - ay
    t = torch.clamp((wx * dx + wy * dy) * inv_len2, 0.0, 1.0)
    ex, ey = wx - t * dx, wy - t * dy
    return ex * ex + ey * ey, nearest, t


def _nearest_segment(x: torch.Tensor, y: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Index of the nearest segment for each point, as one plain min-reduction.

    A float >= 0 orders like its bits read as an int32, so writing the segment
    index into the lowest mantissa bits and taking the integer minimum finds the
    nearest segment (ties within 2**-17 relative broken by index). Compilers
    vectorise this min; an argmin with indices is scalar code on a CPU, about
    3x slower here.
    """
    with torch.no_grad():
        d2, _ = _segment_distances2(x, y, segments)
        count = segments.shape[0]
        bits = max(1, (count - 1).bit_length())
        if bits > 16 or d2.dtype != torch.float32:
            return d2.argmin(dim=-1)
        low = (1 << bits) - 1
        index = torch.arange(count, dtype=torch.int32, device=d2.device)
        keys = (d2.contiguous().view(torch.int32) & ~low) | index
        return (keys.min(dim=-1).values & low).long()


def _segment_distances2(x: torch.Tensor, y: torch.Tensor, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances ``[..., S]`` of points to every segment, and the projections' fractions."""
    ax, ay, dx, dy, inv_len2 = (segments[:, i] for i in range(5))
    wx = x.unsqueeze(-1) - ax
    wy = y.unsqueeze(-1) - ay
    t = torch.clamp((wx * dx + wy * dy) * inv_len2, 0.0, 1.0)
    ex = wx - t * dx
    ey = wy - t * dy
    return ex * ex + ey * ey, t


class ObstaclesTerm(CostTerm):
    """Walls and obstacles: circles, axis-aligned rectangles and a boundary box.

    The robot is a disc of ``robot_radius`` at (x, y). Clearance is the signed
    distance to the nearest obstacle (negative inside). Per predicted state the
    soft penalty is ``relu(margin - clearance)^2``; a trajectory that collides at
    any step also pays ``collision_cost`` once (no gradient: iLQR sees only the
    soft part). Obstacles are set at run time with ``set_obstacles(circles[M, 3]
    as (x, y, r), rectangles[R, 4] as (xmin, ymin, xmax, ymax), boundary[4])``;
    rectangles and circles from config are the initial ones. The boundary is
    the allowed region (a parking lot's walls): leaving it is a collision.
    """

    kind = "obstacles"
    defaults = {
        "margin": 1.0,
        "collision_cost": 1000.0,
        "robot_radius": 0.0,
        "circles": [],
        "rectangles": [],
        "boundary": None,
        "x_index": 0,
        "y_index": 1,
    }
    optional_context = ("obstacles",)  # an empty world is valid

    def configure(self, c: dict[str, Any]) -> None:
        self.margin = parse_number("margin", c["margin"], low=0)
        self.collision_cost = parse_number("collision_cost", c["collision_cost"], low=0)
        self.robot_radius = parse_number("robot_radius", c["robot_radius"], low=0)
        self.ix = parse_index("x_index", c["x_index"], self.state_dim)
        self.iy = parse_index("y_index", c["y_index"], self.state_dim)
        circles = self._rows("circles", c["circles"], 3)
        rectangles = self._rows("rectangles", c["rectangles"], 4)
        boundary = None if c["boundary"] is None else parse_vector("boundary", c["boundary"], 4)
        self.register_buffer("circles", torch.zeros(_capacity(len(circles)), 3))
        self.register_buffer("circle_active", torch.zeros(self.circles.shape[0], dtype=torch.bool))
        self.register_buffer("rectangles", torch.zeros(_capacity(len(rectangles)), 4))
        self.register_buffer("rectangle_active", torch.zeros(self.rectangles.shape[0], dtype=torch.bool))
        self.register_buffer("boundary", torch.tensor([-1e9, -1e9, 1e9, 1e9]))
        self.set_obstacles(
            circles=torch.tensor(circles).reshape(-1, 3),
            rectangles=torch.tensor(rectangles).reshape(-1, 4),
            boundary=None if boundary is None else torch.tensor(boundary),
        )

    @staticmethod
    def _rows(key: str, value: Any, width: int) -> list[list[float]]:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list of [{width} numbers] rows, got {value!r}")
        return [parse_vector(f"{key}[{i}]", row, width) for i, row in enumerate(value)]

    def set_context(self, name: str, value: Any) -> None:
        """``obstacles``: a mapping with any of ``circles``, ``rectangles``, ``boundary``."""
        if not isinstance(value, Mapping):
            raise ValueError(f"obstacles: expected a mapping of circles, rectangles, boundary, got {value!r}")
        self.set_obstacles(**value)

    def set_obstacles(
        self,
        circles: torch.Tensor | None = None,
        rectangles: torch.Tensor | None = None,
        boundary: torch.Tensor | None = None,
    ) -> None:
        """Replace the given kinds of obstacles; kinds left as None stay as they are."""
        if circles is not None:
            circles = check_tensor("circles", as_tensor("circles", circles, self.circles), (None, 3))
            if bool((circles[:, 2] < 0).any()):
                raise ValueError("circles: radius (column 2) must be >= 0")
            self._fill("circles", "circle_active", circles)
        if rectangles is not None:
            rectangles = check_tensor("rectangles", as_tensor("rectangles", rectangles, self.rectangles), (None, 4))
            if bool((rectangles[:, 2:] < rectangles[:, :2]).any()):
                raise ValueError("rectangles: expected rows (xmin, ymin, xmax, ymax) with max >= min")
            self._fill("rectangles", "rectangle_active", rectangles)
        if boundary is not None:
            boundary = check_tensor("boundary", as_tensor("boundary", boundary, self.boundary), (4,))
            if bool((boundary[2:] <= boundary[:2]).any()):
                raise ValueError("boundary: expected (xmin, ymin, xmax, ymax) with max > min")
            self.boundary.copy_(boundary)

    def _fill(self, name: str, mask_name: str, rows: torch.Tensor) -> None:
        table = getattr(self, name)
        if rows.shape[0] > table.shape[0]:
            self.register_buffer(name, table.new_zeros(_capacity(rows.shape[0]), table.shape[1]))
            self.register_buffer(mask_name, torch.zeros(_capacity(rows.shape[0]), dtype=torch.bool, device=table.device))
            table = getattr(self, name)
        table.zero_()
        table[: rows.shape[0]] = rows
        mask = getattr(self, mask_name)
        mask.zero_()
        mask[: rows.shape[0]] = True

    def clearance(self, states: torch.Tensor) -> torch.Tensor:
        """[..., nx] -> [...]: signed distance from the robot's disc to the nearest obstacle."""
        x, y = states[..., self.ix], states[..., self.iy]
        far = torch.finfo(x.dtype).max / 4
        # Boundary: distance to the nearest wall of the allowed box, negative outside.
        b = self.boundary
        nearest = torch.minimum(torch.minimum(x - b[0], b[2] - x), torch.minimum(y - b[1], b[3] - y))
        # Circles.
        cx, cy, cr = self.circles[:, 0], self.circles[:, 1], self.circles[:, 2]
        dx, dy = x.unsqueeze(-1) - cx, y.unsqueeze(-1) - cy
        to_circle = torch.sqrt(torch.clamp(dx * dx + dy * dy, min=SQRT_EPS)) - cr
        to_circle = torch.where(self.circle_active, to_circle, far)
        nearest = torch.minimum(nearest, to_circle.min(-1).values)
        # Rectangles: exact signed distance to an axis-aligned box.
        r = self.rectangles
        qx = torch.maximum(r[:, 0] - x.unsqueeze(-1), x.unsqueeze(-1) - r[:, 2])
        qy = torch.maximum(r[:, 1] - y.unsqueeze(-1), y.unsqueeze(-1) - r[:, 3])
        ox, oy = torch.clamp(qx, min=0.0), torch.clamp(qy, min=0.0)
        outside2 = ox * ox + oy * oy
        outside = torch.where(outside2 > 0, torch.sqrt(torch.clamp(outside2, min=SQRT_EPS)), torch.zeros_like(outside2))
        to_rectangle = outside + torch.clamp(torch.maximum(qx, qy), max=0.0)
        to_rectangle = torch.where(self.rectangle_active, to_rectangle, far)
        nearest = torch.minimum(nearest, to_rectangle.min(-1).values)
        return nearest - self.robot_radius

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        clearance = self.clearance(states[:, 1:])
        soft = torch.clamp(self.margin - clearance, min=0.0)
        collided = (clearance < 0).any(dim=1).to(states.dtype)
        return (soft * soft).sum(1) + self.collision_cost * collided


class EffortTerm(CostTerm):
    """Quadratic action cost ``sum_t sum_j weights_j (u_tj - reference_j)^2``."""

    kind = "effort"
    defaults = {"weights": 1.0, "reference": 0.0}

    def configure(self, c: dict[str, Any]) -> None:
        self.register_buffer("weights", torch.tensor(parse_vector("weights", c["weights"], self.action_dim, low=0)))
        self.register_buffer("reference", torch.tensor(parse_vector("reference", c["reference"], self.action_dim)))

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        du = actions - self.reference
        return (du * du * self.weights).sum((1, 2))

    def numpy_cost(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        du = actions - as_float64(self.reference)
        return (du * du * as_float64(self.weights)).sum((1, 2))

    def numpy_derivatives(self, states: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
        out = zero_derivatives(states, actions)
        every = np.arange(actions.shape[1])
        add_squares(out[1], out[3], every, actions - as_float64(self.reference), as_float64(self.weights))
        return out


class SmoothnessTerm(CostTerm):
    """Squared action differences, including the first action against the previously applied one.

    The previous action comes from ``set_previous_action`` (planners call it each
    cycle); before one is known (``None``) the first difference is left out.
    """

    kind = "smoothness"
    defaults = {"weights": 1.0, "include_previous": True}
    optional_context = ("previous_action",)  # none before the first action

    def configure(self, c: dict[str, Any]) -> None:
        self.register_buffer("weights", torch.tensor(parse_vector("weights", c["weights"], self.action_dim, low=0)))
        if not isinstance(c["include_previous"], bool):
            raise ValueError(f"include_previous: expected true or false, got {c['include_previous']!r}")
        self.include_previous = c["include_previous"]
        self.register_buffer("previous_action", torch.zeros(self.action_dim))
        self.register_buffer("has_previous", torch.zeros(()))

    def set_previous_action(self, action: torch.Tensor | None) -> None:
        if action is None:
            self.has_previous.zero_()
            return
        action = check_tensor(
            "previous_action", as_tensor("previous_action", action, self.previous_action), (self.action_dim,)
        )
        self.previous_action.copy_(action)
        self.has_previous.fill_(1.0 if self.include_previous else 0.0)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        diff = actions[:, 1:] - actions[:, :-1]
        total = (diff * diff * self.weights).sum((1, 2))
        first = actions[:, 0] - self.previous_action
        return total + self.has_previous * (first * first * self.weights).sum(1)

    def numpy_cost(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        weights = as_float64(self.weights)
        diff = actions[:, 1:] - actions[:, :-1]
        first = actions[:, 0] - as_float64(self.previous_action)
        return (diff * diff * weights).sum((1, 2)) + float(self.has_previous) * (first * first * weights).sum(1)

    def numpy_derivatives(self, states: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
        """The coupling blocks of ``u[t]`` with ``u[t+1]`` are left out (iLQR's per-step blocks); the
        gradient keeps them."""
        out = zero_derivatives(states, actions)
        weights, lu, luu = as_float64(self.weights), out[1], out[3]
        diff = 2.0 * weights * (actions[1:] - actions[:-1])
        lu[1:] += diff
        lu[:-1] -= diff
        counts = np.zeros((len(actions), 1))  # how many squared differences each action is in
        counts[1:] += 1.0
        counts[:-1] += 1.0
        has_previous = float(self.has_previous)
        lu[0] += has_previous * 2.0 * weights * (actions[0] - as_float64(self.previous_action))
        counts[0] += has_previous
        every = np.arange(actions.shape[1])
        luu[:, every, every] += 2.0 * weights * counts
        return out


class JointTargetTerm(CostTerm):
    """Weighted squared error of chosen state entries (hand joints) to a target set at run time."""

    kind = "joint_target"
    defaults = {"indices": REQUIRED, "weights": 1.0, "stage_weight": 1.0, "terminal_weight": 1.0}
    context = ("joint_target",)

    def configure(self, c: dict[str, Any]) -> None:
        indices = parse_indices("indices", c["indices"], self.state_dim)
        self.register_buffer("indices", torch.tensor(indices))
        self.register_buffer("weights", torch.tensor(parse_vector("weights", c["weights"], len(indices), low=0)))
        self.register_buffer("target", torch.zeros(len(indices)))
        self.stage_weight = parse_number("stage_weight", c["stage_weight"], low=0)
        self.terminal_weight = parse_number("terminal_weight", c["terminal_weight"], low=0)

    def set_joint_target(self, target: torch.Tensor) -> None:
        target = as_tensor("joint_target", target, self.target)
        self.target.copy_(check_tensor("joint_target", target, (self.target.shape[0],)))
        self._context_set.add("joint_target")

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        error = states.index_select(-1, self.indices) - self.target
        return stage_and_terminal((error * error * self.weights).sum(-1), self.stage_weight, self.terminal_weight)

    def numpy_cost(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        error = states[:, :, self.indices.tolist()] - as_float64(self.target)
        return stage_and_terminal((error * error * as_float64(self.weights)).sum(-1), self.stage_weight,
                                  self.terminal_weight)

    def numpy_derivatives(self, states: np.ndarray, actions: np.ndarray) -> list[np.ndarray]:
        out = zero_derivatives(states, actions)
        factors = stage_and_terminal_weights(len(states), self.stage_weight, self.terminal_weight)[:, None]
        indices = self.indices.tolist()
        for j, index in enumerate(indices):  # one at a time: an index may repeat
            add_squares(out[0], out[2], index, states[:, index] - float(self.target[j]),
                        factors[:, 0] * float(self.weights[j]))
        return out


TERM_KINDS: dict[str, type[CostTerm]] = {
    cls.kind: cls
    for cls in (
        GoalPoseTerm,
        PathTrackingTerm,
        ObstaclesTerm,
        EffortTerm,
        SmoothnessTerm,
        JointTargetTerm,
    )
}


# --------------------------------------------------------------------------- the sum
class TrajectoryCost(nn.Module):
    """A weighted sum of named terms: ``cost(states[K, H+1, nx], actions[K, H, nu]) -> [K]``.

    Weights live in a buffer, so ``set_weight`` (like the context setters) does
    not change a compiled planner's graph.
    """

    def __init__(self, terms: dict[str, CostTerm], weights: dict[str, float], state_dim: int, action_dim: int,
                 kinds: Mapping[str, type[CostTerm]] | None = None) -> None:
        """``kinds``: the term kinds the cost was built from (default: the core's); ``contexts`` are the
        run-time context names any of them reads, whether or not a term of this cost does."""
        super().__init__()
        if not terms:
            raise ValueError("a cost needs at least one term")
        if set(terms) != set(weights):
            raise ValueError(f"terms {sorted(terms)} and weights {sorted(weights)} name different terms")
        for name, term in terms.items():
            if term.state_dim != state_dim or term.action_dim != action_dim:
                raise ValueError(f"{name}: built for state/action sizes {term.state_dim}/{term.action_dim}, "
                                 f"cost is for {state_dim}/{action_dim}")
        self.state_dim = int(state_dim)
        self.action_dim = int(action_dim)
        self.terms = nn.ModuleDict(terms)
        self.names = list(terms)
        kinds = TERM_KINDS if kinds is None else kinds
        self.contexts = frozenset(c for cls in (*kinds.values(), *map(type, terms.values()))
                                  for c in (*cls.context, *cls.optional_context))
        self.register_buffer("weights", torch.tensor([float(weights[n]) for n in self.names]))

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        total = states.new_zeros(states.shape[0])
        for i, term in enumerate(self.terms.values()):
            total = total + self.weights[i] * term(states, actions)
        return total

    def numpy_derivatives(self, states: np.ndarray, actions: np.ndarray) -> list[np.ndarray] | None:
        """The weighted sum of the terms' ``CostTerm.numpy_derivatives``, or None if a term has none."""
        parts = []
        for term in self.terms.values():
            part = term.numpy_derivatives(states, actions)
            if part is None:
                return None
            parts.append(part)
        weights = self.weights.tolist()
        return [sum(w * part[i] for w, part in zip(weights, parts)) for i in range(5)]

    def numpy_cost(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        """``forward`` in float64 numpy, the weighted sum of the terms' ``CostTerm.numpy_cost``, or None if a
        term has none."""
        total = 0.0
        for weight, term in zip(self.weights.tolist(), self.terms.values()):
            part = term.numpy_cost(states, actions)
            if part is None:
                return None
            total = total + weight * part
        return total

    def breakdown(self, states: torch.Tensor, actions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted cost of each term, ``{name: [K]}``; they sum to ``forward``."""
        return {n: self.weights[i] * t(states, actions) for i, (n, t) in enumerate(self.terms.items())}

    def set_weight(self, name: str, weight: float) -> None:
        if name not in self.names:
            raise ValueError(f"unknown cost term {name!r}; terms: {self.names}")
        self.weights[self.names.index(name)] = parse_number(f"{name}: weight", weight, low=0)

    def weight(self, name: str) -> float:
        return float(self.weights[self.names.index(name)])

    # Run-time context ------------------------------------------------------
    def set_context(self, name: str, value: Any) -> int:
        """Set the run-time context ``name`` of every term that reads it; returns how many do.

        The generic contexts: ``goal`` (a state [nx]), ``path`` (a polyline [P, 2]),
        ``obstacles`` (a mapping of ``circles``, ``rectangles``, ``boundary``),
        ``previous_action`` ([nu] or None), ``joint_target``; a robot's terms add their own.
        Values are checked by the terms (ValueError naming the context).
        """
        users = [term for term in self.terms.values() if term.reads(name)]
        for term in users:
            term.set_context(name, value)
        return len(users)

    def prepare(self, state: torch.Tensor) -> None:
        """Per-cycle set-up from the current state ``[nx]`` (say, the path window); planners call it."""
        for term in self.terms.values():
            term.prepare(state)

    def check_ready(self) -> None:
        """Raise if a term still lacks run-time context (say, no goal was set)."""
        missing = [f"{n}: {c} (set_context('{c}', ...))" for n, t in self.terms.items() for c in t.missing_context()]
        if missing:
            raise RuntimeError(f"cost context not set: {'; '.join(missing)}")

    def to_config(self) -> dict[str, dict[str, Any]]:
        """The YAML section this cost was built from, with every default filled in."""
        section = {}
        for name, term in self.terms.items():
            entry: dict[str, Any] = {"weight": self.weight(name)}
            if name != term.kind:
                entry["type"] = term.kind
            entry.update(term.config)
            section[name] = entry
        return section


def build_cost(
    section: dict[str, Any], state_dim: int, action_dim: int, source: str = "config: cost",
    kinds: Mapping[str, type[CostTerm]] = TERM_KINDS,
) -> TrajectoryCost:
    """Build a ``TrajectoryCost`` from a YAML section ``{name: {weight: w, key: value, ...}}``.

    ``type`` picks the term kind when the name is not itself a kind, so a cost can
    hold two terms of one kind. ``weight`` defaults to 1.0. ``kinds``: the term kinds
    allowed (a robot's ``Robot.term_kinds()`` adds its own to the generic ones).
    """
    if not isinstance(section, dict) or not section:
        raise ValueError(f"{source}: expected a mapping of term names to settings, got {section!r}")
    terms: dict[str, CostTerm] = {}
    weights: dict[str, float] = {}
    for name, settings in section.items():
        settings = {} if settings is None else settings
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{source}: term name {name!r} must be an identifier")
        if not isinstance(settings, dict):
            raise ValueError(f"{source}: {name}: expected a mapping of settings, got {settings!r}")
        settings = dict(settings)
        kind = settings.pop("type", name)
        if kind not in kinds:
            what = f"unknown term type {kind!r}" if "type" in section[name] else f"unknown term {name!r}"
            raise ValueError(f"{source}: {what}; valid terms: {sorted(kinds)} (or any name with 'type:')")
        term_cls = kinds[kind]
        unknown = sorted(set(settings) - set(term_cls.defaults) - {"weight"})
        if unknown:
            valid = sorted([*term_cls.defaults, "weight", "type"])
            raise ValueError(f"{source}: {name}: unknown key(s) {unknown}; valid keys: {valid}")
        try:
            weights[name] = parse_number("weight", settings.pop("weight", 1.0), low=0)
        except ValueError as exc:
            raise ValueError(f"{source}: {name}: {exc}") from None
        try:
            terms[name] = term_cls(state_dim, action_dim, **settings)
        except ValueError as exc:
            raise ValueError(f"{source}: {name}: {exc}") from None
    return TrajectoryCost(terms, weights, state_dim, action_dim, kinds)
