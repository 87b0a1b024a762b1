"""Issue 10 §1, the rotate task's cost: the block's orientation error about z (zero at the goal, growing with the
angle, wrapped at pi, or at 2 pi as HandManipulate's success counts it) and the block kept in the palm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_ros.io.config import launch_parameters
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.hand.costs import BlockOrientationTerm, BlockPositionTerm
from mbrl_ros.ros_env import REPO_ROOT
from mbrl_ros_hardware.hand.shadow_hand import rotation_error

NX, NU = 7, 2  # x, y, z, qw, qx, qy, qz


def about_z(yaw: float) -> list[float]:
    """The quaternion (w, x, y, z) of a rotation by ``yaw`` about z: its sign follows the yaw (a block turned
    continuously past pi has w < 0)."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def block_states(*quaternions, position=(1.0, 0.9, 0.16)) -> torch.Tensor:
    """States [K, 2, 7]: each row's current state and one predicted state with the block at ``quaternion``."""
    rows = [[[*position, *about_z(0.0)], [*position, *q]] for q in quaternions]
    return torch.tensor(rows, dtype=torch.float64)


def orientation(goal_yaw: float, **config) -> BlockOrientationTerm:
    term = BlockOrientationTerm(NX, NU, indices=[3, 4, 5, 6], stage_weight=1.0, terminal_weight=0.0,
                                **config).double()
    term.set_block_goal([1.0, 0.9, 0.16, *about_z(goal_yaw)])
    return term


