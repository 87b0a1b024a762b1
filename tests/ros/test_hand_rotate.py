"""Issue 10 §1, the rotate task's driver over DDS: sim_hand (task rotate, lockstep) and the estimator as real
processes with the shipped hand.yaml + hand_rotate.yaml, a stand-in controller answering every state. The block's
pose and goal arrive as the environment has them, the commands are applied (the block moves as
HandManipulateBlockRotateZ-v1 stepped with the same actions in this process), the state ends with the block's
odometry, and the episode report carries the environment's own success and rotation error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from child_output import wait_for_line
from hand_rotate_peers import DT_NS, action

CONFIG = Path(__file__).parents[2] / "config"
PARAMS = ["--params-file", str(CONFIG / "hand.yaml"), "--params-file", str(CONFIG / "hand_rotate.yaml")]
PEERS = Path(__file__).with_name("hand_rotate_peers.py")
STEPS = 15
SEED = 4


def node(module: str, *ros_args: str) -> list[str]:
    return ["-c", f"import sys; from {module} import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/hand", *PARAMS, *ros_args]


def test_rotate_driver_publishes_the_block_and_its_goal_and_applies_commands(spawn):
    from mbrl_ros_hardware.hand.shadow_hand import HandSim

    sim = spawn(*node("mbrl_ros_hardware.hand.sim", "-p", "task:=rotate", "-p", f"seed:={SEED}",
                      "-p", f"max_episode_steps:={STEPS}", "-p", "frame_id:=world"))
    estimator = spawn(*node("mbrl_ros.nodes.estimator", "-p", "use_sim_time:=true"))
    controller = spawn(str(PEERS))
    got = json.loads(wait_for_line(controller, "result ", timeout=150, others=(sim, estimator)))
    assert got["reports"], got

    # The same episode in this process: the environment, its seed, the peer's actions.
    env = HandSim("rotate")
    start = env.reset(seed=SEED)
    np.testing.assert_allclose(got["goals"][0], env.goal, atol=1e-12)
    assert got["goals"][0][4:6] == [0.0, 0.0]  # a rotation about z
    expected = {0: start}
    for k in range(STEPS):
        expected[(k + 1) * DT_NS] = step = env.step(np.array(action(k)))
    expected = {stamp: getattr(e, "state", e) for stamp, e in expected.items()}

    odometry = {int(k): v for k, v in got["odometry"].items()}
    states = {int(k): v for k, v in got["states"].items()}
    seen = sorted(s for s in expected if s in odometry)
    assert len(seen) >= STEPS - 2, sorted(odometry)  # every step's block, but a first message lost to discovery
    assert sum(s in states for s in seen) >= STEPS - 2, sorted(states)
    moved = 0.0
    for stamp in seen:
        truth, sent = expected[stamp], odometry[stamp]
        assert sent[13:] == ["world", "block"]
        np.testing.assert_allclose(sent[:7], truth.block, atol=1e-9)
        linear, angular = env.block_twist(truth)
        np.testing.assert_allclose(sent[7:13], [*linear, *angular], atol=1e-9)
        if stamp in states:  # the estimator's state: joints, joint velocities, then the block's 13 entries
            state = np.array(states[stamp])
            assert state.shape == (61,)
            np.testing.assert_allclose(state[:24], truth.positions, atol=1e-9)
            np.testing.assert_allclose(state[48:], sent[:13], atol=1e-9)
        moved = max(moved, float(np.abs(truth.block[:3] - start.block[:3]).max()))
    assert moved > 1e-3, moved  # the commands moved the hand, and it the block

    report = got["reports"][0]
    assert report["steps"] == str(STEPS)
    assert report["success"] == str(step.success)
    assert float(report["final_rotation_error_rad"]) == pytest.approx(step.goal_distance, abs=1e-5)
    assert report["block_dropped"] == str(env.block_dropped(step.state))


def test_an_unknown_task_is_refused_naming_the_parameter():
    from mbrl_ros_hardware.hand.shadow_hand import HandSim

    with pytest.raises(ValueError, match=r"sim_hand: parameter 'task' must be one of \['reach', 'rotate'\]"):
        HandSim("juggle")
