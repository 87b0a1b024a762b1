"""Bags of any robot to transitions: the per-robot mapping, column decoding, and clear errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from rosbags.rosbag2 import Writer

from mbrl_ros.io.bags import (
    STORAGES,
    BagError,
    default_typestore,
    load_transitions,
    mapping_from_config,
)
from mbrl_ros.io.cdr_columns import ColumnReader, walk
from mbrl_ros.io.config import ConfigError, node_parameters
from mbrl_ros.io.ros_types import mbrl_typestore

ODOM = "nav_msgs/msg/Odometry"
DRIVE = "ackermann_msgs/msg/AckermannDriveStamped"
JOINTS = "sensor_msgs/msg/JointState"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
T0 = 1_700_000_000 * 10**9  # wall-clock stamps, as a real robot's driver gives

# An F1TENTH-style car logged by its vendor driver: raw odometry and Ackermann drive commands.
CAR_MAPPING = {
    "state": {
        "topic": "odom", "type": ODOM,
        "fields": {
            "x": "pose.pose.position.x",
            "y": {"field": "pose.pose.position.y"},
            "yaw": {"field": "pose.pose.orientation", "convert": "yaw"},
            "v": {"field": "twist.twist.linear.x", "scale": 3.6},  # m/s -> km/h: the scale is applied
        },
    },
    "command": {
        "topic": "drive", "type": DRIVE, "match": "latest",
        "fields": {"u_speed": "drive.speed", "u_steer": "drive.steering_angle"},
    },
}
# A hand: joint states by joint name (recorded in another order), commands as trajectories.
HAND_JOINTS = ["FFJ1", "FFJ2", "THJ1"]
HAND_MAPPING = {
    "state": {
        "topic": "hw/joint_states", "type": JOINTS,
        "fields": {**{f"q_{j}": f"position[{j}]" for j in HAND_JOINTS}, **{f"dq_{j}": f"velocity[{j}]" for j in HAND_JOINTS}},
    },
    "command": {
        "topic": "hw/joint_command", "type": TRAJECTORY,
        "fields": {f"u_{j}": f"points[0].positions[{j}]" for j in HAND_JOINTS},
    },
}


@pytest.fixture(scope="module")
def store():
    return default_typestore()


def make(store, typename: str, **fields):
    return store.types[typename](**fields)


def header(store, stamp_ns: int, frame: str = "odom"):
    return make(store, "std_msgs/msg/Header",
                stamp=make(store, "builtin_interfaces/msg/Time", sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                frame_id=frame)


def vec3(store, x=0.0, y=0.0, z=0.0):
    return make(store, "geometry_msgs/msg/Vector3", x=x, y=y, z=z)


def odometry(store, stamp_ns, x, y, yaw, v, frame="odom"):
    pose = make(store, "geometry_msgs/msg/Pose", position=make(store, "geometry_msgs/msg/Point", x=x, y=y, z=0.0),
                orientation=make(store, "geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=np.sin(yaw / 2), w=np.cos(yaw / 2)))
    twist = make(store, "geometry_msgs/msg/Twist", linear=vec3(store, v), angular=vec3(store))
    return make(store, ODOM, header=header(store, stamp_ns, frame), child_frame_id="base_link",
                pose=make(store, "geometry_msgs/msg/PoseWithCovariance", pose=pose, covariance=np.zeros(36)),
                twist=make(store, "geometry_msgs/msg/TwistWithCovariance", twist=twist, covariance=np.zeros(36)))


def drive(store, stamp_ns, speed, steer):
    return make(store, DRIVE, header=header(store, stamp_ns, "base_link"),
                drive=make(store, "ackermann_msgs/msg/AckermannDrive", steering_angle=steer, steering_angle_velocity=0.0,
                           speed=speed, acceleration=0.0, jerk=0.0))


def joint_state(store, stamp_ns, names, position, velocity):
    return make(store, JOINTS, header=header(store, stamp_ns, ""), name=list(names),
                position=np.asarray(position, float), velocity=np.asarray(velocity, float), effort=np.zeros(0))


def trajectory(store, stamp_ns, names, positions):
    point = make(store, "trajectory_msgs/msg/JointTrajectoryPoint", positions=np.asarray(positions, float),
                 velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                 time_from_start=make(store, "builtin_interfaces/msg/Duration", sec=0, nanosec=100_000_000))
    return make(store, TRAJECTORY, header=header(store, stamp_ns, ""), joint_names=list(names), points=[point])


def write_bag(store, path, messages, storage="mcap"):
    """``messages``: (topic, type, log_ns, msg) in any order; written by rosbags' Writer like any bag."""
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        connections = {}
        for topic, typename, log_ns, msg in sorted(messages, key=lambda m: m[2]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, typename, typestore=store)
            writer.write(connections[topic], log_ns, bytes(store.serialize_cdr(msg, typename)))
    return path


