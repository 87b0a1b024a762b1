"""Bags of the stack: BagRecorder writes them, transitions_from_bags reads them back as episodes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.rosbag2 import Reader

from mbrl_ros.io.bags import (
    COMMAND_TYPE,
    STATE_TYPE,
    BagError,
    default_typestore,
    list_bags,
    transitions_from_bags,
)
from mbrl_ros.io.recording import BagRecorder, BagSequence, bag_qos

DT = 0.2
DT_NS = 200_000_000
T0 = 1_000 * 10**9  # stamps far from zero, as in a real-time run
STATE_NAMES = ["x", "y", "yaw", "v", "steer"]
ACTION_NAMES = ["u_accel", "u_steer"]


@pytest.fixture(scope="module")
def store():
    return default_typestore()


def header(store, stamp_ns: int):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="map")


def state_cdr(store, stamp_ns, values, valid=True, names=STATE_NAMES) -> bytes:
    msg = store.types[STATE_TYPE](
        header=header(store, stamp_ns), names=list(names), values=np.asarray(values, dtype=np.float64),
        valid=valid, reason="" if valid else "test: invalid",
    )
    return bytes(store.serialize_cdr(msg, STATE_TYPE))


def command_cdr(store, stamp_ns, values, names=ACTION_NAMES) -> bytes:
    msg = store.types[COMMAND_TYPE](
        header=header(store, stamp_ns), names=list(names), values=np.asarray(values, dtype=np.float64)
    )
    return bytes(store.serialize_cdr(msg, COMMAND_TYPE))


def state_at(k: int) -> list[float]:
    """A state that says which step it is: x = k."""
    return [float(k), 0.5 * k, 0.01 * k, 1.0, 0.0]


def action_at(k: int) -> list[float]:
    return [np.sin(k), np.cos(k)]


def record(store, path, steps, *, storage="mcap", ns="/car", state_names=STATE_NAMES):
    """Write a recording: ``steps`` of (k, stamp_ns, dict(valid=, command=, state=)) as the logger would."""
    with BagRecorder(path, storage=storage, typestore=store) as bag:
        bag.add_topic(f"{ns}/state", STATE_TYPE, bag_qos(reliable=False, transient_local=False, depth=5))
        bag.add_topic(f"{ns}/hw/command", COMMAND_TYPE, bag_qos(reliable=True, transient_local=False))
        for k, stamp, opts in steps:
            values = opts.get("state", state_at(k))
            if values is not None:
                names = state_names
                if names != STATE_NAMES:
                    values = [values[STATE_NAMES.index(n)] for n in names]
                bag.write(f"{ns}/state", stamp + 1_000_000, state_cdr(store, stamp, values, opts.get("valid", True), names))
            if opts.get("command", True):
                bag.write(f"{ns}/hw/command", stamp + 5_000_000, command_cdr(store, stamp, action_at(k)))
    return path


def run(n: int, start: int = 0, t0: int = T0, **per_step) -> list:
    """Steps start..start+n-1 stamped t0 + k dt; ``per_step[k]`` overrides step k's options."""
    return [(k, t0 + k * DT_NS, per_step.get(f"s{k}", {})) for k in range(start, start + n)]


def episodes_of(dataset) -> list[list[int]]:
    """Each episode as the step numbers (state x) of its transitions."""
    return [dataset.states[first:end, 0].round().int().tolist() for _, first, end in dataset.episodes()]


# ---- BagRecorder --------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_recorder_writes_a_complete_bag(store, tmp_path, storage):
    path = record(store, tmp_path / "bag", run(10), storage=storage)
    assert yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]["storage_identifier"] == storage
    with Reader(path) as reader:
        topics = {c.topic: c for c in reader.connections}
        assert {t: c.msgtype for t, c in topics.items()} == {"/car/state": STATE_TYPE, "/car/hw/command": COMMAND_TYPE}
        assert {t: c.msgcount for t, c in topics.items()} == {"/car/state": 10, "/car/hw/command": 10}
        state_qos = topics["/car/state"].ext.offered_qos_profiles[0]
        assert state_qos.reliability == QosReliability.BEST_EFFORT and state_qos.durability == QosDurability.VOLATILE
        logged = [t for _, t, _ in reader.messages(connections=[topics["/car/state"]])]
    assert logged == [T0 + k * DT_NS + 1_000_000 for k in range(10)]


