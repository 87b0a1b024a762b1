"""The hand's physics prior: each joint follows its actuator's target as a linear second-order lag,
and the fingertips follow from the joints by the hand's kinematics.

State ``[q (24, rad), v (24, rad/s), fingertips (15, m)]``, action the 20 actuators' position targets
normalised to [-1, 1], mapped through their control ranges as HandReach maps them (``CTRL_RANGE``).
Each joint ``j`` has a target ``r_j``: its own actuator's, or, for the distal joints ``FFJ0``, ``MFJ0``,
``RFJ0`` and ``LFJ0`` (no actuator: a tendon couples each to its ``J1``), the ``J1`` actuator's. Per joint,
with ``gap = r_j - q_j``, one control period is::

    q' = q + gain * gap + carry * v + offset
    v' = vel_gain * gap + vel_carry * v + vel_offset

six parameters per joint (``PARAM_NAMES``), identifiable by linear least squares (``sysid``). A
MuJoCo position actuator (force ``kp (r - q)``, joint damping, armature) is a linear second-order
system, whose exact discretisation has this form; ``offset`` takes up gravity's pull where it is
nearly constant, and the coupled distal joints' smaller ``gain`` their tendon's slack. The defaults
are a first-order lag of ``DEFAULT_LAG`` s, which no data gave: identify them (``mbrl-ros fit``, the trainer).

Fingertips are ``kinematics(q' - fingertip_lag * v')``: HandReach reads the fingertip sites that
MuJoCo computed at the start of the step's last physics substep (0.002 s before the joints it
reports), so its fingertips lag the joints by one MuJoCo timestep (config: ``fingertip_lag: 0.002``);
a real hand measuring both together has 0.

What it leaves out, for a learned residual (model kind ``semiparametric``): the actuators' force
limits, gravity's dependence on the pose, contacts between fingers, joint limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from mbrl_ros.core.models.base import NumpyDynamics, PhysicsModel
from mbrl_ros.robots.hand import ACTUATORS, JOINTS
from mbrl_ros.robots.hand.kinematics import HandKinematics
from mbrl_ros.robots.hand.stop import CTRL_RANGE

__all__ = ["DEFAULT_LAG", "JointLagParams", "LaggedJoints", "LaggedJointsNumpy", "PARAM_NAMES", "TARGET_ACTUATOR"]

# The distal joints' tendon (gymnasium-robotics' shadow_hand MJCF, fixed tendon T_<x>FJ1c: 0.00705 J0 - 0.00805 J1,
# limited to +-0.001): it holds J0 within TENDON_SLACK of TENDON_RATIO * J1 and leaves it free inside.
TENDON_RATIO = 0.00805 / 0.00705
TENDON_SLACK = 0.001 / 0.00705
DISTAL_RANGE = (0.0, 1.571)  # rad, the J0 joints' range
DISTAL_PAIRS = tuple((JOINTS.index(f"{f}J0"), JOINTS.index(f"{f}J1")) for f in ("FF", "MF", "RF", "LF"))
PARAM_NAMES = ("gain", "carry", "offset", "vel_gain", "vel_carry", "vel_offset")
DEFAULT_LAG = 0.13  # s: about what HandReach's joints identify (gain ~0.27 per 0.04 s step)
NUM_JOINTS = len(JOINTS)


def _driving_actuator(joint: str) -> int:
    own = f"A_{joint}"
    return ACTUATORS.index(own if own in ACTUATORS else f"A_{joint[:-1]}1")  # xFJ0: the xFJ1 actuator


# Per joint (JOINTS order), the actuator (ACTUATORS index) whose target it follows.
TARGET_ACTUATOR = tuple(_driving_actuator(j) for j in JOINTS)


@dataclass
class JointLagParams:
    """Per-joint parameters, each a list of 24 floats in ``JOINTS`` order (see the module's equations)."""

    gain: list
    carry: list
    offset: list
    vel_gain: list
    vel_carry: list
    vel_offset: list

    @classmethod
    def first_order_lag(cls, dt: float, lag: float = DEFAULT_LAG) -> "JointLagParams":
        """A first-order lag of time constant ``lag``: ``q`` closes ``1 - exp(-dt / lag)`` of the gap per step,
        and ends the step at the velocity that lag has there."""
        gain = 1.0 - math.exp(-dt / lag)
        return cls.from_dict({"gain": gain, "carry": 0.0, "offset": 0.0, "vel_gain": (1.0 - gain) / lag,
                              "vel_carry": 0.0, "vel_offset": 0.0})

    @classmethod
    def from_dict(cls, values: dict, source: str = "joint lag params", dt: float = 0.04) -> "JointLagParams":
        """From a config's ``params``: each name a number (every joint) or a list of 24 (per joint); names left
        out take the first-order lag's values at ``dt``."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(names)}")
        default = None if names <= set(values) else cls.first_order_lag(dt)
        out = {}
        for name in PARAM_NAMES:
            value = values[name] if name in values else getattr(default, name)
            array = np.broadcast_to(np.asarray(value, dtype=float), (NUM_JOINTS,)) if np.ndim(value) == 0 \
                else np.asarray(value, dtype=float)
            if array.shape != (NUM_JOINTS,) or not np.isfinite(array).all():
                raise ValueError(f"{source}.{name}: expected a finite number or {NUM_JOINTS} finite numbers (one "
                                 f"per joint, {list(JOINTS)}), got {value!r}")
            out[name] = [float(v) for v in array]
        return cls(**out)

    def as_array(self) -> np.ndarray:
        """``[24, 6]``: one row per joint, one column per ``PARAM_NAMES`` entry."""
        return np.array([getattr(self, name) for name in PARAM_NAMES], dtype=float).T

    @classmethod
    def from_array(cls, theta: np.ndarray) -> "JointLagParams":
        return cls(**{name: [float(v) for v in theta[:, k]] for k, name in enumerate(PARAM_NAMES)})

    def as_dict(self) -> dict:
        return {name: list(getattr(self, name)) for name in PARAM_NAMES}


class LaggedJoints(PhysicsModel):
    """Batched hand prior; parameters ``theta[24, 6]`` are a buffer (or trainable with ``learnable=True``)."""

    robot = "hand"

    def __init__(self, params: JointLagParams | None = None, dt: float = 0.04, fingertip_lag: float = 0.0,
                 distal_tendon: bool = False, learnable: bool = False) -> None:
        super().__init__(state_dim=2 * NUM_JOINTS + 15, action_dim=len(ACTUATORS))
        if not dt > 0 or not fingertip_lag >= 0:
            raise ValueError(f"need dt > 0 and fingertip_lag >= 0, got dt={dt}, fingertip_lag={fingertip_lag}")
        self.dt, self.fingertip_lag, self.distal_tendon = float(dt), float(fingertip_lag), bool(distal_tendon)
        self.register_buffer("distal", torch.tensor([d for d, _ in DISTAL_PAIRS]), persistent=False)
        self.register_buffer("middle", torch.tensor([m for _, m in DISTAL_PAIRS]), persistent=False)
        self.params = params or JointLagParams.first_order_lag(self.dt)
        theta = torch.tensor(self.params.as_array(), dtype=torch.float32)
        if learnable:
            self.theta = torch.nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)
        low, high = np.array([CTRL_RANGE[a] for a in ACTUATORS])[list(TARGET_ACTUATOR)].T
        self.register_buffer("target_centre", torch.tensor((low + high) / 2, dtype=torch.float32), persistent=False)
        self.register_buffer("target_half", torch.tensor((high - low) / 2, dtype=torch.float32), persistent=False)
        self.register_buffer("target_actuator", torch.tensor(TARGET_ACTUATOR), persistent=False)
        self.kinematics = HandKinematics()
        for name, buffer in list(self.kinematics.named_buffers(recurse=False)):  # the tree is the code's, not data
            self.kinematics.register_buffer(name, buffer, persistent=False)

    def joint_targets(self, actions: torch.Tensor) -> torch.Tensor:
        """``actions[..., 20]`` in [-1, 1] -> each joint's target ``[..., 24]`` (rad)."""
        return self.target_centre + actions.clamp(-1.0, 1.0).index_select(-1, self.target_actuator) * self.target_half

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        q, v = states[..., :NUM_JOINTS], states[..., NUM_JOINTS:2 * NUM_JOINTS]
        gap = self.joint_targets(actions) - q
        gain, carry, offset, vel_gain, vel_carry, vel_offset = self.theta.unbind(-1)
        next_q = q + gain * gap + carry * v + offset
        next_v = vel_gain * gap + vel_carry * v + vel_offset
        if self.distal_tendon:
            distal = q.index_select(-1, self.distal)
            centre = TENDON_RATIO * next_q.index_select(-1, self.middle)
            moved = torch.clamp(distal, min=centre - TENDON_SLACK, max=centre + TENDON_SLACK).clamp(*DISTAL_RANGE)
            next_q = next_q.index_copy(-1, self.distal, moved)
            next_v = next_v.index_copy(-1, self.distal, (moved - distal) / self.dt)
        tips = self.kinematics(next_q - self.fingertip_lag * next_v)
        return torch.cat([next_q, next_v, tips], dim=-1)

    def numpy_dynamics(self) -> "LaggedJointsNumpy":
        return LaggedJointsNumpy(self)


class LaggedJointsNumpy(NumpyDynamics):
    """``LaggedJoints`` in float64 numpy (iLQR's path): its step, and its Jacobians in closed form (the joint
    rows are linear; the fingertip rows are the kinematics' geometric Jacobian times those rows)."""

    def __init__(self, model: LaggedJoints) -> None:
        self.theta = model.theta.detach().double().cpu().numpy()  # [24, 6]
        self.centre, self.half = (b.double().cpu().numpy() for b in (model.target_centre, model.target_half))
        self.actuator = np.array(TARGET_ACTUATOR)
        self.fingertip_lag, self.dt, self.distal_tendon = model.fingertip_lag, model.dt, model.distal_tendon
        self.distal, self.middle = (np.array(p) for p in zip(*DISTAL_PAIRS))
        self.kinematics = model.kinematics.numpy()

    def held(self, actions: np.ndarray, bias: np.ndarray | None = None, jacobian: bool = True
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """Where the prior settles with ``actions[B, 20]`` held: the fingertips ``[B, 15]`` and their Jacobian
        ``d tips / d actions`` ``[B, 15, 20]`` (None without ``jacobian``). Each joint's lag is linear, so its steady state is its target
        less a constant gap (``q = q' = q + gain * gap + carry * v + offset``, ``v = v'``: two linear equations
        per joint). ``bias[63]``: a constant added to every predicted step (MPPI's output-bias estimate), whose
        steady state this is then; its joint rows shift the gap, its fingertip rows the fingertips. Each joint
        is held within its range, its actuator's control range (the distal joints: J1's, ``DISTAL_RANGE``), where
        the hand's joint limits stop it and the lag alone would not: a target past a joint's limit moves nothing
        (its Jacobian column is zero there), so a bias cannot wind the targets up against a limit."""
        if self.distal_tendon:
            raise ValueError("joint lag prior: held() has no unique steady state for the distal joints with "
                             "distal_tendon (J0 rests anywhere in its tendon's band)")
        n = NUM_JOINTS
        bias = np.zeros(2 * n + 15) if bias is None else np.asarray(bias, float)
        gain, carry, offset, vel_gain, vel_carry, vel_offset = self.theta.T
        matrix = np.stack([np.stack([gain, carry], -1), np.stack([-vel_gain, 1.0 - vel_carry], -1)], -2)
        rhs = np.stack([-offset - bias[:n], vel_offset + bias[n:2 * n]], -1)
        gap, velocity = np.linalg.solve(matrix, rhs[..., None])[..., 0].T
        actions = np.atleast_2d(actions)
        free = self.centre + np.clip(actions, -1.0, 1.0)[:, self.actuator] * self.half - gap
        q = np.clip(free, self.centre - self.half, self.centre + self.half)
        # The step computes the fingertips from its joints before the bias is added to them.
        measured = q - bias[:n] - self.fingertip_lag * (velocity - bias[n:2 * n])
        if not jacobian:
            return self.kinematics.tips(measured) + bias[2 * n:], None
        tips, jac_q = self.kinematics.tips_and_jacobian(measured)
        dq_du = np.zeros((len(actions), n, actions.shape[1]))
        moving = (np.abs(actions) < 1.0)[:, self.actuator] & (q == free)
        dq_du[:, np.arange(n), self.actuator] = moving * self.half
        return tips + bias[2 * n:], jac_q @ dq_du

    def _next_joints(self, q, v, actions):
        gap = self.centre + np.clip(actions, -1.0, 1.0)[..., self.actuator] * self.half - q
        gain, carry, offset, vel_gain, vel_carry, vel_offset = self.theta.T
        next_q, next_v = q + gain * gap + carry * v + offset, vel_gain * gap + vel_carry * v + vel_offset
        if self.distal_tendon:
            centre = TENDON_RATIO * next_q[..., self.middle]
            moved = np.clip(np.clip(q[..., self.distal], centre - TENDON_SLACK, centre + TENDON_SLACK), *DISTAL_RANGE)
            next_v[..., self.distal] = (moved - q[..., self.distal]) / self.dt
            next_q[..., self.distal] = moved
        return next_q, next_v

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        x, u = states.T, actions.T
        next_q, next_v = self._next_joints(x[:, :NUM_JOINTS], x[:, NUM_JOINTS:2 * NUM_JOINTS], u)
        tips = self.kinematics.tips(next_q - self.fingertip_lag * next_v)
        return np.concatenate([next_q, next_v, tips], axis=1).T

    def jacobians(self, states: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch, n = states.shape[0], NUM_JOINTS
        next_q, next_v = self._next_joints(states[:, :n], states[:, n:2 * n], actions)
        _, jac_tips = self.kinematics.tips_and_jacobian(next_q - self.fingertip_lag * next_v)  # [B, 15, 24]
        gain, carry, _, vel_gain, vel_carry, _ = self.theta.T
        rows = np.arange(n)
        jac_x = np.zeros((batch, states.shape[1], states.shape[1]))
        jac_x[:, rows, rows], jac_x[:, rows, n + rows] = 1.0 - gain, carry
        jac_x[:, n + rows, rows], jac_x[:, n + rows, n + rows] = -vel_gain, vel_carry
        # Inside its bounds an action moves its joints' targets; clipped, it does not.
        inside = (np.abs(actions) < 1.0)[:, self.actuator] * self.half  # [B, 24]
        jac_u = np.zeros((batch, states.shape[1], actions.shape[1]))
        jac_u[:, rows, self.actuator] = gain * inside
        jac_u[:, n + rows, self.actuator] = vel_gain * inside
        if self.distal_tendon:
            self._distal_rows(jac_x, jac_u, states[:, :n], next_q)
        through = jac_x[:, :n, :2 * n] - self.fingertip_lag * jac_x[:, n:2 * n, :2 * n]
        jac_x[:, 2 * n:, :2 * n] = jac_tips @ through
        jac_u[:, 2 * n:] = jac_tips @ (jac_u[:, :n] - self.fingertip_lag * jac_u[:, n:2 * n])
        return jac_x, jac_u

    def _distal_rows(self, jac_x, jac_u, q, next_q) -> None:
        """The distal joints' rows: J0 stays (d/dJ0 = 1) inside the tendon's band, follows TENDON_RATIO * J1'
        at its edge, and nothing at the joint's own limits; v0' = (J0' - J0) / dt."""
        n = NUM_JOINTS
        for distal, middle in zip(self.distal, self.middle):
            centre = TENDON_RATIO * next_q[:, middle]
            held = q[:, distal]
            edge = (held < centre - TENDON_SLACK) | (held > centre + TENDON_SLACK)
            moved = np.where(edge, np.clip(held, centre - TENDON_SLACK, centre + TENDON_SLACK), held)
            free = (moved > DISTAL_RANGE[0]) & (moved < DISTAL_RANGE[1])
            row_x = np.where((edge & free)[:, None], TENDON_RATIO * jac_x[:, middle], 0.0)
            row_u = np.where((edge & free)[:, None], TENDON_RATIO * jac_u[:, middle], 0.0)
            row_x[:, distal] += np.where(~edge & free, 1.0, 0.0)
            jac_x[:, distal], jac_u[:, distal] = row_x, row_u
            jac_x[:, n + distal] = row_x / self.dt
            jac_x[:, n + distal, distal] -= 1.0 / self.dt
            jac_u[:, n + distal] = row_u / self.dt
