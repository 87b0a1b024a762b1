"""mbrl_interfaces types in rosbags: serialise, write and read bags without ROS 2."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from mbrl_ros.io import ros_types
from mbrl_ros.io.ros_types import MESSAGES, PACKAGE, mbrl_typestore


@pytest.fixture(scope="module")
def store():
    return mbrl_typestore()


def state_vector(store, stamp_ns: int, values):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    StateVector = store.types["mbrl_interfaces/msg/StateVector"]
    return StateVector(
        header=Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="map"),
        names=["x", "y", "yaw", "v"],
        values=np.asarray(values, dtype=np.float64),
        valid=True,
        reason="",
    )


def test_all_messages_registered(store):
    for name in MESSAGES:
        assert f"{PACKAGE}/msg/{name}" in store.types
    fields = [name for name, _ in store.get_msgdef("mbrl_interfaces/msg/ModelUpdate").fields]
    assert fields == [
        "header", "model_kind", "version", "checksum",
        "metric_names", "metric_values", "config_yaml", "weights",
    ]


def test_state_vector_cdr_round_trip(store):
    msg = state_vector(store, 1_700_000_000_123_456_789, [1.0, -2.5, 3.0, float("nan")])
    raw = store.serialize_cdr(msg, "mbrl_interfaces/msg/StateVector")
    back = store.deserialize_cdr(raw, "mbrl_interfaces/msg/StateVector")
    assert back.header.stamp.sec == 1_700_000_000 and back.header.stamp.nanosec == 123_456_789
    assert back.names == ["x", "y", "yaw", "v"]
    np.testing.assert_array_equal(back.values, msg.values)  # NaN too: bit for bit
    assert back.valid is True and back.reason == ""


def test_model_update_with_weights_round_trip(store):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    ModelUpdate = store.types["mbrl_interfaces/msg/ModelUpdate"]
    weights = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8)
    msg = ModelUpdate(
        header=Header(stamp=Time(sec=1, nanosec=2), frame_id=""),
        model_kind="ensemble",
        version=7,
        checksum=hashlib.sha256(weights.tobytes()).hexdigest(),
        metric_names=["rmse_h1", "rmse_h10"],
        metric_values=np.array([0.01, 0.2]),
        config_yaml="members: 5\n",
        weights=weights,
    )
    back = store.deserialize_cdr(store.serialize_cdr(msg, ModelUpdate.__msgtype__), ModelUpdate.__msgtype__)
    assert back.version == 7 and back.model_kind == "ensemble"
    assert hashlib.sha256(back.weights.tobytes()).hexdigest() == msg.checksum


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_bag_write_then_read(store, tmp_path, storage):
    bag = tmp_path / "bag"
    typename = "mbrl_interfaces/msg/StateVector"
    with Writer(bag, version=9, storage_plugin=storage) as writer:
        connection = writer.add_connection("/car/state", typename, typestore=store)
        for i in range(50):
            t = 1_000_000_000 + i * 50_000_000
            writer.write(connection, t, store.serialize_cdr(state_vector(store, t, [i, 0, 0, 1]), typename))

    with Reader(bag) as reader:
        assert [c.msgtype for c in reader.connections] == [typename]
        msgs = [store.deserialize_cdr(raw, typename) for _, _, raw in reader.messages()]
    assert [m.values[0] for m in msgs] == list(range(50))


def test_missing_definitions_name_the_places_tried(monkeypatch, tmp_path):
    monkeypatch.setattr(ros_types, "_CHECKOUT_MSG_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))
    with pytest.raises(FileNotFoundError) as error:
        mbrl_typestore()
    assert str(tmp_path / "nowhere") in str(error.value)
    assert str(tmp_path / "prefix" / "share" / PACKAGE / "msg") in str(error.value)


def test_definitions_found_in_an_installed_share(monkeypatch, tmp_path):
    share = tmp_path / "prefix" / "share" / PACKAGE / "msg"
    share.mkdir(parents=True)
    for name, text in ros_types.message_definitions().items():
        (share / f"{name.rsplit('/', 1)[1]}.msg").write_text(text)
    monkeypatch.setattr(ros_types, "_CHECKOUT_MSG_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "prefix"))
    assert ros_types.find_msg_dir() == share
    assert "mbrl_interfaces/msg/CommandVector" in mbrl_typestore().types
