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

import torch
from torch import nn

from mbrl_ros.robots.hand import FINGERTIPS, JOINTS

__all__ = ["BODIES", "FINGERTIP_SITES", "HandKinematics"]

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
        # Frames as three column vectors [..., 3] each, and each constant applied only where it is not
        # trivial (most bodies sit on the parent's z axis with its orientation, most hinges turn about x
        # or y): a few elementwise products per body instead of a batched 3x3 matmul, ~5x faster here.
        sin, cos = torch.sin(joints)[..., None], torch.cos(joints)[..., None]
        frames: list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]] = []
        for i, (parent, joint) in enumerate(zip(self._parents, self._joints)):
            if parent < 0:
                pos = self.body_pos[i].expand(*joints.shape[:-1], 3)
                cols = tuple(self.body_rot[i][:, k].expand(*joints.shape[:-1], 3) for k in range(3))
            else:
                pos, cols = frames[parent][0], frames[parent][1]
                pos = _offset(pos, cols, self.body_pos[i], self._pos_nonzero[i])
                if not self._rot_identity[i]:
                    cols = tuple(sum(cols[r] * self.body_rot[i][r, k] for r in range(3)) for k in range(3))
            if joint >= 0:
                cols = _hinge(cols, sin[..., joint, :], cos[..., joint, :], self._hinge_axes[i],
                              self.axis_cross[i], self.axis_cross2[i])
            frames.append((pos, cols))
        return torch.cat([_offset(frames[b][0], frames[b][1], self.site_pos[k], self._site_nonzero[k])
                          for k, b in enumerate(self._tip_bodies)], dim=-1)


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
