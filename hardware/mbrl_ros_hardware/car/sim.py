"""sim_car: the simulated car as a ROS 2 hardware driver.

The only node that knows the simulator. It publishes what a real car's driver
would (``hw/odom``, nav_msgs/Odometry) and takes ``hw/command``
(mbrl_interfaces/CommandVector ``[u_accel, u_steer]``), plus the task: the goal
pose (parking) or the reference path (race), latched.

Lockstep or real time, episodes and their reports on ``sim/episodes``: see
``mbrl_ros_hardware.sim_driver``. A car episode's report adds the final pose
(never published as odometry: the next episode starts at once), the final
distance to the goal, and on the race track the cross-track error, the laps
driven (``race_laps`` of them end the episode, a success) and their times. The
race car's odometry carries the whole twist (longitudinal and lateral velocity,
yaw rate): a slipping car's dynamics depend on them.
"""

from __future__ import annotations

import sys

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path

from mbrl_ros.robots.car.stop import held_stop
from mbrl_ros.ros.poses import goal_pose, odometry, path
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.qos import LATCHED, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.car.parking import EPISODE_STEPS as PARKING_EPISODE_STEPS
from mbrl_ros_hardware.sim_driver import SimDriverNode

PARAMS = [
    Param("task", "parking", "simulated task: 'parking' (highway-env parking-v0) or 'race' (single-track car on a track)", read_only=True),
    Param("race_laps", 3, "race: laps that end an episode with success", (1, 1000), read_only=True),
    Param("race_model", "st", "race: the car's dynamics, commonroad's single-track model 'st' (linear tyres, no "
          "friction limit) or its drift model 'std' (Pacejka tyres that saturate at the road's grip)", read_only=True),
    Param("race_start_speeds", [5.0, 5.0], "race: [low, high] m/s; each episode before the evaluated ones "
          "(exploration, learning) starts at a speed drawn from it by its seed, the evaluated ones at 5 m/s",
          read_only=True),
]
# The time limit of an episode when max_episode_steps is 0: parking 20 s, race 120 s (3 laps of the
# 246 m track at a mean 6.1 m/s).
TASK_EPISODE_STEPS = {"parking": PARKING_EPISODE_STEPS, "race": 2400}


class SimCarNode(SimDriverNode):
    def __init__(self) -> None:
        super().__init__("sim_car", PARAMS)
        self.odom_pub = self.create_publisher(Odometry, "hw/odom", SENSOR)
        self.goal_pub = self.create_publisher(PoseStamped, "goal_pose", LATCHED)
        self.path_pub = self.create_publisher(Path, "reference_path", LATCHED)
        self.cross_track_errors: list[float] = []

    def make_sim(self):
        task = self.p["task"]
        if task not in TASK_EPISODE_STEPS:
            raise ValueError(f"sim_car: parameter 'task' must be 'parking' or 'race', got {task!r}")
        steps = self.p["max_episode_steps"] or TASK_EPISODE_STEPS[task]
        if task == "parking":
            from mbrl_ros_hardware.car.parking import ParkingSim

            return ParkingSim(max_episode_steps=steps)
        from mbrl_ros_hardware.car.race import RaceSim

        from mbrl_ros_hardware.car.race import MODELS

        low, high = self.p["race_start_speeds"]
        if not 2.0 <= low <= high <= 25.0:
            raise ValueError(f"sim_car: parameter 'race_start_speeds' must be [low, high] with 2 <= low <= high "
                             f"<= 25 m/s (the car's speed range), got {self.p['race_start_speeds']}")
        if self.p["race_model"] not in MODELS:
            raise ValueError(f"sim_car: parameter 'race_model' must be one of {MODELS}, got {self.p['race_model']!r}")
        return RaceSim(episode_steps=steps, laps=self.p["race_laps"], model=self.p["race_model"])

    def reset_sim(self, evaluated: bool):
        low, high = self.p["race_start_speeds"]
        if self.p["task"] != "race" or evaluated:
            return super().reset_sim(evaluated)
        # Random driving from 5 m/s tops out near 11 m/s on the race car, below the grip limit of its turns
        # (about 14 m/s): a faster start lets exploration slide where the kinematic prior is wrong.
        speed = np.random.default_rng([self.seed, 1]).uniform(low, high)
        return self.sim.reset(seed=self.seed, speed=float(speed))

    def hold_stop(self, stop: np.ndarray) -> np.ndarray:
        return held_stop(float(self.state[3]), stop, self.sim.accel_per_unit, self.sim.dt)

    def lockstep_stop(self, stop: np.ndarray) -> np.ndarray:
        """Braking from the simulated car's own speed, as in real time. The controller's stop brakes from the
        speed it measured, the same step when it has a state; one sent before any state (a controller started
        or respawned while the car moves, its estimator not up) has no speed and says zero acceleration, on
        which the car coasted for as long as those stops came (tests/ros/test_car_stop_before_any_state.py)."""
        return self.hold_stop(stop)

    def default_episode_steps(self) -> int:
        return TASK_EPISODE_STEPS[self.p["task"]]

    # --- episodes -------------------------------------------------------
    def observe_step(self, step) -> None:
        if hasattr(step, "cross_track_error"):
            self.cross_track_errors.append(float(step.cross_track_error))

    def episode_result(self) -> dict:
        x, y, yaw = (float(v) for v in self.state[:3])
        result = {"final_x": x, "final_y": y, "final_yaw": yaw,
                  "final_position_error_m": float(np.hypot(x - self.goal[0], y - self.goal[1]))
                  if self.goal is not None else float("nan")}
        if self.cross_track_errors:
            result["mean_cross_track_error_m"] = float(np.mean(self.cross_track_errors))
            result["max_cross_track_error_m"] = float(np.max(self.cross_track_errors))
            laps = self.sim.lap_counter
            result["laps"] = laps.laps
            # JSON-ish numbers the report's reader parses back ("nan": no lap completed).
            result["mean_lap_time_s"] = float(np.mean(laps.lap_times)) if laps.lap_times else float("nan")
            result["best_lap_time_s"] = float(np.min(laps.lap_times)) if laps.lap_times else float("nan")
        self.cross_track_errors = []
        return result

    # --- publishing -----------------------------------------------------
    def publish_state(self, stamp: Time) -> None:
        x, y, yaw, v, _steer = self.state
        # The race car's whole twist; parking's highway-env car is kinematic and reports its speed only.
        v, lateral, yaw_rate = getattr(self.sim, "twist", (v, 0.0, 0.0))
        self.odom_pub.publish(odometry(stamp, self.p["frame_id"], "base_link", x, y, yaw, v, yaw_rate,
                                       lateral_speed=lateral))

    def publish_task(self, stamp: Time) -> None:
        self.goal = getattr(self.sim, "goal", None)
        if self.goal is not None:
            self.goal_pub.publish(goal_pose(stamp, self.p["frame_id"], *self.goal[:3]))
        path_points = getattr(self.sim, "path", None)
        if path_points is not None:
            self.path_pub.publish(path(stamp, self.p["frame_id"], path_points))


def main(args: list[str] | None = None) -> int:
    return run_node(SimCarNode, "sim_car", args)


if __name__ == "__main__":
    sys.exit(main())
