"""The car: a car-like robot, driven by ``u_accel`` and steered by ``u_steer`` (both in [-1, 1]).

State ``[x, y, yaw, v, steer]`` (m, m, rad, m/s, rad) from odometry and the
commands sent (``estimator``), or per task (the config's ``state_names``) with the
twist's lateral velocity and yaw rate appended, ``[..., v_y, yaw_rate]`` (m/s,
rad/s): the race's slipping car needs them, parking's kinematic car does not; physics prior: the kinematic bicycle
(``bicycle``, identified by ``sysid``); stop: brake to a standstill (``stop``); cost terms: ``goal_pose`` with
highway-env's parking reward (``costs``); ROS side: odometry, goal pose and
path (``messages``). Drivers: ``sim_car``, ``real_car``, ``car_emulator``
(``mbrl_ros_hardware.car``); config: ``config/car.yaml`` and ``car_<task>.yaml``.
"""

from __future__ import annotations

from typing import Any, Mapping

from mbrl_ros.io.config import derived
from mbrl_ros.robots.car.estimator import STATE_LAYOUTS, STATE_NAMES, STEER_COMMAND
from mbrl_ros.robots.robot import Robot

__all__ = ["ROBOT", "Car"]


class Car(Robot):
    name = "car"
    state_names = STATE_NAMES
    state_units = ("m", "m", "rad", "m/s", "rad")
    action_names = ("u_accel", STEER_COMMAND)
    action_units = ("1", "1")
    angle_dims = (2,)

    def physics_prior(self, options: dict, where: str):
        """The kinematic bicycle: ``params`` (BicycleParams), ``dt``, ``substeps``, ``speed_input``, ``learnable``,
        ``lateral_states`` (true: the state with ``v_y`` and ``yaw_rate`` appended), ``steer_rate_limit`` (rad/s,
        the steering servo's known slew rate, 0: none)."""
        from mbrl_ros.core.models import check_keys
        from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle

        options = dict(options)
        check_keys(options, {"params", "dt", "substeps", "speed_input", "learnable", "lateral_states",
                             "steer_rate_limit"}, where)
        params = BicycleParams.from_dict(options.pop("params", {}) or {}, source=f"{where}.params")
        return KinematicBicycle(params, **options)

    def identify(self, model, states, actions, next_states):
        """The bicycle's parameters by least squares (``sysid.identify_bicycle``), starting from ``model``'s,
        at its ``dt``, ``substeps`` and ``speed_input``. With lateral states the fit reads the kinematic
        columns only: the bicycle's v_y and yaw rate follow from them, and a slipping car's differ."""
        from mbrl_ros.robots.car.sysid import identify_bicycle  # casadi: loaded only to fit

        kinematic = len(STATE_NAMES)
        return identify_bicycle(states[:, :kinematic], actions, next_states[:, :kinematic], dt=model.dt,
                                substeps=model.substeps, speed_input=model.speed_input, initial=model.params,
                                lateral_states=model.lateral_states, steer_rate_limit=model.steer_rate_limit)

    def cost_terms(self) -> dict:
        from mbrl_ros.robots.car.costs import CarGoalPoseTerm

        return {CarGoalPoseTerm.kind: CarGoalPoseTerm}

    def success_criteria(self) -> dict:
        """``parked``: the parking task's, highway-env's ``is_success`` (``costs.parked``) at some state of the
        episode before the car first touches a wall (``costs.crashed``), the goal its ``goal`` context:
        parking-v0 ends an episode at the first of either, so an episode that parks first succeeds whatever
        would follow, and one that crashes first fails (on a model, which knows no walls, the car would drive
        on through the wall and could still park)."""
        from mbrl_ros.robots.car.costs import crashed, parked

        def episode_parked(states, contexts):
            hit = crashed(states).cumsum(-1) > 0  # at or after the first state at a wall
            return (parked(states, None if contexts is None else contexts[:, None]) & ~hit).any(-1)

        return {"parked": episode_parked}

    def stop(self, params: Mapping[str, Any], source: str):
        """Brake to a standstill at ``stop_deceleration`` and hold it (``stop.CarStop``)."""
        from mbrl_ros.robots.car.stop import CarStop

        state_names, action_names = list(params["state_names"]), list(params["action_names"])
        if "v" not in state_names or "u_accel" not in action_names:
            raise ValueError(f"{source}: the car's stop needs 'v' in parameter 'state_names' {state_names} and "
                             f"'u_accel' in 'action_names' {action_names}")
        if params.get("max_accel"):  # the real car's bridge maps u_accel with this gain: one gain, or the stop lies
            derived(params["max_accel"], params["accel_per_unit"], "accel_per_unit", "max_accel", source)
        try:
            return CarStop(state_names.index("v"), action_names.index("u_accel"), len(action_names),
                           params["accel_per_unit"], params["stop_deceleration"], params["dt"])
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    def check_estimated_states(self, params: Mapping[str, Any], source: str) -> None:
        """The car's estimator produces the kinematic state or, per task, the one with v_y and yaw_rate."""
        if tuple(params["state_names"]) not in STATE_LAYOUTS:
            raise ValueError(f"{source}: parameter 'state_names' is {list(params['state_names'])}, but the "
                             f"car's estimator produces one of {[list(layout) for layout in STATE_LAYOUTS]}")

    def estimator(self, params: Mapping[str, Any], source: str):
        from mbrl_ros.robots.car.estimator import CarStateEstimator, EstimatorConfig

        self.check_estimated_states(params, source)
        if STEER_COMMAND not in params["action_names"]:
            raise ValueError(f"{source}: parameter 'action_names' {list(params['action_names'])} has no "
                             f"'{STEER_COMMAND}'")
        if params.get("max_steer"):  # the real car's bridge maps u_steer with this gain: one gain, or angles lie
            derived(params["max_steer"], params["steer_gain"], "steer_gain", "max_steer", source)
        config = EstimatorConfig.from_dict(
            {k: params[k] for k in ("steer_gain", "steer_lag", "steer_rate_limit", "dt", "speed_filter_alpha",
                                    "resync_after")}, source=source)
        return CarStateEstimator(config, tuple(params["state_names"]), bool(params.get("wait_for_command", False)))


ROBOT = Car()