def tree_digest(path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*")):
        digest.update(str(file.relative_to(path)).encode())
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()


# ---- the car from its vendor driver's topics ----------------------------------------------------------
def car_run(store, n_odom=101, odom_hz=50, drive_hz=20, drive_lead_ns=3_000_000):
    """A car driving a circle: odometry at 50 Hz, drive commands at 20 Hz on their own clock."""
    period = 10**9 // odom_hz
    messages, truth = [], []
    for k in range(n_odom):
        t = T0 + k * period
        yaw = ((0.4 * k / odom_hz + np.pi) % (2 * np.pi)) - np.pi
        state = (np.cos(0.1 * k), np.sin(0.1 * k), yaw, 1.0 + 0.01 * k)
        truth.append((t, state))
        messages.append(("/vehicle/odom", ODOM, t + 1_000_000, odometry(store, t, *state)))
    commands = []
    for k in range(n_odom * drive_hz // odom_hz + 1):
        t = T0 + k * (10**9 // drive_hz) - drive_lead_ns
        commands.append((t, (0.5 + 0.1 * k, -0.2 + 0.01 * k)))
        messages.append(("/vehicle/drive", DRIVE, t, drive(store, t, *commands[-1][1])))
    return messages, truth, commands


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_car_from_odometry_and_ackermann_drive(store, tmp_path, storage):
    messages, truth, commands = car_run(store)
    bag = write_bag(store, tmp_path / "f1tenth", messages, storage)
    report = {}
    data = load_transitions(bag, CAR_MAPPING, dt=0.1, state_names=["x", "y", "yaw", "v"], report=report)
    # 50 Hz odometry read every dt = 0.1 s: states 0, 5, 10, ... in one episode.
    used = list(range(0, 96, 5))
    assert len(data) == len(used) and report["episodes"] == 1 and report["states_within_a_step"] > 0
    expected = np.array([truth[k][1] for k in used], dtype=float)
    expected[:, 3] *= 3.6
    np.testing.assert_allclose(data.states.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.next_states.numpy()[:-1], expected[1:], rtol=1e-5, atol=1e-5)
    # The command applied over each step: the latest drive stamped at or before the state.
    command_stamps = np.array([t for t, _ in commands])
    latest = [commands[np.searchsorted(command_stamps, truth[k][0], side="right") - 1][1] for k in used]
    np.testing.assert_allclose(data.actions.numpy(), np.array(latest), rtol=1e-6)


def test_car_commands_older_than_max_age_are_not_applied(store, tmp_path):
    messages, _, _ = car_run(store, drive_hz=2)  # a command every 0.5 s: most states have a stale one
    bag = write_bag(store, tmp_path / "slow", messages)
    report = {}
    mapping = {**CAR_MAPPING, "command": {**CAR_MAPPING["command"], "max_command_age": 0.05}}
    data = load_transitions(bag, mapping, dt=0.1, state_names=["x", "y", "yaw", "v"], report=report)
    assert report["states_without_command"] > 0 and len(data) < 20


# ---- the hand: joint states by name, trajectory commands ----------------------------------------------
def test_hand_joint_states_by_name_and_trajectory_commands(store, tmp_path):
    recorded_order = ["THJ1", "FFJ1", "WRJ1", "FFJ2"]  # the driver's order, with a joint the model ignores
    messages = []
    for k in range(30):
        t = T0 + k * 50_000_000
        q = {j: 0.01 * k * (i + 1) for i, j in enumerate(recorded_order)}
        messages.append(("/hand/hw/joint_states", JOINTS, t + 10,
                         joint_state(store, t, recorded_order, [q[j] for j in recorded_order], [-q[j] for j in recorded_order])))
        if k != 12:  # one state goes unanswered: the episode ends there
            command_order = list(reversed(HAND_JOINTS))
            messages.append(("/hand/hw/joint_command", TRAJECTORY, t + 20,
                             trajectory(store, t, command_order, [k + 0.1 * i for i, _ in enumerate(command_order)])))
    bag = write_bag(store, tmp_path / "hand", messages)
    names = [f"q_{j}" for j in HAND_JOINTS] + [f"dq_{j}" for j in HAND_JOINTS]
    actions = [f"u_{j}" for j in HAND_JOINTS]
    report = {}
    data = load_transitions(bag, HAND_MAPPING, dt=0.05, state_names=names, action_names=actions,
                            namespace="/hand", report=report)
    assert report["episodes"] == 2 and len(data) == 28 and report["states_without_command"] == 1
    k = 3
    index = {j: i + 1 for i, j in enumerate(recorded_order)}
    q = [0.01 * k * index[j] for j in HAND_JOINTS]
    np.testing.assert_allclose(data.states[k].numpy(), q + [-v for v in q], rtol=1e-6)
    # Commands were sent in reversed joint order; the mapping picks them by name.
    np.testing.assert_allclose(data.actions[k].numpy(), [k + 0.2, k + 0.1, k + 0.0], rtol=1e-6)


# ---- the car's own config ----------------------------------------------------------------------------
def test_car_config_mapping_reads_the_stacks_bags(store, tmp_path):
    config = node_parameters("config/car.yaml", "trainer")
    mapping = mapping_from_config(config["transitions"], "config/car.yaml: transitions",
                                  config["state_names"], config["action_names"])
    assert mapping.state.topic == "state" and mapping.match == "exact"
    StateVector, CommandVector = (store.types[f"mbrl_interfaces/msg/{t}"] for t in ("StateVector", "CommandVector"))
    messages = []
    for k in range(6):
        t = T0 + k * 200_000_000
        messages.append(("/car/state", "mbrl_interfaces/msg/StateVector", t + 1, StateVector(
            header=header(store, t), names=list(config["state_names"]), values=np.arange(5.0) + k, valid=True, reason="")))
        messages.append(("/car/hw/command", "mbrl_interfaces/msg/CommandVector", t + 2, CommandVector(
            header=header(store, t), names=list(config["action_names"]), values=np.array([k, -k], float))))
    data = load_transitions(write_bag(store, tmp_path / "bag", messages), mapping, dt=0.2, namespace="/car")
    assert len(data) == 5
    np.testing.assert_allclose(data.actions[:, 1].numpy(), [0, -1, -2, -3, -4])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("command"), r"key 'command' must be a mapping"),
        (lambda m: m["state"].update(type="Odometry"), r"key 'state.type' must be a full type name"),
        (lambda m: m["state"]["fields"]["yaw"].update(convert="roll"), r"key 'state.fields.yaw.convert'"),
        (lambda m: m["state"]["fields"]["v"].update(scale=0), r"key 'state.fields.v.scale'"),
        (lambda m: m["state"]["fields"].pop("v"), r"key 'state.fields' maps .* but not \['v'\]"),
        (lambda m: m["command"].update(match="nearest"), r"key 'command.match' must be one of"),
        (lambda m: m["state"].update(topics="x"), r"unknown keys \['state.topics'\]"),
    ],
)
def test_config_errors_name_the_source_and_key(change, message):
    import copy

    mapping = copy.deepcopy(CAR_MAPPING)
    change(mapping)
    with pytest.raises(ConfigError, match=r"^config/robot.yaml: transitions: " + message):
        mapping_from_config(mapping, "config/robot.yaml: transitions", state_names=["x", "y", "yaw", "v"])


