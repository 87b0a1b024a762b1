"""Cost terms on hand-computed examples, the parking reward, YAML building and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from mbrl_ros.core.costs import (
    TERM_KINDS,
    EffortTerm,
    GoalPoseTerm,
    JointTargetTerm,
    ObstaclesTerm,
    PathTrackingTerm,
    SmoothnessTerm,
    TrajectoryCost,
    build_cost,
)
from mbrl_ros.robots.hand.costs import FingertipTargetTerm

NX, NU = 5, 2


def trajectory(*states, actions=None):
    """One trajectory [1, H+1, nx] from state rows, and zero actions [1, H, nu] unless given."""
    s = torch.tensor([list(x) for x in states], dtype=torch.float32)[None]
    a = torch.zeros(1, s.shape[1] - 1, NU) if actions is None else torch.tensor(actions, dtype=torch.float32)[None]
    return s, a


# --------------------------------------------------------------------------- goal pose
def test_goal_pose_quadratic_wraps_yaw_and_weights_stage_and_terminal():
    term = GoalPoseTerm(NX, NU, position_weight=2.0, yaw_weight=3.0, speed_weight=0.5,
                        stage_weight=1.0, terminal_weight=10.0)
    term.set_goal(torch.tensor([1.0, 2.0, -3.1, 0.0, 0.0]))
    states, actions = trajectory([9, 9, 9, 9, 9], [2, 4, 0, 1, 0], [1, 2, 3.1, 2, 0])
    l1 = 2 * (1 + 4) + 3 * 3.1**2 + 0.5 * 1
    dyaw = 6.2 - 2 * math.pi  # 3.1 - (-3.1), wrapped
    l2 = 3 * dyaw**2 + 0.5 * 4
    expected = (l1 + l2) + 10 * l2  # the current state (first row) never counts
    assert term(states, actions).item() == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- path tracking
def test_path_distance_to_segments_heading_speed_and_progress():
    term = PathTrackingTerm(NX, NU, distance_weight=1.0, stage_weight=1.0)
    term.set_path(torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]))
    # Points: beside the first segment, before its start, beside the second segment.
    states, actions = trajectory([0, 0, 0, 0, 0], [5, 2, 0, 0, 0], [-3, 4, 0, 0, 0], [13, 5, 0, 0, 0])
    assert term(states, actions).item() == pytest.approx(4 + 25 + 9)

    heading = PathTrackingTerm(NX, NU, distance_weight=0.0, heading_weight=2.0, speed_weight=0.5, target_speed=3.0)
    heading.set_path(torch.tensor([[0.0, 0.0], [10.0, 0.0]]))
    states, actions = trajectory([0, 0, 0, 0, 0], [5, 1, math.pi / 2, 1, 0], [6, 1, 0, 3, 0])
    assert heading(states, actions).item() == pytest.approx(2 * 1 + 0.5 * 4 + 0 + 0, abs=1e-5)

    progress = PathTrackingTerm(NX, NU, distance_weight=0.0, progress_weight=0.5)
    progress.set_path(torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]))
    states, actions = trajectory([1, 0, 0, 0, 0], [5, 1, 0, 0, 0], [11, 4, 0, 0, 0])
    assert progress(states, actions).item() == pytest.approx(-0.5 * (14 - 1), abs=1e-5)


def test_path_padding_and_window_do_not_change_distances():
    torch.manual_seed(0)
    s = torch.linspace(0, 30, 31)
    path = torch.stack((s, 3 * torch.sin(s / 5)), 1)
    states = torch.cat((torch.zeros(64, 1, NX), torch.randn(64, 8, NX) * 2), 1)
    states[..., 0] += torch.linspace(0, 6, 9)  # trajectories stay near the path's start
    actions = torch.zeros(64, 8, NU)

    full = PathTrackingTerm(NX, NU)
    full.set_path(path)
    capacity = full.segments.shape[0]
    assert capacity >= 30
    # Brute force: distance to every segment, separately, in float64.
    a, b = path[:-1].double(), path[1:].double()
    p = states[..., :2].double().reshape(-1, 1, 2)
    t = (((p - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1)).clamp(0, 1)
    d2 = ((p - (a + t[..., None] * (b - a))) ** 2).sum(-1).min(-1).values.reshape(64, 9)
    assert torch.allclose(full(states, actions).double(), d2[:, 1:].sum(1), rtol=1e-4)

    # A shorter path reuses the same buffer (and compiled graph).
    full.set_path(path[:20])
    assert full.segments.shape[0] == capacity

    # A window of segments around the current position, chosen once per cycle by prepare().
    windowed = PathTrackingTerm(NX, NU, window_segments=16)
    windowed.set_path(path)
    windowed.prepare(states[0, 0])
    full.set_path(path)
    assert windowed.active.shape[0] == 16
    assert torch.allclose(windowed(states, actions), full(states, actions), rtol=1e-5)
    far = states.clone()
    far[..., 0] += 20.0  # 20 m further along: the window follows after prepare()
    windowed.prepare(far[0, 0])
    assert torch.allclose(windowed(far, actions), full(far, actions), rtol=1e-5)

    # time_stride scores every n-th state, scaled to keep the sum's size.
    strided = PathTrackingTerm(NX, NU, time_stride=2)
    strided.set_path(path)
    assert torch.allclose(strided(states, actions).double(), 2 * d2[:, 2::2].sum(1), rtol=1e-4)


def test_path_edges_cost_nothing_inside_the_margin_and_steeply_beyond():
    """Issue 10 §2: the race cost knows the track's edges: zero within half_width - edge_margin of the centre
    line, then edge_weight * (excess)^2, steeper the further out, with finite gradients on the line and at the
    margin's boundary."""
    term = PathTrackingTerm(NX, NU, distance_weight=0.0, half_width=6.0, edge_margin=1.5, edge_weight=200.0)
    term.set_path(torch.tensor([[0.0, 0.0], [100.0, 0.0]]))
    lateral = torch.tensor([0.0, 2.0, 4.5, 5.0, 6.0, 7.0, -7.0])
    states = torch.zeros(len(lateral), 2, NX)
    states[:, 1, 0] = 50.0
    states[:, 1, 1] = lateral
    actions = torch.zeros(len(lateral), 1, NU)
    excess = (lateral.abs() - 4.5).clamp(min=0)
    assert torch.allclose(term(states, actions), 200.0 * excess**2, atol=1e-3)
    assert (term(states, actions)[:3] == 0).all()  # inside the margin: nothing
    # Steep: leaving the track (7 m) costs 25x what the margin's first half metre does.
    assert term(states, actions)[5].item() == pytest.approx(25 * term(states, actions)[3].item(), rel=1e-4)
    states.requires_grad_(True)
    term(states, actions).sum().backward()
    assert torch.isfinite(states.grad).all()
    assert states.grad[5, 1, 1].item() == pytest.approx(2 * 200.0 * 2.5, rel=1e-4)  # pushes back to the line
    assert states.grad[0, 1, 1].item() == 0.0
    # Off by default; a margin as wide as the track is refused, naming the keys.
    assert PathTrackingTerm(NX, NU).edge_weight == 0.0
    with pytest.raises(ValueError, match="edge_margin.*half_width"):
        build_cost({"path_tracking": {"half_width": 2.0, "edge_margin": 2.0, "edge_weight": 1.0}}, NX, NU)


