"""Bags as the upstream ``ros2 bag`` of Foxy, Galactic, Humble and Jazzy wrote them: every message counted and read.

Issue 9: bags of earlier releases were reported as empty by ``bag info --count``
(rosbags' Reader yields nothing where metadata.yaml and the storage disagree on
a topic's QoS), and bags of types not built in here failed outright. The
fixtures (``upstream_bags``) are built from the formats' definitions; each
test first shows that rosbags' Reader gets the fixture wrong, then that ours
gets it right.
"""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import get_types_from_msg

from mbrl_ros.cli import main
from mbrl_ros.io.bag_tools import bag_info
from mbrl_ros.io.bags import COMMAND_TYPE, STATE_TYPE, BagError, default_typestore, load_transitions, stack_mapping
from mbrl_ros.io.ros_types import FROM_BAG, UNKNOWN, mbrl_typestore
from upstream_bags import QOS_FOXY, QOS_GALACTIC, topics_of, write_mcap_bag, write_sqlite_bag
from mbrl_ros.ros_env import free_domain_id

T0 = 1_700_000_000 * 10**9
STEPS = 30
DT = 0.1
STACK_TOPICS = {"/car/state": STATE_TYPE, "/car/hw/command": COMMAND_TYPE}

# A robot's own messages, and rosbag2's test messages: in no typestore here.
CUSTOM_DEFINITIONS = {
    "my_robot_msgs/msg/WheelSpeeds": "string[] names\nfloat64[] speeds\n",
    "my_robot_msgs/msg/WheelOdometry": "std_msgs/Header header\nmy_robot_msgs/WheelSpeeds wheels\nfloat64 yaw_rate\n",
    "my_robot_msgs/msg/DriveCommand": "std_msgs/Header header\nfloat32 speed\nfloat32 steer\n",
    "test_msgs/msg/BasicTypes": "".join(
        f"{t} {t}_value\n" for t in ("bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16",
                                     "uint16", "int32", "uint32", "int64", "uint64")),
}
CUSTOM_TOPICS = {"/robot/wheel_odom": "my_robot_msgs/msg/WheelOdometry", "/robot/drive": "my_robot_msgs/msg/DriveCommand",
                 "/test/basic": "test_msgs/msg/BasicTypes", "/robot/state": STATE_TYPE}
CUSTOM_MAPPING = {
    "state": {"topic": "wheel_odom", "type": "my_robot_msgs/msg/WheelOdometry",
              "fields": {"v_left": "wheels.speeds[left]", "v_right": "wheels.speeds[right]", "yaw_rate": "yaw_rate"}},
    "command": {"topic": "drive", "type": "my_robot_msgs/msg/DriveCommand",
                "fields": {"u_speed": "speed", "u_steer": "steer"}},
}
# (metadata version, distro, storage): what each release's `ros2 bag record` wrote.
OLD_RELEASES = [(4, "foxy", "sqlite3"), (5, "galactic", "sqlite3"), (5, "galactic", "mcap"),
                (5, "humble", "sqlite3"), (5, "humble", "mcap")]


@pytest.fixture
def cli(capsys):
    """``mbrl-ros ARGS`` through the command line's entry point: (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def header(store, t: int):
    Time = store.types["builtin_interfaces/msg/Time"]
    return store.types["std_msgs/msg/Header"](stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="base")


def stack_messages(store) -> list[tuple[str, int, bytes]]:
    out = []
    for k in range(STEPS):
        t = T0 + k * 200_000_000
        state = store.types[STATE_TYPE](header=header(store, t), names=["x", "y", "yaw", "v", "steer"],
                                        values=np.array([0.1 * k, 0.0, 0.0, 1.0, 0.0]), valid=True, reason="")
        command = store.types[COMMAND_TYPE](header=header(store, t), names=["u_accel", "u_steer"],
                                            values=np.array([np.sin(k), 0.1]))
        out.append(("/car/state", t + 1_000_000, bytes(store.serialize_cdr(state, STATE_TYPE))))
        out.append(("/car/hw/command", t + 3_000_000, bytes(store.serialize_cdr(command, COMMAND_TYPE))))
    return out


@pytest.fixture(scope="module")
def custom_store():
    """The writer's typestore: this stack's types plus the robot's and test_msgs."""
    store = mbrl_typestore()
    for typename, text in CUSTOM_DEFINITIONS.items():
        store.register(get_types_from_msg(text, typename))
    return store