def test_recorder_counts_and_errors(store, tmp_path):
    bag = BagRecorder(tmp_path / "b", typestore=store)
    bag.add_topic("/goal_pose", "geometry_msgs/msg/PoseStamped", bag_qos(reliable=True, transient_local=True))
    bag.add_topic("/goal_pose", "geometry_msgs/msg/PoseStamped")  # again: fine
    with pytest.raises(BagError, match="'/goal_pose' was added as geometry_msgs/msg/PoseStamped"):
        bag.add_topic("/goal_pose", STATE_TYPE)
    with pytest.raises(BagError, match="'/x'.*not in the bag's typestore"):
        bag.add_topic("/x", "no_pkg/msg/Nothing")
    with pytest.raises(BagError, match="'/state' was not added"):
        bag.write("/state", 0, b"")
    bag.close()
    bag.close()  # idempotent
    assert bag.closed and (tmp_path / "b" / "metadata.yaml").is_file()
    with pytest.raises(BagError, match="closed"):
        bag.write("/goal_pose", 0, b"")
    with pytest.raises(BagError, match="exists already"):
        BagRecorder(tmp_path / "b")
    with pytest.raises(BagError, match="storage must be one of"):
        BagRecorder(tmp_path / "c", storage="rosbag1")


def test_recorder_closes_on_exception(store, tmp_path):
    with pytest.raises(RuntimeError):
        with BagRecorder(tmp_path / "b", typestore=store) as bag:
            bag.add_topic("/car/state", STATE_TYPE)
            bag.write("/car/state", T0, state_cdr(store, T0, state_at(0)))
            raise RuntimeError("the node died")
    assert list_bags(tmp_path) == [tmp_path / "b"]


# ---- list_bags ----------------------------------------------------------------------------
def test_list_bags_complete_only_in_natural_order(store, tmp_path):
    for name in ("log_0002", "log_0010", "log_0001", "log_10000"):
        with BagRecorder(tmp_path / "run" / name, typestore=store) as bag:
            bag.add_topic("/s", STATE_TYPE)
    open_bag = BagRecorder(tmp_path / "run" / "log_10001", typestore=store)  # still recording
    (tmp_path / "run" / "notes").mkdir()
    assert [p.name for p in list_bags(tmp_path / "run")] == ["log_0001", "log_0002", "log_0010", "log_10000"]
    assert list_bags(tmp_path / "run" / "log_0002") == [tmp_path / "run" / "log_0002"]
    assert list_bags(tmp_path / "nowhere") == []
    open_bag.close()
    assert list_bags(tmp_path / "run")[-1].name == "log_10001"


# ---- transitions ----------------------------------------------------------------------------
def test_one_clean_episode(store, tmp_path):
    bag = record(store, tmp_path / "bag", run(12))
    report = {}
    data = transitions_from_bags([bag], "state", "hw/command", DT, report=report)
    assert len(data) == 11 and episodes_of(data) == [list(range(11))]
    np.testing.assert_allclose(data.states.numpy(), np.array([state_at(k) for k in range(11)]), rtol=1e-6)
    np.testing.assert_allclose(data.actions.numpy(), np.array([action_at(k) for k in range(11)]), rtol=1e-6)
    np.testing.assert_allclose(data.next_states.numpy(), np.array([state_at(k + 1) for k in range(11)]), rtol=1e-6)
    assert report["transitions"] == 11 and report["episodes"] == 1 and report["ended_next_state_missing"] == 1
    # Full names work too, and a bare path.
    assert len(transitions_from_bags(bag, "/car/state", "/car/hw/command", DT)) == 11


def test_episodes_split_at_gaps_invalid_late_states_and_resets(store, tmp_path):
    steps = run(
        30,
        s5=dict(state=None),  # a lost state: transition 4 has no next state
        s10=dict(valid=False),  # invalid: 9 -> 10 ends, 10 -> 11 has no valid start
        s15=dict(command=False),  # never answered: no transition from 15
        s24=dict(state=[100.0, 0.0, 0.0, 0.0, 0.0]),  # simulator reset: the car teleports
    )
    steps[20] = (20, steps[20][1] + 70_000_000, {})  # stamped 70 ms late: 19 -> 20 and 20 -> 21 are off
    # A re-sent state (same stamp, a lockstep re-publish): kept once.
    steps.insert(3, (2, T0 + 2 * DT_NS, dict(command=False)))
    report = {}
    data = transitions_from_bags(record(store, tmp_path / "bag", steps), "state", "hw/command", DT, report=report)
    assert episodes_of(data) == [[0, 1, 2, 3], [6, 7, 8], [11, 12, 13, 14], [16, 17, 18], [21, 22], [25, 26, 27, 28]]
    # The reset: 23 -> 24 is a jump; 24 (x = 100) -> 25 (x = 25) too.
    assert report["ended_jump"] == 2 and report["repeated_states"] == 1
    assert report["ended_next_state_invalid"] == 1 and report["invalid_states"] == 1
    assert report["ended_next_state_missing"] == 1 + 2 + 1  # 4 (lost 5), 19 and 20 (late 20), 29 (the last)


