"""The Shadow hand of gymnasium-robotics (MuJoCo), ROS-free: ``HandReach-v3`` and
``HandManipulateBlockRotateZ-v1``.

The state a driver publishes is what a real hand's stack gives: the 24 joint
positions and velocities (by name, without the model's ``robot0:`` prefix) and
the five fingertip positions (thumb last, in the world frame, as HandReach's
``achieved_goal``). Actions are the 20 actuators' normalised position targets in [-1, 1].

- ``reach``: the goal is five fingertip targets; an episode succeeds when the fingertips
  are within ``distance_threshold`` (1 cm, the norm over all 15 coordinates, as HandReach
  counts it) at its end.
- ``rotate``: a block lies in the palm. The state adds its pose (``block``: x, y, z in the
  world frame and the orientation quaternion w, x, y, z, as the environment's
  ``achieved_goal``) and velocity (``block_velocity``: MuJoCo's free-joint velocity, linear
  in the world frame, angular in the block's frame). The goal is a pose whose orientation is
  a rotation about z (its position is where the block was; the environment ignores it); an
  episode succeeds when the block's orientation is within ``rotation_threshold`` (0.1 rad)
  of it, as the environment counts it: the angle ``2 acos(w)`` of ``block * conj(goal)``,
  which tells a quaternion from its negative (``rotation_error``).

Nothing is rendered (``render_mode=None``), so no GL context is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_ros.robots.hand import FINGERTIPS

TASKS = {"reach": "HandReach-v3", "rotate": "HandManipulateBlockRotateZ-v1"}
# The environment's own test of a block still in the hand (MujocoManipulateEnv's is_on_palm): its centre above this.
ON_PALM_Z = 0.04


@dataclass
class HandStep:
    state: "HandState"
    goal_distance: float  # reach: m over the 15 fingertip coordinates; rotate: rad (rotation_error)
    success: bool
    done: bool


@dataclass
class HandState:
    positions: np.ndarray  # [24] rad
    velocities: np.ndarray  # [24] rad/s
    fingertips: np.ndarray  # [5, 3] m, world frame
    block: np.ndarray | None = None  # rotate: [7] x, y, z (m, world) and quaternion w, x, y, z
    block_velocity: np.ndarray | None = None  # rotate: [6] linear (m/s, world), angular (rad/s, block frame)


class HandSim:
    def __init__(self, task: str = "reach") -> None:
        if task not in TASKS:
            raise ValueError(f"sim_hand: parameter 'task' must be one of {sorted(TASKS)}, got {task!r}")
        self.task = task
        import gymnasium as gym
        import gymnasium_robotics
        import mujoco

        gym.register_envs(gymnasium_robotics)
        self.env = gym.make(TASKS[task])
        self.unwrapped = self.env.unwrapped
        self.dt = float(self.unwrapped.dt)
        self.max_episode_steps = int(self.env.spec.max_episode_steps)
        self.action_dim = int(self.env.action_space.shape[0])
        model = self.unwrapped.model
        joint_names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, i) for i in range(model.njnt)]
        # robot_get_obs (the observation's first 48 entries) reads the robot's joints in model order.
        self.joint_names = [n.split(":", 1)[1] for n in joint_names if n.startswith("robot")]
        self.actuator_names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_ACTUATOR, i).split(":", 1)[1]
                               for i in range(model.nu)]
        self.distance_threshold = float(self.unwrapped.distance_threshold)
        self.rotation_threshold = float(getattr(self.unwrapped, "rotation_threshold", np.nan))
        self._tip_site_ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"robot0:S_{tip}tip")
                              for tip in FINGERTIPS]
        self.goal = np.zeros((5, 3)) if task == "reach" else np.zeros(7)

    # --- the robot description, for the real hand's bridge and emulator -----------------
    def actuator_targets(self, action: np.ndarray) -> np.ndarray:
        """Normalised actions [-1, 1] -> the actuators' position targets (rad), as HandReach maps them."""
        low, high = self.unwrapped.model.actuator_ctrlrange.T
        return (low + high) / 2.0 + np.clip(action, -1.0, 1.0) * (high - low) / 2.0

    def actions_for(self, targets: np.ndarray) -> np.ndarray:
        """The inverse of ``actuator_targets``."""
        low, high = self.unwrapped.model.actuator_ctrlrange.T
        return np.clip((np.asarray(targets, float) - (low + high) / 2.0) / ((high - low) / 2.0), -1.0, 1.0)

    def fingertips_at(self, positions: np.ndarray) -> np.ndarray:
        """Forward kinematics: the five fingertip positions [5, 3] for joint positions [24] (own data, not the sim's)."""
        import mujoco

        model = self.unwrapped.model
        if not hasattr(self, "_kinematics"):
            self._kinematics = mujoco.MjData(model)
            self._qpos_index = [model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"robot0:{n}")]
                                for n in self.joint_names]
        self._kinematics.qpos[self._qpos_index] = positions
        mujoco.mj_kinematics(model, self._kinematics)
        return self._kinematics.site_xpos[self._tip_site_ids].copy()

    def reset(self, seed: int | None = None) -> HandState:
        obs, _ = self.env.reset(seed=seed)
        self.goal = obs["desired_goal"].reshape(self.goal.shape).copy()
        return self._state(obs)

    def step(self, action: np.ndarray) -> HandStep:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, _reward, terminated, truncated, info = self.env.step(action)
        state = self._state(obs)
        # Success is the environment's own verdict (HandReach: distance under 1 cm; the block: orientation within
        # 0.1 rad); the time limit is the driver's (max_episode_steps), not gymnasium's TimeLimit.
        return HandStep(state, self.goal_distance(state), bool(info["is_success"]), bool(terminated))

    def goal_distance(self, state: HandState) -> float:
        """reach: the fingertips' distance to their targets (m); rotate: the block's ``rotation_error`` (rad)."""
        if self.task == "rotate":
            return rotation_error(state.block[3:], self.goal[3:])
        return float(np.linalg.norm(state.fingertips - self.goal))

    @staticmethod
    def block_twist(state: HandState) -> tuple[np.ndarray, np.ndarray]:
        """rotate: the block's linear and angular velocity, both in the block's own frame (as nav_msgs/Odometry
        has its twist); MuJoCo gives the linear one in the world frame."""
        import mujoco

        inverse, linear = np.zeros(4), np.zeros(3)
        mujoco.mju_negQuat(inverse, state.block[3:])
        mujoco.mju_rotVecQuat(linear, state.block_velocity[:3], inverse)
        return linear, state.block_velocity[3:].copy()

    def block_dropped(self, state: HandState) -> bool:
        """rotate: the block has left the palm (the environment's own test, ``ON_PALM_Z``)."""
        return bool(state.block is not None and state.block[2] <= ON_PALM_Z)

    def _state(self, obs: dict) -> HandState:
        n = len(self.joint_names)
        o = obs["observation"]
        if self.task == "reach":
            return HandState(o[:n].copy(), o[n:2 * n].copy(), obs["achieved_goal"].reshape(5, 3).copy())
        # HandManipulate's observation: joints, joint velocities, the block's velocity [6], its pose [7]
        # (= achieved_goal); the fingertips are the sites of the environment's own data after the step.
        return HandState(o[:n].copy(), o[n:2 * n].copy(), self.unwrapped.data.site_xpos[self._tip_site_ids].copy(),
                         block=obs["achieved_goal"].copy(), block_velocity=o[2 * n:2 * n + 6].copy())

    def close(self) -> None:
        self.env.close()


def rotation_error(quaternion, goal) -> float:
    """HandManipulate's rotation distance (rad) between two unit quaternions (w, x, y, z): ``2 acos(w)`` of
    ``quaternion * conj(goal)``, in [0, 2 pi]. As the environment counts it, a quaternion and its negative (the
    same orientation) are 2 pi apart: its success needs the block's own quaternion near the goal's."""
    from gymnasium_robotics.utils import rotations  # what the environment computes it with

    difference = rotations.quat_mul(np.asarray(quaternion, float), rotations.quat_conjugate(np.asarray(goal, float)))
    return float(2.0 * np.arccos(np.clip(difference[0], -1.0, 1.0)))