def custom_messages(store) -> list[tuple[str, int, bytes]]:
    T = store.types
    out = []
    for k in range(STEPS):
        t = T0 + k * 100_000_000
        speeds = T["my_robot_msgs/msg/WheelSpeeds"](names=["right", "left"], speeds=np.array([1.0 + k, 2.0 + k]))
        odom = T["my_robot_msgs/msg/WheelOdometry"](header=header(store, t), wheels=speeds, yaw_rate=0.01 * k)
        drive = T["my_robot_msgs/msg/DriveCommand"](header=header(store, t), speed=0.5 * k, steer=-0.25)
        basic = T["test_msgs/msg/BasicTypes"](**{f"{n}_value": v for n, v in (
            ("bool", True), ("byte", 1), ("char", 2), ("float32", 0.5), ("float64", k), ("int8", -1), ("uint8", 1),
            ("int16", -2), ("uint16", 2), ("int32", -3), ("uint32", 3), ("int64", -4), ("uint64", 4))})
        state = T[STATE_TYPE](header=header(store, t), names=["x"], values=np.array([float(k)]), valid=True, reason="")
        for topic, msg in (("/robot/wheel_odom", odom), ("/robot/drive", drive), ("/test/basic", basic),
                           ("/robot/state", state)):
            out.append((topic, t + 1_000_000, bytes(store.serialize_cdr(msg, CUSTOM_TOPICS[topic]))))
    return out


def write(storage: str, path, version, topics, messages, distro=None):
    if storage == "mcap":
        return write_mcap_bag(path, version, topics, messages, n_files=2, distro=distro)
    return write_sqlite_bag(path, version, topics, messages, distro=distro)


def rosbags_yields(bag) -> int | str:
    """How many messages rosbags' Reader yields for ``bag`` (or the error it raises)."""
    try:
        with Reader(bag) as reader:
            return sum(1 for _ in reader.messages())
    except Exception as error:  # its own errors, and KeyError on what it does not expect
        return f"{type(error).__name__}: {error}"


# ---- QoS in metadata.yaml unlike the storage's ---------------------------------------------------
@pytest.mark.parametrize("version, distro, storage", OLD_RELEASES)
def test_old_bags_whose_metadata_qos_differs_are_read_in_full(cli, tmp_path, version, distro, storage):
    """metadata.yaml lists a second publisher's profile that the storage's QoS string lacks (and Foxy's
    storage has Fast DDS's infinite durations where metadata.yaml has RMW's): rosbags' Reader pairs
    the two by QoS and yields nothing; every message is counted and read here."""
    store = default_typestore()
    messages = stack_messages(store)
    storage_qos = QOS_FOXY if version == 4 else QOS_GALACTIC
    second = QOS_GALACTIC.replace("reliability: 1", "reliability: 2")  # a best-effort publisher
    topics = topics_of(store, STACK_TOPICS, definitions=storage == "mcap")
    for topic in topics:
        topic.qos = storage_qos
        topic.metadata_qos = QOS_GALACTIC + "\n" + second
    bag = write(storage, tmp_path / f"rosbag2_{distro}", version, topics, messages, distro)
    assert rosbags_yields(bag) == 0  # what the issue reports: "empty bag"

    code, out, err = cli("bag", "info", str(bag), "--count")
    assert code == 0, out + err
    assert f"messages:  {2 * STEPS} (read and decoded)" in out and "empty bag" not in out
    info = bag_info(bag, count=True)
    assert [(t.name, t.count, t.decoded) for t in info.topics] == [("/car/hw/command", STEPS, STEPS),
                                                                  ("/car/state", STEPS, STEPS)]
    assert info.duration_s == pytest.approx((STEPS - 1) * 0.2 + 0.002)
    data = load_transitions(bag, stack_mapping(), 0.2)
    assert len(data) == STEPS - 1
    np.testing.assert_allclose(data.actions[:, 0].numpy(), np.sin(np.arange(STEPS - 1)))