# ---- errors name the bag, the topic and the field; reading never writes -------------------------------
def test_bag_errors_name_bag_topic_and_field(store, tmp_path):
    messages, _, _ = car_run(store, n_odom=20)
    bag = write_bag(store, tmp_path / "car", messages)
    before = tree_digest(bag)
    names = ["x", "y", "yaw", "v"]

    wrong_field = {**CAR_MAPPING, "state": {**CAR_MAPPING["state"], "fields": {**CAR_MAPPING["state"]["fields"],
                                                                                "x": "pose.pose.positon.x"}}}
    with pytest.raises(BagError, match=rf"^{bag}: topic '/vehicle/odom' \({ODOM}\): .*field 'pose.pose.positon.x' "
                                       r"is not a number in the message \(numbers: header.stamp.sec"):
        load_transitions(bag, wrong_field, 0.1, state_names=names)

    missing = {**CAR_MAPPING, "command": {**CAR_MAPPING["command"], "topic": "cmd_vel"}}
    with pytest.raises(BagError, match=rf"^{bag}: no topic 'cmd_vel' in the bag \(topics: \['/vehicle/drive', '/vehicle/odom'\]\)"):
        load_transitions(bag, missing, 0.1, state_names=names)

    wrong_type = {**CAR_MAPPING, "command": {**CAR_MAPPING["command"], "type": "mbrl_interfaces/msg/CommandVector"}}
    with pytest.raises(BagError, match=rf"^{bag}: topic '/vehicle/drive' has type {DRIVE}, expected mbrl_interfaces/msg/CommandVector"):
        load_transitions(bag, wrong_type, 0.1, state_names=names)

    by_name = {**CAR_MAPPING, "state": {"topic": "odom", "type": ODOM}}
    with pytest.raises(BagError, match=rf"^{bag}: topic '/vehicle/odom' .*no names array.*give the topic's fields"):
        load_transitions(bag, by_name, 0.1)

    # A corrupt storage file under an intact metadata.yaml: named, and left as it was.
    corrupt = tmp_path / "corrupt"
    write_bag(store, corrupt, messages, "sqlite3")
    db = next(corrupt.glob("*.db3"))
    db.write_bytes(b"SQLite format 3\0" + b"\x13" * 4000)
    corrupt_before = tree_digest(corrupt)
    with pytest.raises(BagError, match=rf"^{corrupt}: cannot read"):
        load_transitions(corrupt, CAR_MAPPING, 0.1, state_names=names)
    assert tree_digest(corrupt) == corrupt_before and tree_digest(bag) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["car", "corrupt"]  # nothing new written anywhere