def test_episodes_continue_across_split_bags(store, tmp_path):
    steps = run(20)
    record(store, tmp_path / "log_0000", steps[:8])
    record(store, tmp_path / "log_0001", steps[8:])
    data = transitions_from_bags(list_bags(tmp_path), "state", "hw/command", DT)
    assert episodes_of(data) == [list(range(19))]


def test_restarted_clock_is_a_new_time_line(store, tmp_path):
    # Two simulator runs whose sim time both start at 0: equal stamps must not pair across runs.
    record(store, tmp_path / "a_0000", run(6, t0=0))
    record(store, tmp_path / "a_0001", [(k, (k - 50) * DT_NS, {}) for k in range(50, 56)])
    data = transitions_from_bags(list_bags(tmp_path), "state", "hw/command", DT)
    assert episodes_of(data) == [[0, 1, 2, 3, 4], [50, 51, 52, 53, 54]]


def test_columns_reordered_by_name(store, tmp_path):
    names = ["steer", "v", "yaw", "y", "x"]
    bag = record(store, tmp_path / "bag", run(4), state_names=names)
    data = transitions_from_bags(bag, "state", "hw/command", DT, state_names=STATE_NAMES)
    np.testing.assert_allclose(data.states[:, 0].numpy(), [0, 1, 2])
    as_recorded = transitions_from_bags(bag, "state", "hw/command", DT)
    np.testing.assert_allclose(as_recorded.states[:, 4].numpy(), [0, 1, 2])
    with pytest.raises(BagError, match=r"'/car/state'.*'values\[speed\]'.*no 'speed' in names \['steer'"):
        transitions_from_bags(bag, "state", "hw/command", DT, state_names=["x", "speed"])


# ---- errors ------------------------------------------------------------------------------------
def test_missing_topic_names_bag_and_topic(store, tmp_path):
    bag = record(store, tmp_path / "bag", run(3))
    with pytest.raises(BagError) as error:
        transitions_from_bags(bag, "estimated_state", "hw/command", DT)
    assert str(bag) in str(error.value) and "'estimated_state'" in str(error.value) and "/car/state" in str(error.value)


def test_wrong_type_names_bag_topic_and_types(store, tmp_path):
    bag = record(store, tmp_path / "bag", run(3))
    with pytest.raises(BagError) as error:
        transitions_from_bags(bag, "hw/command", "state", DT)
    message = str(error.value)
    assert str(bag) in message and "'/car/hw/command'" in message and STATE_TYPE in message and COMMAND_TYPE in message


def test_ambiguous_relative_topic(store, tmp_path):
    path = tmp_path / "bag"
    with BagRecorder(path, typestore=store) as bag:
        for ns in ("/car", "/car2"):
            bag.add_topic(f"{ns}/state", STATE_TYPE)
            bag.add_topic(f"{ns}/hw/command", COMMAND_TYPE)
    with pytest.raises(BagError, match=r"'state' is ambiguous.*/car/state.*/car2/state"):
        transitions_from_bags(path, "state", "hw/command", DT)