def test_partial_qos_profile_as_rosbag2_py_users_write_it(tmp_path):
    """rosbag2_py's TopicMetadata takes any QoS string (ros2/rosbag2#1420); rosbags cannot open such a bag."""
    store = default_typestore()
    partial = "- reliability: reliable\n  durability: volatile\n  history: keep_last\n  depth: 100"
    topics = topics_of(store, STACK_TOPICS, definitions=False)
    for topic in topics:
        topic.qos = partial
    bag = write_sqlite_bag(tmp_path / "bag", 5, topics, stack_messages(store), distro="humble")
    assert "deadline" in str(rosbags_yields(bag))
    assert [t.count for t in bag_info(bag, count=True).topics] == [STEPS, STEPS]
    assert len(load_transitions(bag, stack_mapping(), 0.2)) == STEPS - 1


# ---- types not built in ------------------------------------------------------------------------------
@pytest.mark.parametrize("version, distro, storage", [(9, "jazzy", "sqlite3"), (8, "jazzy", "mcap"),
                                                      (7, "iron", "sqlite3"), (5, "humble", "mcap")])
def test_custom_types_are_decoded_from_the_bags_definitions(cli, custom_store, tmp_path, version, distro, storage):
    messages = custom_messages(custom_store)
    bag = write(storage, tmp_path / "bag", version, topics_of(custom_store, CUSTOM_TOPICS), messages, distro)
    assert "my_robot_msgs/msg/WheelOdometry" not in default_typestore().fielddefs

    code, out, err = cli("bag", "info", str(bag), "--count")
    assert code == 0, out + err
    assert f"messages:  {4 * STEPS} (read and decoded)" in out and "decode)" not in out
    info = bag_info(bag, count=True)
    assert {t.name: (t.count, t.decoded) for t in info.topics} == {name: (STEPS, STEPS) for name in CUSTOM_TOPICS}
    assert {t.name: t.decoding for t in info.topics if t.name != "/robot/state"} == {
        name: FROM_BAG for name in CUSTOM_TOPICS if name != "/robot/state"}
    assert not info.problems

    data = load_transitions(bag, CUSTOM_MAPPING, DT)
    k = np.arange(STEPS - 1)
    assert len(data) == STEPS - 1
    # by name, whatever the order in the message: "left" is the second speed
    np.testing.assert_allclose(data.states.numpy(), np.stack([2.0 + k, 1.0 + k, 0.01 * k], axis=1))
    np.testing.assert_allclose(data.actions.numpy(), np.stack([0.5 * k, np.full(STEPS - 1, -0.25)], axis=1))


@pytest.mark.parametrize("version, distro, storage", [(4, "foxy", "sqlite3"), (5, "humble", "sqlite3"),
                                                      (9, "jazzy", "sqlite3"), (9, "jazzy", "mcap")])
def test_custom_types_without_definitions_are_counted_not_decoded(cli, custom_store, tmp_path, version, distro,
                                                                   storage):
    """Foxy..Humble sqlite3 bags carry no definitions; Jazzy writes encoding 'unknown' for a type it had
    none of (rosbags' Reader raises KeyError on that)."""
    messages = custom_messages(custom_store)
    topics = topics_of(custom_store, CUSTOM_TOPICS, definitions=False)
    bag = write(storage, tmp_path / "bag", version, topics, messages, distro)
    if version == 9:
        assert str(rosbags_yields(bag)).startswith("KeyError")

    info = bag_info(bag, count=True)
    assert {t.name: t.count for t in info.topics} == {name: STEPS for name in CUSTOM_TOPICS}
    custom = {t.name: (t.decoded, t.decoding) for t in info.topics if t.name != "/robot/state"}
    assert custom == {name: (None, UNKNOWN) for name in CUSTOM_TOPICS if name != "/robot/state"}
    assert [t.decoded for t in info.topics if t.name == "/robot/state"] == [STEPS]  # built in: decoded
    assert not info.problems
    code, out, err = cli("bag", "info", str(bag), "--count")
    assert code == 0, out + err
    assert f"/robot/wheel_odom  {STEPS:>9}  my_robot_msgs/msg/WheelOdometry  (not decodable: unknown type)" in out, out

    with pytest.raises(BagError, match=rf"^{bag}: topic '/robot/wheel_odom' has type my_robot_msgs/msg/WheelOdometry, "
                                       "which is neither defined in the bag nor built in here"):
        load_transitions(bag, CUSTOM_MAPPING, DT)


