"""The Shadow hand of gymnasium-robotics (MuJoCo), ROS-free: ``HandReach-v3``.

The state a driver publishes is what a real hand's stack gives: the 24 joint
positions and velocities (by name, without the model's ``robot0:`` prefix) and
the five fingertip positions (thumb last, in the world frame, as HandReach's
``achieved_goal``). The goal is five fingertip targets; an episode succeeds
when the fingertips are within ``distance_threshold`` (1 cm, the norm over
all 15 coordinates, as HandReach counts it) at its end. Actions are the 20
actuators' normalised position targets in [-1, 1].

Nothing is rendered (``render_mode=None``), so no GL context is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_ros.robots.hand import FINGERTIPS

TASKS = {"reach": "HandReach-v3"}


@dataclass
class HandStep:
    state: "HandState"
    goal_distance: float
    success: bool
    done: bool


@dataclass
class HandState:
    positions: np.ndarray  # [24] rad
    velocities: np.ndarray  # [24] rad/s
    fingertips: np.ndarray  # [5, 3] m, world frame


class HandSim:
    def __init__(self, task: str = "reach") -> None:
        if task not in TASKS:
            raise ValueError(f"sim_hand: task must be one of {sorted(TASKS)}, got {task!r}")
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
        self.goal = np.zeros((5, 3))

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
            self._tip_sites = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f"robot0:S_{tip}tip")
                               for tip in FINGERTIPS]
        self._kinematics.qpos[self._qpos_index] = positions
        mujoco.mj_kinematics(model, self._kinematics)
        return self._kinematics.site_xpos[self._tip_sites].copy()

    def reset(self, seed: int | None = None) -> HandState:
        obs, _ = self.env.reset(seed=seed)
        self.goal = obs["desired_goal"].reshape(5, 3).copy()
        return self._state(obs)

    def step(self, action: np.ndarray) -> HandStep:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        obs, _reward, terminated, truncated, info = self.env.step(action)
        distance = float(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]))
        # Success is the environment's own verdict (HandReach: distance under 1 cm); the time limit is the
        # driver's (max_episode_steps), not gymnasium's TimeLimit.
        return HandStep(self._state(obs), distance, bool(info["is_success"]), bool(terminated))

    def goal_distance(self, state: HandState) -> float:
        return float(np.linalg.norm(state.fingertips - self.goal))

    def _state(self, obs: dict) -> HandState:
        n = len(self.joint_names)
        o = obs["observation"]
        return HandState(o[:n].copy(), o[n:2 * n].copy(), obs["achieved_goal"].reshape(5, 3).copy())

    def close(self) -> None:
        self.env.close()
