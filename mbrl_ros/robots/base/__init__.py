"""The base: a differential-drive mobile base (TurtleBot, Clearpath Jackal/Husky), driven by ``cmd_vel``.

State ``[x, y, yaw, v, w]`` (m, m, rad, m/s, rad/s) from odometry alone
(``estimator``); action ``[linear_x, angular_z]``, the commanded twist (m/s,
rad/s); physics prior: a unicycle whose motors lag the command (``unicycle``,
identified by ``sysid``); cost terms: the core's ``goal_pose``, ``obstacles``
and ``path_tracking`` (the obstacles arrive on the ``obstacles`` topic,
``messages``); stop: the twist ramped down to zero within the base's
acceleration limits (``stop``). Drivers: ``sim_base`` (ir-sim plus
motor lag and slip), ``real_base``, ``base_emulator`` (``mbrl_ros_hardware.base``);
config: ``config/base.yaml`` and ``base_<task>.yaml``.

To add a robot, copy this folder and ``hardware/mbrl_ros_hardware/base/``
(README: "Adding a robot").
"""

from __future__ import annotations

from typing import Any, Mapping

from mbrl_ros.robots.base.estimator import STATE_NAMES
from mbrl_ros.robots.robot import Robot

__all__ = ["ROBOT", "Base"]


class Base(Robot):
    name = "base"
    state_names = STATE_NAMES
    state_units = ("m", "m", "rad", "m/s", "rad/s")
    action_names = ("linear_x", "angular_z")
    action_units = ("m/s", "rad/s")
    angle_dims = (2,)

    def physics_prior(self, options: dict, where: str):
        """The lagged unicycle: ``params`` (UnicycleParams), ``dt``, ``substeps``, ``learnable``."""
        from mbrl_ros.core.models import check_keys
        from mbrl_ros.robots.base.unicycle import LaggedUnicycle, UnicycleParams

        options = dict(options)
        check_keys(options, {"params", "dt", "substeps", "learnable"}, where)
        params = UnicycleParams.from_dict(options.pop("params", {}) or {}, source=f"{where}.params")
        return LaggedUnicycle(params, **options)

    def identify(self, model, states, actions, next_states):
        from mbrl_ros.robots.base.sysid import identify_unicycle  # casadi: loaded only to fit

        return identify_unicycle(states, actions, next_states, dt=model.dt, substeps=model.substeps,
                                 initial=model.params)

    def stop(self, params: Mapping[str, Any], source: str):
        """Ramp the twist down to zero within ``max_accel`` and ``max_yaw_accel``, then hold it (``stop.BaseStop``)."""
        from mbrl_ros.robots.base.stop import BaseStop

        state_names, action_names = list(params["state_names"]), list(params["action_names"])
        if not {"v", "w"} <= set(state_names) or not set(self.action_names) <= set(action_names):
            raise ValueError(f"{source}: the base's stop needs 'v' and 'w' in parameter 'state_names' {state_names} "
                             f"and {list(self.action_names)} in 'action_names' {action_names}")
        try:
            return BaseStop((state_names.index("v"), state_names.index("w")),
                            tuple(action_names.index(n) for n in self.action_names), len(action_names),
                            params["max_accel"], params["max_yaw_accel"], params["dt"])
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    def estimator(self, params: Mapping[str, Any], source: str):
        from mbrl_ros.robots.base.estimator import BaseStateEstimator

        self.check_estimated_states(params, source)
        return BaseStateEstimator(params["velocity_filter_alpha"], params["resync_after"])


ROBOT = Base()
