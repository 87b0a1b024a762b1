"""sim_hand: the simulated Shadow hand (gymnasium-robotics, MuJoCo) as a ROS 2 hardware driver.

Publishes what a real hand's driver stack would: ``hw/joint_states``
(sensor_msgs/JointState: 24 joints by name, positions and velocities) and
``hw/fingertips`` (geometry_msgs/PoseArray: the five fingertip positions,
thumb last, same stamp as the joint states), plus the task's:

- ``reach`` (HandReach-v3): the fingertip targets on ``goal_fingertips`` (PoseArray, latched);
- ``rotate`` (HandManipulateBlockRotateZ-v1): the block's pose and twist on ``hw/block``
  (nav_msgs/Odometry, same stamp: position in ``frame_id``, orientation as MuJoCo's
  quaternion with its sign, twist in the block's frame ``block``) and its goal pose on
  ``goal_block_pose`` (geometry_msgs/PoseStamped, latched: a rotation about z; the position
  is where the block was, which the environment ignores). An episode's report adds the final
  ``final_rotation_error_rad`` (the environment's rotation distance) and ``block_dropped``.

Takes ``hw/command`` (mbrl_interfaces/CommandVector, the 20 actuators' normalised targets).
Lockstep or real time, episodes and reports: see ``mbrl_ros_hardware.sim_driver``.
"""

from __future__ import annotations

import os
import sys

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseArray, PoseStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import JointState

from mbrl_ros.robots.hand.messages import block_odometry, joint_state, pose_array, pose_stamped
from mbrl_ros.ros.params import Param
from mbrl_ros.ros.qos import LATCHED, SENSOR
from mbrl_ros.ros.run import run_node
from mbrl_ros_hardware.sim_driver import SimDriverNode

PARAMS = [Param("task", "reach", "simulated task: 'reach' (HandReach-v3) or 'rotate' "
                "(HandManipulateBlockRotateZ-v1)", read_only=True)]


class SimHandNode(SimDriverNode):
    reset_gap = 1.0  # s of sim time between episodes: the data path splits episodes there

    def __init__(self) -> None:
        super().__init__("sim_hand", PARAMS)
        self.joint_pub = self.create_publisher(JointState, "hw/joint_states", SENSOR)
        self.tips_pub = self.create_publisher(PoseArray, "hw/fingertips", SENSOR)
        if self.sim.task == "rotate":
            self.block_pub = self.create_publisher(Odometry, "hw/block", SENSOR)
            self.goal_pub = self.create_publisher(PoseStamped, "goal_block_pose", LATCHED)
        else:
            self.goal_pub = self.create_publisher(PoseArray, "goal_fingertips", LATCHED)

    def make_sim(self):
        os.environ.setdefault("MUJOCO_GL", "egl")  # nothing is rendered; never ask for a display
        from mbrl_ros_hardware.hand.shadow_hand import HandSim

        return HandSim(self.p["task"])

    def default_episode_steps(self) -> int:
        return self.sim.max_episode_steps

    def publish_state(self, stamp: Time) -> None:
        self.joint_pub.publish(joint_state(self.sim.joint_names, self.state.positions, self.state.velocities, stamp))
        self.tips_pub.publish(pose_array(self.state.fingertips, stamp, self.p["frame_id"]))
        if self.sim.task == "rotate":
            linear, angular = self.sim.block_twist(self.state)
            self.block_pub.publish(block_odometry(self.state.block, linear, angular, stamp, self.p["frame_id"]))

    def publish_task(self, stamp: Time) -> None:
        if self.sim.task == "rotate":
            self.goal_pub.publish(pose_stamped(self.sim.goal, stamp, self.p["frame_id"]))
        else:
            self.goal_pub.publish(pose_array(self.sim.goal, stamp, self.p["frame_id"]))

    def episode_result(self) -> dict:
        if self.sim.task == "rotate":
            return {"final_rotation_error_rad": round(self.sim.goal_distance(self.state), 5),
                    "block_dropped": self.sim.block_dropped(self.state)}
        return {"final_goal_distance_m": round(self.sim.goal_distance(self.state), 5)}


def main(args: list[str] | None = None) -> int:
    return run_node(SimHandNode, "sim_hand", args)


if __name__ == "__main__":
    sys.exit(main())
