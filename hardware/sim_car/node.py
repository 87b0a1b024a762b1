"""sim_car: the simulated car as a ROS 2 hardware driver.

The only node that knows the simulator. It publishes what a real car's driver
would (``hw/odom``, nav_msgs/Odometry) and takes ``hw/command``
(mbrl_interfaces/CommandVector ``[u_accel, u_steer]``), plus the task: the goal
pose (parking) or the reference path (race), latched.

Two clock modes:
- ``lockstep: true``: the node owns ``/clock``. It publishes a state, waits for
  the command that answers it (header stamp >= the state's), steps the
  simulator by ``dt`` and advances the clock. Deterministic, and as fast as the
  controller answers. While waiting it re-publishes the state, since the first
  messages after discovery can be lost.
- ``lockstep: false``: a wall-clock timer steps the simulator at ``1/dt`` with
  the latest command held (zero-order hold), like a real car.

Each finished episode (success, crash, or time limit) is reported on
``sim/episodes`` (diagnostic_msgs/DiagnosticArray) and the next one starts with
the next seed.
"""

from __future__ import annotations

import math
import sys

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.nodes.run import run_node
from mbrl_ros.nodes.params import Param, declare_all
from mbrl_ros.nodes.qos import COMMAND, LATCHED, SENSOR

PARAMS = [
    Param("task", "parking", "simulated task: 'parking' (highway-env parking-v0) or 'race' (single-track car on a track)", read_only=True),
    Param("lockstep", True, "step when a command arrives and publish /clock (true), or run in real time (false)", read_only=True),
    Param("seed", 0, "seed of the first episode; episode k uses seed + k", (0, 2**31 - 1), read_only=True),
    Param("episodes", 0, "stop after this many episodes (0: run forever)", (0, 1_000_000)),
    Param("max_episode_steps", 0, "time limit of an episode, in control steps (0: the task's own: parking 100 = 20 s, race 600 = 30 s)", (0, 100_000)),
    Param("frame_id", "map", "frame of the odometry and goal"),
    Param("republish_period", 0.2, "lockstep: wall seconds between re-publishing an unanswered state", (0.01, 5.0)),
]


TASK_EPISODE_STEPS = {"parking": 100, "race": 600}


def yaw_to_quaternion(yaw: float) -> tuple[float, float, float, float]:
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


class SimCarNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_car")
        self.p = declare_all(self, PARAMS)
        if self.p["task"] not in TASK_EPISODE_STEPS:
            raise ValueError(f"sim_car: parameter 'task' must be 'parking' or 'race', got {self.p['task']!r}")
        self.max_steps = self.p["max_episode_steps"] or TASK_EPISODE_STEPS[self.p["task"]]
        if self.p["task"] == "parking":
            from mbrl_ros_hardware.sim_car.parking import ParkingSim

            self.sim = ParkingSim(max_episode_steps=self.max_steps)
        else:
            from mbrl_ros_hardware.sim_car.race import RaceSim

            self.sim = RaceSim(episode_steps=self.max_steps)
        self.dt = self.sim.dt
        self.odom_pub = self.create_publisher(Odometry, "hw/odom", SENSOR)
        self.goal_pub = self.create_publisher(PoseStamped, "goal_pose", LATCHED)
        self.path_pub = self.create_publisher(Path, "reference_path", LATCHED)
        self.episode_pub = self.create_publisher(DiagnosticArray, "sim/episodes", LATCHED)
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        self.lockstep = bool(self.p["lockstep"])
        if self.lockstep:
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.sim_time_ns = 0
        self.episode = 0
        self.results: list[dict] = []
        self.last_action = np.zeros(2)
        self.finished = False
        self.start_episode()
        if self.lockstep:
            self.create_timer(self.p["republish_period"], self.publish_state)
        else:
            self.create_timer(self.dt, self.step_real_time)

    # --- episodes -------------------------------------------------------
    def start_episode(self) -> None:
        self.seed = self.p["seed"] + self.episode
        self.state = self.sim.reset(seed=self.seed)
        self.steps = 0
        self.cross_track_errors: list[float] = []
        self.episode_start_ns = self.stamp_ns()
        self.publish_task()
        self.publish_state()

    def finish_episode(self, success: bool, crashed: bool) -> None:
        result = {
            "episode": self.episode,
            "seed": self.seed,
            "success": success,
            "crashed": crashed,
            "steps": self.steps,
            "final_position_error_m": float(np.linalg.norm(self.state[:2] - self.goal[:2])) if self.goal is not None else float("nan"),
            # Odometry stamped in [start, end) belongs to this episode; the final pose is never
            # published as odometry (the next episode starts at once), so it is reported here.
            "start_stamp_ns": self.episode_start_ns,
            "end_stamp_ns": self.stamp_ns(),
            "final_x": float(self.state[0]),
            "final_y": float(self.state[1]),
            "final_yaw": float(self.state[2]),
        }
        if self.cross_track_errors:
            result["mean_cross_track_error_m"] = float(np.mean(self.cross_track_errors))
            result["max_cross_track_error_m"] = float(np.max(self.cross_track_errors))
        self.results.append(result)
        self.get_logger().info(f"episode {self.episode} done: {result}")
        array = DiagnosticArray()
        array.header.stamp = self.stamp()
        array.status = [
            DiagnosticStatus(
                level=DiagnosticStatus.OK if r["success"] else DiagnosticStatus.WARN,
                name=f"episode {r['episode']}",
                message="success" if r["success"] else ("crashed" if r["crashed"] else "time limit"),
                values=[KeyValue(key=k, value=str(v)) for k, v in r.items()],
            )
            for r in self.results
        ]
        self.episode_pub.publish(array)
        self.episode += 1
        if self.p["episodes"] and self.episode >= self.p["episodes"]:
            self.finished = True
            return
        self.start_episode()

    # --- stepping -------------------------------------------------------
    def on_command(self, msg: CommandVector) -> None:
        if self.finished:
            return
        values = np.asarray(msg.values, dtype=float)
        if values.shape != (2,) or not np.all(np.isfinite(values)):
            self.get_logger().warn(f"hw/command: expected 2 finite values [u_accel, u_steer], got {list(msg.values)}; ignored")
            return
        self.last_action = values
        if not self.lockstep:
            return
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if stamp_ns < self.sim_time_ns:
            return  # answers an older state; the controller will answer the current one
        self.advance(values)

    def step_real_time(self) -> None:
        if not self.finished:
            self.advance(self.last_action)

    def advance(self, action: np.ndarray) -> None:
        step = self.sim.step(action)
        self.state = step.state
        self.steps += 1
        if hasattr(step, "cross_track_error"):
            self.cross_track_errors.append(float(step.cross_track_error))
        self.sim_time_ns += int(round(self.dt * 1e9))
        crashed = bool(getattr(step, "crashed", False))
        over = step.done or self.steps >= self.max_steps
        # Parking succeeds at the goal; a race episode succeeds by staying on the track to the end.
        success = bool(step.success) if hasattr(step, "success") else (over and not crashed)
        if success or crashed or over:
            self.finish_episode(success, crashed)
        else:
            self.publish_state()

    # --- publishing -----------------------------------------------------
    def stamp_ns(self) -> int:
        stamp = self.stamp()
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    def stamp(self):
        if self.lockstep:
            from builtin_interfaces.msg import Time

            return Time(sec=self.sim_time_ns // 1_000_000_000, nanosec=self.sim_time_ns % 1_000_000_000)
        return self.get_clock().now().to_msg()

    def publish_state(self) -> None:
        if self.finished:
            return
        stamp = self.stamp()
        if self.lockstep:
            self.clock_pub.publish(Clock(clock=stamp))
        x, y, yaw, v, _steer = self.state
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id = self.p["frame_id"]
        odom.child_frame_id = "base_link"
        odom.pose.pose.position.x = float(x)
        odom.pose.pose.position.y = float(y)
        qx, qy, qz, qw = yaw_to_quaternion(float(yaw))
        odom.pose.pose.orientation.x, odom.pose.pose.orientation.y = qx, qy
        odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = qz, qw
        odom.twist.twist.linear.x = float(v)  # body frame, signed
        self.odom_pub.publish(odom)

    def publish_task(self) -> None:
        stamp = self.stamp()
        self.goal = getattr(self.sim, "goal", None)
        if self.goal is not None:
            goal = PoseStamped()
            goal.header.stamp = stamp
            goal.header.frame_id = self.p["frame_id"]
            goal.pose.position.x, goal.pose.position.y = float(self.goal[0]), float(self.goal[1])
            qx, qy, qz, qw = yaw_to_quaternion(float(self.goal[2]))
            goal.pose.orientation.z, goal.pose.orientation.w = qz, qw
            self.goal_pub.publish(goal)
        path_points = getattr(self.sim, "path", None)
        if path_points is not None:
            path = Path()
            path.header.stamp = stamp
            path.header.frame_id = self.p["frame_id"]
            for px, py in path_points:
                pose = PoseStamped()
                pose.header = path.header
                pose.pose.position.x, pose.pose.position.y = float(px), float(py)
                pose.pose.orientation.w = 1.0
                path.poses.append(pose)
            self.path_pub.publish(path)


def main(args: list[str] | None = None) -> int:
    return run_node(SimCarNode, "sim_car", args)


if __name__ == "__main__":
    sys.exit(main())