def test_closed_path_wraps_round_its_start_for_distance_window_and_progress():
    """Issue 10 §2: a race track's centre line is a loop. Open, a path ends at its last point, so a car just
    before the start line saw its predictions beyond it as off the path (and braked for it every lap); closed,
    the cost beyond the join is the cost along the path's start, and progress counts across the join."""
    angles = torch.arange(0, 64) * (2 * math.pi / 64)
    loop = torch.stack((10 * torch.cos(angles), 10 * torch.sin(angles)), 1)  # counter-clockwise, 62.8 m
    unrolled = torch.cat((loop[32:], loop[:33]))  # the loop from half way round, open: the reference
    # Trajectories from just before the join (the last point) across it, 2 m off the line.
    phase = -0.3 + torch.linspace(0, 0.6, 7)
    states = torch.zeros(1, 7, NX)
    states[0, :, 0], states[0, :, 1] = 12 * torch.cos(phase), 12 * torch.sin(phase)
    actions = torch.zeros(1, 6, NU)
    reference = PathTrackingTerm(NX, NU, progress_weight=1.0)
    reference.set_path(unrolled)
    for window in (0, 16):
        closed = PathTrackingTerm(NX, NU, progress_weight=1.0, closed=True, window_segments=window)
        closed.set_path(loop)
        closed.prepare(states[0, 0])
        assert closed(states, actions).item() == pytest.approx(reference(states, actions).item(), rel=1e-4)
        # About 2 m off the line at each of 6 predicted states, and progress the arc gained (~0.6 rad * 10 m).
        gained = -(closed(states, actions).item() - 6 * 4.0)
        assert gained == pytest.approx(10 * 0.6, rel=0.03)
    open_path = PathTrackingTerm(NX, NU, progress_weight=1.0)
    open_path.set_path(loop)
    assert open_path(states, actions).item() > closed(states, actions).item() + 20  # the open path's end
    # A loop given with its first point repeated at the end is the same loop.
    repeated = PathTrackingTerm(NX, NU, progress_weight=1.0, closed=True)
    repeated.set_path(torch.cat((loop, loop[:1])))
    repeated.prepare(states[0, 0])
    assert repeated.num_segments == 64
    assert repeated(states, actions).item() == pytest.approx(closed(states, actions).item(), rel=1e-4)
    with pytest.raises(ValueError, match="closed: expected true or false"):
        build_cost({"path_tracking": {"closed": "yes"}}, NX, NU)