def test_unknown_type_is_taken_from_the_bags_definition(tmp_path):
    """A bag of a type this install lacks reads when the bag carries its definition (MCAP schemas)."""
    writer_store = default_typestore()
    messages, _, commands = car_run(writer_store, n_odom=30)
    bag = write_bag(writer_store, tmp_path / "car", messages)
    from rosbags.typesys import Stores, get_typestore

    bare = get_typestore(Stores.ROS2_JAZZY)  # no ackermann_msgs
    assert DRIVE not in bare.fielddefs
    data = load_transitions(bag, CAR_MAPPING, 0.1, state_names=["x", "y", "yaw", "v"], typestore=bare)
    full = load_transitions(bag, CAR_MAPPING, 0.1, state_names=["x", "y", "yaw", "v"])
    assert len(data) == len(full) > 0
    np.testing.assert_array_equal(data.actions.numpy(), full.actions.numpy())
    np.testing.assert_allclose(data.actions[0].numpy(), commands[0][1], rtol=1e-6)
    # The bag's definitions go into a typestore of that bag: the caller's is left as it was.
    assert DRIVE not in bare.fielddefs


# ---- column decoding agrees with rosbags' deserializer ------------------------------------------------
def leaves(msg, prefix=""):
    """Every numeric leaf of a rosbags message object, by concrete path."""
    out = {}
    for name in getattr(msg, "__dataclass_fields__", {}):
        value = getattr(msg, name)
        path = prefix + name
        if hasattr(value, "__dataclass_fields__"):
            out.update(leaves(value, path + "."))
        elif isinstance(value, np.ndarray):
            out.update({f"{path}[{k}]": v for k, v in enumerate(value.tolist())})
        elif isinstance(value, list):
            for k, item in enumerate(value):
                if hasattr(item, "__dataclass_fields__"):
                    out.update(leaves(item, f"{path}[{k}]."))
        elif isinstance(value, (bool, int, float)):
            out[path] = value
    return out


def test_columns_equal_rosbags_deserialize_on_mixed_layouts():
    store = mbrl_typestore()
    rng = np.random.default_rng(0)
    cases = {
        ODOM: [odometry(store, T0 + k, *rng.normal(size=4), frame="odom" if k % 3 else "map_frame") for k in range(20)],
        DRIVE: [drive(store, T0 + k, *rng.normal(size=2)) for k in range(10)],
        JOINTS: [joint_state(store, T0 + k, ["a", "bb", "c"][: 1 + k % 3], rng.normal(size=1 + k % 3),
                             rng.normal(size=1 + k % 3)) for k in range(15)],
        TRAJECTORY: [trajectory(store, T0 + k, ["j1", "j2"], rng.normal(size=2)) for k in range(5)],
        "mbrl_interfaces/msg/StateVector": [
            store.types["mbrl_interfaces/msg/StateVector"](header=header(store, T0 + k), names=["x", "y"],
                                                            values=rng.normal(size=2), valid=bool(k % 2),
                                                            reason="" if k % 2 else "stale input")
            for k in range(12)
        ],
    }
    for typename, messages in cases.items():
        raws = [bytes(store.serialize_cdr(m, typename)) for m in messages]
        lengths = np.array([len(r) for r in raws])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        buffer = np.frombuffer(b"".join(raws), dtype=np.uint8)
        expected = [leaves(store.deserialize_cdr(r, typename)) for r in raws]
        # Paths present in every message (sequences vary in length across the JointStates).
        common = sorted(set.intersection(*(set(e) for e in expected)))
        assert common, typename
        reader = ColumnReader(store, typename)
        columns = reader.read(buffer, offsets, lengths, common)
        for path in common:
            np.testing.assert_array_equal(columns[path], np.array([e[path] for e in expected]).astype(columns[path].dtype),
                                          err_msg=f"{typename} {path}")
        assert set(walk(raws[0], typename, store).numbers) == set(expected[0]), typename
    assert reader.layouts_seen == 2  # the StateVectors: two layouts (valid with empty reason, invalid with one)