def test_unreadable_bags(store, tmp_path):
    no_metadata = tmp_path / "killed"
    no_metadata.mkdir()
    (no_metadata / "killed_0.mcap").write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(BagError, match=f"{no_metadata}: cannot read bag"):
        transitions_from_bags(no_metadata, "state", "hw/command", DT)
    bad_metadata = tmp_path / "bad"
    bad_metadata.mkdir()
    (bad_metadata / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    with pytest.raises(BagError, match=f"{bad_metadata}: cannot read bag"):
        transitions_from_bags(bad_metadata, "state", "hw/command", DT)
    with pytest.raises(BagError, match="nowhere: cannot read bag"):
        transitions_from_bags(tmp_path / "nowhere", "state", "hw/command", DT)
    # A truncated storage file under an intact metadata.yaml.
    bag = record(store, tmp_path / "trunc", run(200))
    storage_file = next(bag.glob("*.mcap"))
    storage_file.write_bytes(storage_file.read_bytes()[: storage_file.stat().st_size // 2])
    with pytest.raises(BagError, match=f"{bag}"):
        transitions_from_bags(bag, "state", "hw/command", DT)


def test_no_transitions_says_what_was_found(store, tmp_path):
    bag = record(store, tmp_path / "bag", run(5, **{f"s{k}": dict(command=False) for k in range(5)}))
    with pytest.raises(BagError) as error:
        transitions_from_bags(bag, "state", "hw/command", DT)
    message = str(error.value)
    assert str(bag) in message and "no transitions" in message and "states: 5" in message
    with pytest.raises(BagError, match="no bags given"):
        transitions_from_bags([], "state", "hw/command", DT)
    with pytest.raises(BagError, match="max_stamp_error"):
        transitions_from_bags(bag, "state", "hw/command", DT, max_stamp_error=0.15)


# ---- BagSequence ----------------------------------------------------------------------------
def test_sequence_splits_by_duration_and_repeats_latched(store, tmp_path):
    (tmp_path / "rec_0003").mkdir()  # left by an earlier run: numbering continues after it
    seq = BagSequence(tmp_path, prefix="rec", split_duration_ns=1_000_000_000, typestore=store)
    seq.add_topic("/car/state", STATE_TYPE, bag_qos(reliable=False, transient_local=False, depth=5))
    seq.add_topic("/car/hw/command", COMMAND_TYPE, bag_qos(reliable=True, transient_local=False))
    seq.add_topic("/car/goal_pose", "geometry_msgs/msg/PoseStamped", bag_qos(reliable=True, transient_local=True),
                  latched=True)
    goal = store.types["geometry_msgs/msg/PoseStamped"](
        header=header(store, 0),
        pose=store.types["geometry_msgs/msg/Pose"](
            position=store.types["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=0.0),
            orientation=store.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
    )
    seq.write("/car/goal_pose", 0, bytes(store.serialize_cdr(goal, "geometry_msgs/msg/PoseStamped")))
    for k in range(26):  # 5.2 s at dt 0.2
        t = k * DT_NS
        seq.write("/car/state", t + 1, state_cdr(store, t, state_at(k)))
        seq.write("/car/hw/command", t + 2, command_cdr(store, t, action_at(k)))
        if k == 7:
            assert [p.name for p in list_bags(tmp_path)] == ["rec_0004"]  # closed while recording goes on
    assert seq.tick(6 * 10**9 + 1) is not None  # the last bag's time is up without a message
    assert seq.current_path is None and seq.close() is None
    names = [p.name for p in list_bags(tmp_path)]
    assert names == [f"rec_{i:04d}" for i in range(4, 10)]
    assert seq.counts == {"/car/state": 26, "/car/hw/command": 26, "/car/goal_pose": 1}
    for bag in list_bags(tmp_path):  # every bag has the goal, written once or repeated
        with Reader(bag) as reader:
            counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts["/car/goal_pose"] == 1, bag
    data = transitions_from_bags(list_bags(tmp_path), "state", "hw/command", DT)
    assert episodes_of(data) == [list(range(25))]


def test_sequence_starts_a_new_bag_when_time_goes_back(store, tmp_path):
    seq = BagSequence(tmp_path, split_duration_ns=10 * 10**9, storage="sqlite3", typestore=store)
    seq.add_topic("/s", STATE_TYPE)
    seq.write("/s", 5 * 10**9, state_cdr(store, 0, state_at(0)))
    seq.write("/s", 1 * 10**9, state_cdr(store, 0, state_at(0)))  # a restarted sim clock
    seq.close()
    assert [p.name for p in list_bags(tmp_path)] == ["bag_0000", "bag_0001"]
    with pytest.raises(BagError, match="'/t' was not added"):
        seq.write("/t", 0, b"")
    with pytest.raises(BagError, match="prefix"):
        BagSequence(tmp_path, prefix="../x")
    with pytest.raises(BagError, match="not in the bag's typestore"):
        seq.add_topic("/u", "nope/msg/Nope")
