"""The base's physics prior: a unicycle whose wheel motors follow ``cmd_vel`` with a first-order lag.

State ``[x, y, yaw, v, w]`` (m, m, rad, m/s, rad/s), action ``[linear_x, angular_z]``,
the commanded twist (m/s, rad/s). Parameters, identifiable from driving data:

- ``speed_gain``, ``yaw_rate_gain``: the speed and yaw rate the base settles at
  per unit commanded (1 for a calibrated base);
- ``lag``: the motors' first-order time constant (s); ``lag <= dt / substeps``
  means the command is reached in one substep.

What it leaves out on purpose (the simulator has them, ``mbrl_ros_hardware.base.world``):
acceleration limits, and slip of the yaw rate growing with speed (skid steering).
That is what a learned residual (model kind ``semiparametric``) or an ensemble adds.

One step of ``dt`` is ``substeps`` explicit Euler steps, written once for both
torch (planning, batched) and casadi (identification, ``identify``) through the
few functions it needs (``_step``), so the two cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from mbrl_ros.core.models.base import PhysicsModel

PARAM_NAMES = ("speed_gain", "yaw_rate_gain", "lag")


@dataclass
class UnicycleParams:
    speed_gain: float = 1.0
    yaw_rate_gain: float = 1.0
    lag: float = 0.0

    @classmethod
    def from_dict(cls, values: dict, source: str = "unicycle params") -> "UnicycleParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        params = cls(**{k: float(v) for k, v in values.items()})
        if not all(math.isfinite(v) for v in asdict(params).values()) or params.lag < 0:
            raise ValueError(f"{source}: need finite values and lag >= 0, got {params}")
        return params

    def as_dict(self) -> dict:
        return asdict(self)


def _step(state, action, theta, dt: float, substeps: int, cos, sin, clip_alpha):
    """One control period of the lagged unicycle; ``state``/``action``/``theta`` are sequences of
    torch tensors or casadi symbols, ``cos``/``sin``/``clip_alpha`` the matching functions."""
    x, y, yaw, v, w = state
    u_v, u_w = action
    speed_gain, yaw_rate_gain, lag = theta
    h = dt / substeps
    alpha = clip_alpha(h, lag)  # the fraction of the gap to the command closed per substep
    for _ in range(substeps):
        v = v + alpha * (speed_gain * u_v - v)
        w = w + alpha * (yaw_rate_gain * u_w - w)
        x = x + h * v * cos(yaw)
        y = y + h * v * sin(yaw)
        yaw = yaw + h * w
    return x, y, yaw, v, w


def _alpha_torch(h: float, lag: torch.Tensor) -> torch.Tensor:
    return torch.clamp(h / torch.clamp(lag, min=1e-6), max=1.0)


class LaggedUnicycle(PhysicsModel):
    """Batched lagged unicycle; parameters are buffers (or trainable with ``learnable=True``)."""

    robot = "base"

    def __init__(self, params: UnicycleParams | None = None, dt: float = 0.1, substeps: int = 2,
                 learnable: bool = False) -> None:
        super().__init__(state_dim=5, action_dim=2)
        if dt <= 0 or substeps < 1:
            raise ValueError(f"dt must be > 0 and substeps >= 1, got dt={dt}, substeps={substeps}")
        self.params = params or UnicycleParams()
        self.dt, self.substeps = float(dt), int(substeps)
        theta = torch.tensor([getattr(self.params, name) for name in PARAM_NAMES], dtype=torch.float32)
        if learnable:
            self.theta = torch.nn.Parameter(theta)
        else:
            self.register_buffer("theta", theta)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        out = _step(states.unbind(-1), actions.unbind(-1), self.theta.unbind(), self.dt, self.substeps,
                    torch.cos, torch.sin, _alpha_torch)
        return torch.stack(out, dim=-1)
