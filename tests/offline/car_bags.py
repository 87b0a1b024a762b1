"""Bags of simulated car driving, written without ROS, for the offline tests.

The parking simulator driven by the controller's exploration policy, written
as the data_logger would: a
StateVector per step and the CommandVector that answers it, with the same header
stamp, on the stack's topic names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros_hardware.car.parking import ParkingSim
from mbrl_ros.io.bags import COMMAND_TYPE, EPISODES_TYPE, STATE_TYPE, default_typestore
from mbrl_ros.io.recording import BagRecorder, bag_qos
from mbrl_ros.ros_env import REPO_ROOT

DT_NS = 200_000_000
STATE_NAMES = ["x", "y", "yaw", "v", "steer"]
ACTION_NAMES = ["u_accel", "u_steer"]


def _stamped(store, typename: str, stamp_ns: int, names, values) -> bytes:
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id="map")
    fields = dict(header=header, names=list(names), values=np.asarray(values, dtype=np.float64))
    if typename == STATE_TYPE:
        fields.update(valid=True, reason="")
    return bytes(store.serialize_cdr(store.types[typename](**fields), typename))


def explore(transitions: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Episodes of random driving as (visited states [T+1, 5], actions [T, 2]); crashes end them uncounted."""
    sim = ParkingSim()
    policy = ExplorationPolicy(-np.ones(2), np.ones(2), 0.8, seed)
    episodes, total = [], 0
    while total < transitions:
        states, actions = [sim.reset(seed=seed + len(episodes))], []
        policy.reset()
        while total + len(actions) < transitions:
            action = policy()
            step = sim.step(action)
            if step.crashed:
                break  # a collision is not the car's dynamics
            states.append(step.state)
            actions.append(action)
            if step.done:
                break
        total += len(actions)
        episodes.append((np.array(states), np.array(actions).reshape(-1, 2)))
    return [e for e in episodes if len(e[1])]


def episode_report(store, episode: int, start_ns: int, end_ns: int) -> bytes:
    """A sim/episodes message as the simulated drivers publish it (mbrl_ros_hardware.sim_driver)."""
    types = store.types
    values = {"episode": episode, "success": False, "start_stamp_ns": start_ns, "end_stamp_ns": end_ns}
    status = types["diagnostic_msgs/msg/DiagnosticStatus"](
        level=1, name=f"episode {episode}", message="time limit", hardware_id="",
        values=[types["diagnostic_msgs/msg/KeyValue"](key=k, value=str(v)) for k, v in values.items()])
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=end_ns // 10**9, nanosec=end_ns % 10**9), frame_id="")
    message = types[EPISODES_TYPE](header=header, status=[status])
    return bytes(store.serialize_cdr(message, EPISODES_TYPE))


def write_vector_bag(path: Path, episodes, state_names, action_names, *, namespace: str = "/car",
                     dt_ns: int = DT_NS, topics=("state", "hw/command"), gap_ns: int = 10 * 10**9,
                     reports: bool = False) -> Path:
    """Episodes ``(states [T+1, nx], actions [T, nu])`` as the stack logs them, ``gap_ns`` apart.

    ``reports``: each episode's end also reported on ``sim/episodes``, as the simulated drivers do.
    """
    store = default_typestore()
    with BagRecorder(path, typestore=store) as bag:
        for topic, typename in (("state", STATE_TYPE), ("hw/command", COMMAND_TYPE)):
            if topic in topics:
                bag.add_topic(f"{namespace}/{topic}", typename,
                              bag_qos(reliable=topic != "state", transient_local=False))
        if reports:
            bag.add_topic(f"{namespace}/sim/episodes", EPISODES_TYPE, bag_qos(reliable=True, transient_local=True))
        stamp = 10**9
        for episode, (states, actions) in enumerate(episodes):
            start = stamp
            for k, state in enumerate(states):
                if "state" in topics:
                    bag.write(f"{namespace}/state", stamp + 1_000,
                              _stamped(store, STATE_TYPE, stamp, state_names, state))
                if "hw/command" in topics and k < len(actions):
                    bag.write(f"{namespace}/hw/command", stamp + 2_000,
                              _stamped(store, COMMAND_TYPE, stamp, action_names, actions[k]))
                stamp += dt_ns
            if reports:  # the states stamped in [start, end) are the episode's
                bag.write(f"{namespace}/sim/episodes", stamp + 3_000, episode_report(store, episode, start, stamp))
            stamp += gap_ns
    return path


def write_car_bag(path: Path, transitions: int, seed: int = 0, topics=("state", "hw/command")) -> Path:
    """A bag of ``transitions`` simulated parking steps."""
    return write_vector_bag(path, explore(transitions, seed), STATE_NAMES, ACTION_NAMES, topics=topics)


def quick_config(folder: Path, epochs: int = 8) -> Path:
    """The repository's config with few training epochs (edited as text: a YAML round trip unquotes "y")."""
    shutil.copytree(REPO_ROOT / "config", folder)
    for robot, configured in (("car", "epochs: 200"), ("hand", "epochs: 100")):
        path = folder / f"{robot}.yaml"
        text = path.read_text()
        assert configured in text, f"config/{robot}.yaml no longer has '{configured}'"
        path.write_text(text.replace(configured, f"epochs: {epochs}"))
    return folder