def test_speed_cap_costs_only_above_the_target_speed():
    """``speed_form: cap``: the target speed is a limit (a racing cost's progress part sets the pace)."""
    term = PathTrackingTerm(NX, NU, distance_weight=0.0, speed_weight=2.0, target_speed=10.0, speed_form="cap")
    term.set_path(torch.tensor([[0.0, 0.0], [100.0, 0.0]]))
    speeds = torch.tensor([0.0, 5.0, 10.0, 12.0])
    states = torch.zeros(4, 2, NX)
    states[:, 1, 3] = speeds
    assert term(states, torch.zeros(4, 1, NU)).tolist() == pytest.approx([0.0, 0.0, 0.0, 8.0])
    with pytest.raises(ValueError, match="speed_form.*set_point.*cap"):
        build_cost({"path_tracking": {"speed_form": "limit"}}, NX, NU)


# --------------------------------------------------------------------------- obstacles
def test_obstacles_circle_rectangle_boundary_soft_and_collision():
    term = ObstaclesTerm(NX, NU, margin=3.0, collision_cost=1000.0, circles=[[0, 0, 1]])
    states, actions = trajectory([9, 9, 0, 0, 0], [3, 0, 0, 0, 0])
    assert term(states, actions).item() == pytest.approx(1.0)  # clearance 2 -> (3 - 2)^2
    states, actions = trajectory([9, 9, 0, 0, 0], [3, 0, 0, 0, 0], [0.5, 0, 0, 0, 0])
    assert term(states, actions).item() == pytest.approx(1.0 + 3.5**2 + 1000.0)  # collision paid once

    box = ObstaclesTerm(NX, NU, margin=2.0, rectangles=[[1, 1, 3, 3]])
    pts = torch.tensor([[0.0, 0.0], [2.0, 2.5], [4.0, 2.0]])
    states = torch.zeros(3, NX)
    states[:, :2] = pts
    assert torch.allclose(box.clearance(states), torch.tensor([math.sqrt(2), -0.5, 1.0]), atol=1e-5)

    walls = ObstaclesTerm(NX, NU, margin=1.0, robot_radius=0.5, boundary=[-10, -5, 10, 5])
    states = torch.zeros(2, NX)
    states[0, :2] = torch.tensor([0.0, 4.0])
    states[1, :2] = torch.tensor([11.0, 0.0])
    assert torch.allclose(walls.clearance(states), torch.tensor([0.5, -1.5]))

    # Obstacles change at run time without new buffers, and kinds not given stay.
    term.set_obstacles(circles=torch.tensor([[100.0, 100.0, 1.0]]))
    states, actions = trajectory([9, 9, 0, 0, 0], [0.5, 0, 0, 0, 0])
    assert term(states, actions).item() == 0.0


