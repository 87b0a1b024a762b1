"""The hand's forward kinematics (mbrl_ros/robots/hand/kinematics.py) against MuJoCo's own, on HandReach's model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.robots.hand import JOINTS
from mbrl_ros.robots.hand import kinematics
from mbrl_ros.robots.hand.kinematics import BODIES, HandKinematics
from mbrl_ros_hardware.hand.shadow_hand import HandSim


@pytest.fixture(scope="module")
def sim():
    return HandSim("reach")


def random_joints(sim: HandSim, count: int, seed: int) -> np.ndarray:
    """Joint positions over each joint's whole range (and 0.3 rad past it: kinematics has no limits)."""
    import mujoco

    model = sim.unwrapped.model
    ranges = np.array([model.jnt_range[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"robot0:{j}")]
                       for j in JOINTS])
    return np.random.default_rng(seed).uniform(ranges[:, 0] - 0.3, ranges[:, 1] + 0.3, size=(count, len(JOINTS)))


def test_fingertips_match_mujocos_kinematics_for_random_joint_configurations(sim):
    assert sim.joint_names == list(JOINTS)  # the state's joint order is the model's
    joints = random_joints(sim, 200, seed=0)
    expected = np.stack([sim.fingertips_at(q).reshape(-1) for q in joints])
    kinematics = HandKinematics()
    got64 = kinematics.double()(torch.from_numpy(joints)).numpy()
    assert np.abs(got64 - expected).max() < 1e-7  # ~2e-8 seen: MuJoCo composes quaternions, this matrices
    got32 = HandKinematics()(torch.from_numpy(joints).float()).numpy()
    assert np.abs(got32 - expected).max() < 1e-5
    # The configurations move every fingertip by centimetres, so a wrong axis or offset cannot hide.
    assert expected.std(axis=0).min() > 0.005


def test_a_wrong_axis_or_offset_is_caught(sim, monkeypatch):
    """The comparison above fails for the smallest plausible slip in the table (a flipped hinge axis,
    a link 1 mm off), for hinges about a frame axis and about any other."""
    joints = torch.from_numpy(random_joints(sim, 50, seed=1))
    expected = np.stack([sim.fingertips_at(q).reshape(-1) for q in joints.numpy()])
    for body in ("thbase", "lfmetacarpal", "ffmiddle", "wrist"):
        i = [b[0] for b in BODIES].index(body)
        name, parent, pos, quat, joint, axis = BODIES[i]
        flipped = (name, parent, pos, quat, joint, tuple(-a for a in axis))
        shifted = (name, parent, (pos[0], pos[1], pos[2] + 0.001), quat, joint, axis)
        for row, bound in ((flipped, 1e-3), (shifted, 5e-4)):
            monkeypatch.setattr(kinematics, "BODIES", BODIES[:i] + (row,) + BODIES[i + 1:])
            assert np.abs(HandKinematics(torch.float64)(joints).numpy() - expected).max() > bound, (body, row)
    monkeypatch.setattr(kinematics, "BODIES", BODIES)
    assert np.abs(HandKinematics(torch.float64)(joints).numpy() - expected).max() < 1e-7


def test_kinematics_is_batched_over_leading_dimensions_and_differentiable(sim):
    joints = torch.from_numpy(random_joints(sim, 12, seed=2)).reshape(3, 4, 24).requires_grad_(True)
    kinematics = HandKinematics(torch.float64)
    tips = kinematics(joints)
    assert tips.shape == (3, 4, 15)
    assert torch.allclose(tips.reshape(12, 15), kinematics(joints.reshape(12, 24)))
    # The Jacobian against central differences; the wrist moves every tip, FFJ0 only the first finger's.
    jac = torch.autograd.functional.jacobian(kinematics, joints[0, 0].detach())
    eps = 1e-6
    for j in range(24):
        step = torch.zeros(24, dtype=torch.float64)
        step[j] = eps
        numeric = (kinematics(joints[0, 0].detach() + step) - kinematics(joints[0, 0].detach() - step)) / (2 * eps)
        assert torch.allclose(jac[:, j], numeric, atol=1e-7)
    assert (jac[:, JOINTS.index("WRJ1")].reshape(5, 3).norm(dim=1) > 1e-3).all()
    ff0 = jac[:, JOINTS.index("FFJ0")].reshape(5, 3).norm(dim=1)
    assert ff0[0] > 1e-3 and (ff0[1:] == 0).all()
    with pytest.raises(ValueError, match="expected 24 joint positions"):
        kinematics(joints[..., :20])