def test_the_bags_own_definition_wins_over_the_built_in_one(tmp_path):
    """A StateVector recorded by an older release of this stack (float32 values, no 'reason'): read by the
    definition in the bag; without one, the built-in definition cannot read it."""
    from rosbags.typesys import Stores, get_typestore

    old = get_typestore(Stores.ROS2_JAZZY)
    old.register(get_types_from_msg("std_msgs/Header header\nstring[] names\nfloat32[] values\nbool valid\n",
                                    STATE_TYPE))
    old.register(get_types_from_msg(mbrl_typestore().generate_msgdef(COMMAND_TYPE, ros_version=2)[0], COMMAND_TYPE))
    messages = []
    for k in range(STEPS):
        t = T0 + k * 200_000_000
        state = old.types[STATE_TYPE](header=header(old, t), names=["x", "v"],
                                      values=np.array([0.5 * k, 1.5], dtype=np.float32), valid=True)
        command = old.types[COMMAND_TYPE](header=header(old, t), names=["u"], values=np.array([float(k)]))
        messages.append(("/car/state", t + 1, bytes(old.serialize_cdr(state, STATE_TYPE))))
        messages.append(("/car/hw/command", t + 2, bytes(old.serialize_cdr(command, COMMAND_TYPE))))
    with_definitions = write_mcap_bag(tmp_path / "jazzy", 9, topics_of(old, STACK_TOPICS), messages)
    data = load_transitions(with_definitions, stack_mapping(), 0.2)
    np.testing.assert_allclose(data.states.numpy(), np.stack([0.5 * np.arange(STEPS - 1), np.full(STEPS - 1, 1.5)], 1))

    without = write_sqlite_bag(tmp_path / "humble", 5, topics_of(old, STACK_TOPICS, definitions=False), messages,
                               distro="humble")
    with pytest.raises(BagError, match=rf"^{without}: topic '/car/state' \({STATE_TYPE}\): no message can be read, "
                                       "e.g. message 0: "):
        load_transitions(without, stack_mapping(), 0.2)


# ---- mbrl-ros replay ---------------------------------------------------------------------------------------------
def test_replay_publishes_every_message_of_a_bag_whose_metadata_qos_differs(tmp_path, request):
    """Issue 9: replay read through rosbags' Reader, which yields nothing for such a bag: it published nothing."""
    import os
    import subprocess
    import sys
    import time
    
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    from upstream_bags import Topic

    messages = [("/chatter", T0 + k * 50_000_000, serialize_message(String(data=f"message {k}"))) for k in range(10)]
    topic = Topic("/chatter", "std_msgs/msg/String", qos=QOS_GALACTIC,
                  metadata_qos=QOS_GALACTIC + "\n" + QOS_GALACTIC.replace("reliability: 1", "reliability: 2"))
    bag = write_sqlite_bag(tmp_path / "rosbag2_galactic", 5, [topic], messages, distro="galactic")
    assert rosbags_yields(bag) == 0

    domain = free_domain_id(request.node.nodeid)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("replay_listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = []
    node.create_subscription(String, "/chatter", lambda m: received.append(m.data), 100)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "replay", str(bag), "--wait-for-subscribers", "1"],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while (proc.poll() is None or len(received) < 10) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert proc.returncode == 0, out + err
    assert "published 10 messages" in out, out
    assert received == [f"message {k}" for k in range(10)]
