"""The Shadow hand's forward kinematics: fingertip positions from joint positions, batched and differentiable.

The kinematic tree is HandReach's own, written down from the compiled MuJoCo model
(gymnasium-robotics 1.4.2, ``envs/assets/hand/reach.xml``, loaded by mujoco 3.11.0:
``model.body_pos``, ``body_quat``, ``jnt_axis`` and ``site_pos`` of the ``robot0:S_<tip>tip``
sites), so nodes that plan need no MuJoCo. ``tests/robots/test_hand_kinematics.py`` checks it
against MuJoCo's ``mj_kinematics`` for random joint configurations; a wrong axis or offset fails it.

MuJoCo's rule for a body with one hinge through its origin (every joint here has ``pos`` 0 and
``qpos0`` 0): ``R = R_parent @ R(body_quat) @ Rot(axis, q)``, ``p = p_parent + R_parent @ body_pos``;
a site is at ``p + R @ site_pos``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mbrl_ros.robots.hand import FINGERTIPS, JOINTS

__all__ = ["BODIES", "FINGERTIP_SITES", "HandKinematics", "NumpyKinematics"]

# (body, parent, pos [m], quat [w, x, y, z], joint or None, hinge axis), parents before children.
BODIES = (
    ("hand mount", "world", (1.0, 1.25, 0.15),
     (9.381839456086127e-07, 9.381873917569988e-07, -0.7071080798588512, 0.7071054825106139), None, None),
    ("forearm", "hand mount", (0.0, 0.01, 0.0), (1.0, 0.0, 0.0, 0.0), None, None),
    ("wrist", "forearm", (0.0, 0.0, 0.256), (1.0, 0.0, 0.0, 0.0), "WRJ1", (0.0, 1.0, 0.0)),
    ("palm", "wrist", (0.0, 0.0, 0.034), (1.0, 0.0, 0.0, 0.0), "WRJ0", (1.0, 0.0, 0.0)),
    ("ffknuckle", "palm", (0.033, 0.0, 0.095), (1.0, 0.0, 0.0, 0.0), "FFJ3", (0.0, 1.0, 0.0)),
    ("ffproximal", "ffknuckle", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), "FFJ2", (1.0, 0.0, 0.0)),
    ("ffmiddle", "ffproximal", (0.0, 0.0, 0.045), (1.0, 0.0, 0.0, 0.0), "FFJ1", (1.0, 0.0, 0.0)),
    ("ffdistal", "ffmiddle", (0.0, 0.0, 0.025), (1.0, 0.0, 0.0, 0.0), "FFJ0", (1.0, 0.0, 0.0)),
    ("mfknuckle", "palm", (0.011, 0.0, 0.099), (1.0, 0.0, 0.0, 0.0), "MFJ3", (0.0, 1.0, 0.0)),
    ("mfproximal", "mfknuckle", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), "MFJ2", (1.0, 0.0, 0.0)),
    ("mfmiddle", "mfproximal", (0.0, 0.0, 0.045), (1.0, 0.0, 0.0, 0.0), "MFJ1", (1.0, 0.0, 0.0)),
    ("mfdistal", "mfmiddle", (0.0, 0.0, 0.025), (1.0, 0.0, 0.0, 0.0), "MFJ0", (1.0, 0.0, 0.0)),
    ("rfknuckle", "palm", (-0.011, 0.0, 0.095), (1.0, 0.0, 0.0, 0.0), "RFJ3", (0.0, 1.0, 0.0)),
    ("rfproximal", "rfknuckle", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), "RFJ2", (1.0, 0.0, 0.0)),
    ("rfmiddle", "rfproximal", (0.0, 0.0, 0.045), (1.0, 0.0, 0.0, 0.0), "RFJ1", (1.0, 0.0, 0.0)),
    ("rfdistal", "rfmiddle", (0.0, 0.0, 0.025), (1.0, 0.0, 0.0, 0.0), "RFJ0", (1.0, 0.0, 0.0)),
    ("lfmetacarpal", "palm", (-0.017, 0.0, 0.044), (1.0, 0.0, 0.0, 0.0), "LFJ4",
     (0.5709765904396781, 0.0, 0.82096634107001)),
    ("lfknuckle", "lfmetacarpal", (-0.017, 0.0, 0.044), (1.0, 0.0, 0.0, 0.0), "LFJ3", (0.0, 1.0, 0.0)),
    ("lfproximal", "lfknuckle", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), "LFJ2", (1.0, 0.0, 0.0)),
    ("lfmiddle", "lfproximal", (0.0, 0.0, 0.045), (1.0, 0.0, 0.0, 0.0), "LFJ1", (1.0, 0.0, 0.0)),
    ("lfdistal", "lfmiddle", (0.0, 0.0, 0.025), (1.0, 0.0, 0.0, 0.0), "LFJ0", (1.0, 0.0, 0.0)),
    ("thbase", "palm", (0.034, -0.009, 0.029), (0.9239556994702721, 0.0, 0.3824994972760097, 0.0), "THJ4",
     (0.0, 0.0, -1.0)),
    ("thproximal", "thbase", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), "THJ3", (1.0, 0.0, 0.0)),
    ("thhub", "thproximal", (0.0, 0.0, 0.038), (1.0, 0.0, 0.0, 0.0), "THJ2", (1.0, 0.0, 0.0)),
    ("thmiddle", "thhub", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), "THJ1", (0.0, 1.0, 0.0)),
    ("thdistal", "thmiddle", (0.0, 0.0, 0.032), (1.0, 0.0, 0.0, 0.0), "THJ0", (0.0, 1.0, 0.0)),
)
# Fingertip site (HandReach's order, FINGERTIPS): its body and its offset in that body's frame (m).
FINGERTIP_SITES = {
    "ff": ("ffdistal", (0.0, 0.0, 0.026)),
    "mf": ("mfdistal", (0.0, 0.0, 0.026)),
    "rf": ("rfdistal", (0.0, 0.0, 0.026)),
    "lf": ("lfdistal", (0.0, 0.0, 0.026)),
    "th": ("thdistal", (0.0, 0.0, 0.0275)),
}


def _quat_matrix(q: tuple[float, float, float, float]) -> torch.Tensor:
    w, x, y, z = torch.tensor(q, dtype=torch.float64) / torch.linalg.vector_norm(torch.tensor(q, dtype=torch.float64))
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
    ])


def _cross_matrix(axis: tuple[float, float, float]) -> torch.Tensor:
    x, y, z = axis
    return torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)


class HandKinematics(nn.Module):
    """``joints[..., 24]`` (rad, ``JOINTS`` order) -> fingertips ``[..., 15]`` (m, world frame, ``FINGERTIPS`` order).

    Batched over any leading dimensions, differentiable, in ``dtype`` (the table is float64: build in float64 for
    float64 results, ``.double()`` of a float32 one keeps float32's rounding). Hinges about +x, +y or +z turn
    two columns of the frame; any other axis by Rodrigues' formula ``I + sin(q) K + (1 - cos(q)) K^2``.
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        names = [b[0] for b in BODIES]
        self._parents = [names.index(parent) if parent != "world" else -1 for _, parent, *_ in BODIES]
        self._joints = [JOINTS.index(joint) if joint else -1 for *_, joint, _ in BODIES]
        self._tip_bodies = [names.index(FINGERTIP_SITES[tip][0]) for tip in FINGERTIPS]
        self._pos_nonzero = [tuple(k for k in range(3) if b[2][k] != 0.0) for b in BODIES]
        self._site_nonzero = [tuple(k for k in range(3) if FINGERTIP_SITES[tip][1][k] != 0.0) for tip in FINGERTIPS]
        self._rot_identity = [tuple(b[3]) == (1.0, 0.0, 0.0, 0.0) for b in BODIES]
        self._hinge_axes = [(0, 1, 2)[b[5].index(1.0)] if b[5] and sorted(b[5]) == [0.0, 0.0, 1.0] else None
                            for b in BODIES]
        self.register_buffer("body_pos", torch.tensor([b[2] for b in BODIES], dtype=dtype))
        self.register_buffer("body_rot", torch.stack([_quat_matrix(b[3]) for b in BODIES]).to(dtype))
        axes = [b[5] or (0.0, 0.0, 1.0) for b in BODIES]
        cross = torch.stack([_cross_matrix(a) for a in axes])
        self.register_buffer("axis_cross", cross.to(dtype))
        self.register_buffer("axis_cross2", (cross @ cross).to(dtype))
        self.register_buffer("site_pos", torch.tensor([FINGERTIP_SITES[tip][1] for tip in FINGERTIPS],
                                                      dtype=dtype))

    def forward(self, joints: torch.Tensor) -> torch.Tensor:
        if joints.shape[-1] != len(JOINTS):
            raise ValueError(f"HandKinematics: expected {len(JOINTS)} joint positions in the last dimension, got "
                             f"shape {tuple(joints.shape)}")
        frames = _frames(self, self._tables(), joints, torch.sin, torch.cos)
        return torch.cat(_tips(self, self._tables(), frames), dim=-1)

    def _tables(self) -> dict:
        return {name: getattr(self, name) for name in ("body_pos", "body_rot", "axis_cross", "axis_cross2", "site_pos")}

    def numpy(self) -> "NumpyKinematics":
        """The same kinematics in float64 numpy, with its Jacobian (for iLQR's numpy path)."""
        return NumpyKinematics(self)


class NumpyKinematics:
    """``HandKinematics`` in float64 numpy: ``tips(joints[B, 24]) -> [B, 15]`` and ``jacobian``, the geometric
    Jacobian ``d tip / d q_j = axis_j x (tip - origin_j)`` over the joints on the tip's chain."""

    def __init__(self, kinematics: HandKinematics) -> None:
        self.structure = kinematics
        self.tables = {name: value.detach().double().cpu().numpy() for name, value in kinematics._tables().items()}
        axes = np.array([b[5] or (0.0, 0.0, 0.0) for b in BODIES])  # a hinge's axis in its body's frame
        self.axes = axes
        chains = []
        for body in kinematics._tip_bodies:
            chain = []
            while body >= 0:
                if kinematics._joints[body] >= 0:
                    chain.append(body)
                body = kinematics._parents[body]
            chains.append(chain)
        self.chains = chains
        # The Jacobian in one batch: each joint's body (in joint order), and which joints each tip's chain holds.
        self._joint_bodies = [kinematics._joints.index(j) for j in range(len(kinematics._joints)) if j in kinematics._joints]
        self._on_chain = np.zeros((len(chains), len(self._joint_bodies)))
        for k, chain in enumerate(chains):
            self._on_chain[k, [kinematics._joints[b] for b in chain]] = 1.0

    def tips(self, joints: np.ndarray) -> np.ndarray:
        frames = _frames(self.structure, self.tables, joints, np.sin, np.cos)
        return np.concatenate(_tips(self.structure, self.tables, frames), axis=-1)

    def tips_and_jacobian(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[B, 15]`` and ``d tips / d joints [B, 15, 24]``."""
        frames = _frames(self.structure, self.tables, joints, np.sin, np.cos)
        tips = _tips(self.structure, self.tables, frames)
        # All tips against all joints at once (a loop of small np.cross calls was most of a solve's time), zero
        # off each tip's chain.
        axes = np.stack([sum(frames[b][1][r] * self.axes[b][r] for r in range(3) if self.axes[b][r] != 0.0)
                         for b in self._joint_bodies], axis=-2)  # [..., 24, 3]
        origins = np.stack([frames[b][0] for b in self._joint_bodies], axis=-2)
        arms = np.stack(tips, axis=-2)[..., :, None, :] - origins[..., None, :, :]  # [..., 5, 24, 3]
        a = axes[..., None, :, :]
        cross = np.stack([a[..., 1] * arms[..., 2] - a[..., 2] * arms[..., 1],
                          a[..., 2] * arms[..., 0] - a[..., 0] * arms[..., 2],
                          a[..., 0] * arms[..., 1] - a[..., 1] * arms[..., 0]], axis=-2)  # [..., 5, 3, 24]
        jacobian = (cross * self._on_chain[:, None, :]).reshape(*joints.shape[:-1], 3 * len(tips), joints.shape[-1])
        return np.concatenate(tips, axis=-1), jacobian


def _frames(structure: HandKinematics, tables: dict, joints, sin, cos) -> list:
    """Every body's world frame ``(origin [..., 3], (x, y, z) columns [..., 3] each)`` for ``joints[..., 24]``,
    in torch or numpy (``sin``, ``cos`` and the ``tables`` of one of them).

    Frames as three column vectors, and each constant applied only where it is not trivial (most bodies
    sit on the parent's z axis with its orientation, most hinges turn about x or y): a few elementwise
    products per body instead of a batched 3x3 matmul, ~5x faster here."""
    sines, cosines = sin(joints)[..., None], cos(joints)[..., None]
    zero = joints[..., :3] * 0.0
    body_pos, body_rot = tables["body_pos"], tables["body_rot"]
    frames = []
    for i, (parent, joint) in enumerate(zip(structure._parents, structure._joints)):
        if parent < 0:
            pos = zero + body_pos[i]
            cols = tuple(zero + body_rot[i][:, k] for k in range(3))
        else:
            pos, cols = frames[parent]
            pos = _offset(pos, cols, body_pos[i], structure._pos_nonzero[i])
            if not structure._rot_identity[i]:
                cols = tuple(sum(cols[r] * body_rot[i][r, k] for r in range(3)) for k in range(3))
        if joint >= 0:
            cols = _hinge(cols, sines[..., joint, :], cosines[..., joint, :], structure._hinge_axes[i],
                          tables["axis_cross"][i], tables["axis_cross2"][i])
        frames.append((pos, cols))
    return frames


def _tips(structure: HandKinematics, tables: dict, frames: list) -> list:
    return [_offset(frames[b][0], frames[b][1], tables["site_pos"][k], structure._site_nonzero[k])
            for k, b in enumerate(structure._tip_bodies)]


def _offset(pos: torch.Tensor, cols: tuple[torch.Tensor, ...], offset: torch.Tensor, nonzero: tuple[int, ...]):
    """``pos + R @ offset``, over the offset's nonzero entries only."""
    for k in nonzero:
        pos = pos + cols[k] * offset[k]
    return pos


def _hinge(cols, sin, cos, axis: int | None, cross: torch.Tensor, cross2: torch.Tensor):
    """``R @ Rot(axis, q)`` in columns; ``axis`` is 0, 1 or 2 for +x, +y, +z, or None (any axis: Rodrigues)."""
    c0, c1, c2 = cols
    if axis == 0:
        return c0, cos * c1 + sin * c2, cos * c2 - sin * c1
    if axis == 1:
        return cos * c0 - sin * c2, c1, sin * c0 + cos * c2
    if axis == 2:
        return cos * c0 + sin * c1, cos * c1 - sin * c0, c2
    rot = [[float(r == k) + sin * cross[r, k] + (1 - cos) * cross2[r, k] for k in range(3)] for r in range(3)]
    return tuple(c0 * rot[0][k] + c1 * rot[1][k] + c2 * rot[2][k] for k in range(3))