# --------------------------------------------------------------------------- effort, smoothness, hand
def test_effort_and_smoothness():
    effort = EffortTerm(NX, NU, weights=[1.0, 0.5])
    states, actions = trajectory([0] * 5, [0] * 5, [0] * 5, actions=[[1, 2], [0, -2]])
    assert effort(states, actions).item() == pytest.approx(1 + 2 + 2)

    smooth = SmoothnessTerm(NX, NU, weights=1.0)
    states, actions = trajectory([0] * 5, [0] * 5, [0] * 5, actions=[[1, 0], [2, 1]])
    assert smooth(states, actions).item() == pytest.approx(2.0)  # no previous action known yet
    smooth.set_previous_action(torch.tensor([0.0, 0.0]))
    assert smooth(states, actions).item() == pytest.approx(3.0)
    smooth.set_previous_action(None)
    assert smooth(states, actions).item() == pytest.approx(2.0)


def test_joint_and_fingertip_targets():
    joints = JointTargetTerm(6, 2, indices=[1, 3], weights=[1.0, 2.0], stage_weight=1.0, terminal_weight=0.0)
    joints.set_joint_target([1.0, 2.0])
    states = torch.zeros(1, 2, 6)
    states[0, 1, 1], states[0, 1, 3] = 2.0, 0.0
    assert joints(states, torch.zeros(1, 1, 2)).item() == pytest.approx(1 + 2 * 4)

    tips = FingertipTargetTerm(6, 2, indices=list(range(6)), form="norm", stage_weight=0.0, terminal_weight=1.0)
    tips.set_fingertip_target(torch.zeros(6))
    states = torch.zeros(1, 2, 6)
    states[0, 1, :6] = torch.tensor([3.0, 0, 0, 0, 4.0, 0])
    assert tips(states, torch.zeros(1, 1, 2)).item() == pytest.approx(5.0)  # HandReach's goal distance
    with pytest.raises(ValueError, match="joint_target"):
        joints.set_joint_target([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="multiple of 3"):
        FingertipTargetTerm(6, 2, indices=[0, 1])


# --------------------------------------------------------------------------- the sum and YAML
SECTION = """
goal_pose: {weight: 2.0, form: quadratic, terminal_weight: 5.0}
effort: {weight: 0.1, weights: [1.0, 0.5]}
smoothness: {weight: 0.2}
walls: {type: obstacles, weight: 1.0, boundary: [-20, -20, 20, 20], circles: [[5, 0, 1]]}
"""


def test_trajectory_cost_sums_weighted_terms_and_reports_breakdown():
    cost = build_cost(yaml.safe_load(SECTION), NX, NU, source="car.yaml: cost")
    cost.set_context("goal", torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0]))
    torch.manual_seed(0)
    states, actions = torch.randn(7, 5, NX), torch.randn(7, 4, NU)
    parts = cost.breakdown(states, actions)
    assert list(parts) == ["goal_pose", "effort", "smoothness", "walls"]
    assert torch.allclose(sum(parts.values()), cost(states, actions))
    assert torch.allclose(parts["effort"], 0.1 * cost.terms["effort"](states, actions))
    cost.set_weight("effort", 0.0)
    assert torch.all(cost.breakdown(states, actions)["effort"] == 0)