def cost(term, *quaternions) -> np.ndarray:
    states = block_states(*quaternions)
    return term(states, torch.zeros(len(quaternions), 1, NU, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("double_cover", [False, True])
def test_the_orientation_cost_is_zero_at_the_goal_and_grows_with_the_angle(double_cover):
    term = orientation(0.7, double_cover=double_cover)
    offsets = [0.0, 0.05, 0.1, 0.5, 1.0, 2.0, 3.0]
    up = cost(term, *(about_z(0.7 + d) for d in offsets))
    down = cost(term, *(about_z(0.7 - d) for d in offsets))
    np.testing.assert_allclose(up, offsets, atol=1e-9)
    np.testing.assert_allclose(down, offsets, atol=1e-9)
    squared = cost(orientation(0.7, double_cover=double_cover, form="squared"), *(about_z(0.7 + d) for d in offsets))
    np.testing.assert_allclose(squared, np.square(offsets), atol=1e-9)


def test_the_orientation_error_wraps_at_pi_or_as_the_environment_counts_it():
    # Goal 3.0 rad, block at -3.0 rad: 2 pi - 6 = 0.283 rad apart the short way round.
    short = 2 * math.pi - 6.0
    assert cost(orientation(3.0), about_z(-3.0))[0] == pytest.approx(short, abs=1e-9)
    assert cost(orientation(-3.0), about_z(3.0))[0] == pytest.approx(short, abs=1e-9)
    # A quaternion and its negative are one orientation; the environment's success tells them apart.
    assert cost(orientation(1.0), [-v for v in about_z(1.0)])[0] == pytest.approx(0.0, abs=1e-9)
    env_like = orientation(3.0, double_cover=True)
    assert cost(env_like, [-v for v in about_z(3.0)])[0] == pytest.approx(2 * math.pi, abs=1e-9)
    # With the double cover the cost is the environment's own rotation distance, for any two z rotations:
    # the block at -3.0 (w > 0) is 6 rad from the goal there; turned on past pi to 2 pi - 3.0 (w < 0), 0.283.
    rng = np.random.default_rng(0)
    for yaw, goal in [(-3.0, 3.0), (2 * math.pi - 3.0, 3.0), *rng.uniform(-2 * math.pi, 2 * math.pi, (20, 2))]:
        assert cost(orientation(goal, double_cover=True), about_z(yaw))[0] == pytest.approx(
            rotation_error(about_z(yaw), about_z(goal)), abs=1e-6), (yaw, goal)


def test_the_tilt_adds_its_angle_with_its_weight_and_the_quaternion_is_normalised():
    tilted = [math.cos(0.1), math.sin(0.1), 0.0, 0.0]  # 0.2 rad about x, no turn about z
    assert cost(orientation(0.0), tilted)[0] == pytest.approx(0.0, abs=1e-9)
    assert cost(orientation(0.0, tilt_weight=2.0), tilted)[0] == pytest.approx(0.4, abs=1e-6)
    assert cost(orientation(0.5), [3 * v for v in about_z(0.0)])[0] == pytest.approx(0.5, abs=1e-9)


def test_the_position_term_keeps_the_block_in_the_palm_and_penalises_a_drop():
    term = BlockPositionTerm(NX, NU, indices=[0, 1, 2], drop_height=0.1, drop_cost=100.0, stage_weight=1.0,
                             terminal_weight=2.0).double()
    term.set_block_goal([1.0, 0.9, 0.16, *about_z(0.3)])
    states = torch.tensor([[[1.0, 0.9, 0.16, 1, 0, 0, 0], [1.0, 0.9, 0.16, 1, 0, 0, 0]],
                           [[1.0, 0.9, 0.16, 1, 0, 0, 0], [1.03, 0.86, 0.16, 1, 0, 0, 0]],
                           [[1.0, 0.9, 0.16, 1, 0, 0, 0], [1.0, 0.9, 0.06, 1, 0, 0, 0]]], dtype=torch.float64)
    got = term(states, torch.zeros(3, 1, NU, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, [0.0, 3 * 0.05, 3 * (0.1 + 100.0)], atol=1e-5)  # sqrt(eps) at zero


def test_bad_config_and_goals_are_refused_naming_the_term_and_key():
    hand = get_robot("hand")
    with pytest.raises(ValueError, match=r"hand_rotate.yaml: cost: turn: indices: expected 4 state indices, got 3"):
        hand.build_cost({"turn": {"type": "block_orientation", "indices": [0, 1, 2]}}, NX, NU,
                        source="hand_rotate.yaml: cost")
    with pytest.raises(ValueError, match=r"cost: block_orientation: double_cover: expected true or false"):
        hand.build_cost({"block_orientation": {"indices": [3, 4, 5, 6], "double_cover": "yes"}}, NX, NU)
    with pytest.raises(ValueError, match=r"cost: block_orientation: form: expected one of \['angle', 'squared'\]"):
        hand.build_cost({"block_orientation": {"indices": [3, 4, 5, 6], "form": "norm"}}, NX, NU)
    with pytest.raises(ValueError, match=r"cost: block_position: missing required key\(s\) \['indices'\]"):
        hand.build_cost({"block_position": {}}, NX, NU)
    term = orientation(0.0)
    with pytest.raises(ValueError, match="block_goal: zero-length orientation quaternion"):
        term.set_block_goal([1.0, 0.9, 0.16, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="block_goal"):
        term.set_block_goal([0.0, 0.0, 0.0, 1.0])


def test_the_shipped_rotate_cost_indexes_the_blocks_entries_of_the_shipped_state():
    params = launch_parameters(REPO_ROOT / "config", "hand", "rotate", "controller")
    names = params["state_names"]
    cost = get_robot("hand").build_cost(params["cost"], len(names), 20, source="config/hand_rotate.yaml: cost")
    for term in cost.terms.values():
        if isinstance(term, BlockOrientationTerm):
            assert [names[i] for i in term.indices] == ["block_qw", "block_qx", "block_qy", "block_qz"]
        if isinstance(term, BlockPositionTerm):
            assert [names[i] for i in term.indices] == ["block_x", "block_y", "block_z"]
    assert {type(t) for t in cost.terms.values()} >= {BlockOrientationTerm, BlockPositionTerm}