def test_yaml_round_trip():
    cost = build_cost(yaml.safe_load(SECTION), NX, NU)
    text = yaml.safe_dump(cost.to_config())
    again = build_cost(yaml.safe_load(text), NX, NU)
    assert again.to_config() == cost.to_config()
    for c in (cost, again):
        c.set_context("goal", torch.tensor([3.0, 1.0, 0.0, 0.0, 0.0]))
    states, actions = torch.randn(4, 5, NX), torch.randn(4, 4, NU)
    assert torch.allclose(cost(states, actions), again(states, actions))


@pytest.mark.parametrize(
    "section, words",
    [
        ({"goal": {"weight": 1.0}}, ["car.yaml: cost", "unknown term 'goal'", "goal_pose", "path_tracking"]),
        ({"goal_pose": {"positon_weight": 1.0}}, ["car.yaml: cost", "goal_pose", "positon_weight", "position_weight"]),
        ({"goal_pose": {"position_weight": "heavy"}}, ["car.yaml: cost", "goal_pose", "position_weight", "heavy"]),
        ({"goal_pose": {"weight": -1}}, ["goal_pose", "weight", ">= 0"]),
        ({"x": {"type": "walls"}}, ["unknown term type 'walls'", "obstacles"]),
        ({"joint_target": {"weights": 1.0}}, ["joint_target", "missing", "indices"]),
        ({"effort": {"weights": [1, 2, 3]}}, ["effort", "weights", "2 numbers"]),
        ({"joint_target": {"indices": [0, 9]}}, ["joint_target", "indices", "out of range"]),
    ],
)
def test_bad_yaml_errors_name_source_term_and_key(section, words):
    with pytest.raises(ValueError) as info:
        build_cost(section, NX, NU, source="car.yaml: cost")
    for word in words:
        assert word in str(info.value)


def test_every_term_declares_its_keys_and_builds_from_defaults():
    for kind, cls in TERM_KINDS.items():
        assert cls.kind == kind and "weight" not in cls.defaults
        required = {"indices": list(range(3))} if kind in ("joint_target", "fingertip_target") else {}
        build_cost({kind: required}, NX, NU)


def test_context_is_validated_and_required():
    cost = build_cost({"goal_pose": {}, "path_tracking": {}}, NX, NU)
    with pytest.raises(RuntimeError, match="goal_pose: goal"):
        cost.check_ready()
    with pytest.raises(ValueError, match="goal.*non-finite"):
        cost.set_context("goal", torch.tensor([0.0, float("nan"), 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match=r"goal: expected shape \[5\]"):
        cost.set_context("goal", torch.zeros(3))
    with pytest.raises(ValueError, match="path"):
        cost.set_context("path", torch.tensor([[0.0, float("inf")], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="path: expected at least 2 points"):
        cost.set_context("path", torch.zeros(1, 2))
    cost.set_context("goal", [1.0, 2.0, 0.0, 0.0, 0.0])  # lists are accepted too
    cost.set_context("path", torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    cost.check_ready()
    assert isinstance(cost, TrajectoryCost)


def test_terms_are_differentiable_everywhere_they_are_used():
    cost = build_cost(yaml.safe_load(SECTION), NX, NU)
    cost.set_context("goal", torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0]))
    path = build_cost({"path_tracking": {"heading_weight": 1.0, "progress_weight": 1.0}}, NX, NU)
    path.set_context("path", torch.tensor([[0.0, 0.0], [5.0, 0.0]]))
    states = torch.zeros(2, 4, NX, requires_grad=True)  # exactly at the goal and on the path
    actions = torch.zeros(2, 3, NU, requires_grad=True)
    (cost(states, actions).sum() + path(states, actions).sum()).backward()
    assert torch.isfinite(states.grad).all() and torch.isfinite(actions.grad).all()
