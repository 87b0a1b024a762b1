"""Bags as upstream ``ros2 bag record`` writes them read to the same transitions as our own.

There is no ``ros2 bag`` (no rosbag2_py wheel) here, so the fixtures rebuild what
upstream writes, from its file formats:
- rosbags' Writer (metadata versions 8 and 9, mcap and sqlite3, file and
  message zstd compression): rosbags mirrors rosbag2's writer;
- ``upstream_bags`` (its docstring has the table per release): the ``mcap``
  library's Writer the way rosbag2_storage_mcap uses the MCAP C++ writer,
  sqlite3 databases with each release's tables, metadata.yaml of each version 4..9.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mcap.writer import CompressionType
from rosbags.rosbag2 import CompressionFormat, CompressionMode, Writer
from upstream_bags import QOS_FOXY, topics_of, write_mcap_bag, write_sqlite_bag  # tests/io is on sys.path

from mbrl_ros.io.bags import (
    COMMAND_TYPE,
    STATE_TYPE,
    STORAGES,
    BagError,
    default_typestore,
    list_bags,
    transitions_from_bags,
)

DT = 0.2
DT_NS = 200_000_000
T0 = 1_700_000_000 * 10**9
TOPICS = {"/car/state": STATE_TYPE, "/car/hw/command": COMMAND_TYPE}
@pytest.fixture(scope="module")
def store():
    return default_typestore()


@pytest.fixture(scope="module")
def messages(store):
    """40 steps of the car (a reset at step 25) as (topic, log ns, CDR bytes), in log order."""
    out = []
    for k in range(40):
        t = T0 + k * DT_NS
        x = 100.0 + k if k >= 25 else float(k)
        state = store.types[STATE_TYPE](
            header=_header(store, t), names=["x", "y", "yaw", "v", "steer"],
            values=np.array([x, 0.5 * k, 0.01 * k, 1.0, 0.0]), valid=True, reason="")
        command = store.types[COMMAND_TYPE](header=_header(store, t), names=["u_accel", "u_steer"],
                                            values=np.array([np.sin(k), np.cos(k)]))
        out.append(("/car/state", t + 1_000_000, bytes(store.serialize_cdr(state, STATE_TYPE))))
        out.append(("/car/hw/command", t + 4_000_000, bytes(store.serialize_cdr(command, COMMAND_TYPE))))
    return out


def _header(store, t):
    Time = store.types["builtin_interfaces/msg/Time"]
    return store.types["std_msgs/msg/Header"](stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="map")


@pytest.fixture(scope="module")
def reference(store, messages, tmp_path_factory):
    bag = rosbags_bag(store, tmp_path_factory.mktemp("ref") / "bag", messages, "mcap", 9, None)
    data = transitions_from_bags(bag, "state", "hw/command", DT)
    assert len(data) == 38 and len(data.episodes()) == 2  # the reset ends the first episode
    return data


def assert_same(data, reference):
    for field in ("states", "actions", "next_states", "episode_ids"):
        np.testing.assert_array_equal(getattr(data, field).numpy(), getattr(reference, field).numpy(), err_msg=field)


# ---- rosbags' Writer -----------------------------------------------------------------------------
def rosbags_bag(store, path, messages, storage, version, compression):
    writer = Writer(path, version=version, storage_plugin=STORAGES[storage])
    if compression:
        writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
    with writer:
        connections = {topic: writer.add_connection(topic, typename, typestore=store) for topic, typename in TOPICS.items()}
        for topic, log_ns, raw in messages:
            writer.write(connections[topic], log_ns, raw)
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("version", [8, 9])
@pytest.mark.parametrize("compression", [None, "file", "message"])
def test_rosbags_writer_bags(store, messages, reference, tmp_path, storage, version, compression):
    bag = rosbags_bag(store, tmp_path / "bag", messages, storage, version, compression)
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == version and (info["compression_mode"] or "").lower() == (compression or "")
    assert_same(transitions_from_bags(bag, "state", "hw/command", DT), reference)


# ---- rosbag2_storage_mcap ----------------------------------------------------------------------------------
def upstream_mcap_bag(store, path, messages, version, n_files=2, compression=CompressionType.ZSTD):
    """A bag as rosbag2_storage_mcap writes it, split into ``n_files`` files of consecutive messages."""
    return write_mcap_bag(path, version, topics_of(store, TOPICS), messages, n_files, compression)


@pytest.mark.parametrize("version", [5, 6, 7, 8, 9])  # mcap storage exists from Humble's backports on
def test_upstream_mcap_split_zstd_bags(store, messages, reference, tmp_path, version):
    bag = upstream_mcap_bag(store, tmp_path / "rosbag2_2024_01_01-00_00_00", messages, version)
    assert len(list(bag.glob("*.mcap"))) == 2
    assert_same(transitions_from_bags(bag, "state", "hw/command", DT), reference)


@pytest.mark.parametrize("compression", [CompressionType.LZ4, CompressionType.NONE])
def test_upstream_mcap_other_chunk_compressions(store, messages, reference, tmp_path, compression):
    bag = upstream_mcap_bag(store, tmp_path / "bag", messages, 9, n_files=1, compression=compression)
    assert_same(transitions_from_bags(bag, "state", "hw/command", DT), reference)


# ---- rosbag2_storage_default_plugins (sqlite3) ---------------------------------------------------------------
def upstream_sqlite_bag(store, path, messages, version):
    return write_sqlite_bag(path, version, topics_of(store, TOPICS), messages)


@pytest.mark.parametrize("version", [4, 5, 6, 7, 8, 9])
def test_upstream_sqlite3_bags(store, messages, reference, tmp_path, version):
    bag = upstream_sqlite_bag(store, tmp_path / "bag", messages, version)
    assert_same(transitions_from_bags(bag, "state", "hw/command", DT), reference)


def test_a_recording_split_over_bag_dirs_of_different_formats(store, messages, reference, tmp_path):
    """Episodes continue from one bag dir into the next, whatever each one's storage and version."""
    half = len(messages) // 2
    upstream_sqlite_bag(store, tmp_path / "run" / "part_0", messages[:half], 4)
    upstream_mcap_bag(store, tmp_path / "run" / "part_1", messages[half:], 9)
    bags = list_bags(tmp_path / "run")
    assert [b.name for b in bags] == ["part_0", "part_1"]
    assert_same(transitions_from_bags(bags, "state", "hw/command", DT), reference)


def test_metadata_that_disagrees_with_the_storage(store, messages, reference, tmp_path):
    """Another QoS in metadata.yaml than in the database still reads every message (rosbags' own
    pairing would yield none); a message count the storage cannot give is an error, not silent loss."""
    bag = upstream_sqlite_bag(store, tmp_path / "bag", messages, 9)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    for topic in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        topic["topic_metadata"]["offered_qos_profiles"] = QOS_FOXY
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    assert_same(transitions_from_bags(bag, "state", "hw/command", DT), reference)
    meta["rosbag2_bagfile_information"]["topics_with_message_count"][0]["message_count"] = 45
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(BagError, match=rf"^{bag}: topic '/car/state': metadata.yaml counts 45 messages but the "
                                       "storage files yield 40"):
        transitions_from_bags(bag, "state", "hw/command", DT)


@pytest.mark.parametrize("make", ["rosbags", "rosbags file-compressed", "rosbags message-compressed",
                                  "upstream zstd split", "upstream lz4", "upstream uncompressed",
                                  "sqlite3 rosbags", "sqlite3 foxy"])
def test_direct_reading_yields_what_rosbags_yields(store, messages, tmp_path, make):
    """Reading the storage directly (MCAP chunk and message indexes, or a walk of unindexed chunks;
    one sqlite3 query per topic), packed and streamed, against rosbags' message-by-message reading
    of bags it reads right."""
    from rosbags.rosbag2 import Reader

    from mbrl_ros.io.bag_storage import McapFile, StorageBag

    path = tmp_path / "bag"
    if make == "sqlite3 rosbags":
        rosbags_bag(store, path, messages, "sqlite3", 9, None)
    elif make == "sqlite3 foxy":
        upstream_sqlite_bag(store, path, messages, 4)
    elif make.startswith("rosbags"):
        rosbags_bag(store, path, messages, "mcap", 9, make.split()[-1].split("-")[0] if " " in make else None)
    else:
        kind = {"upstream zstd split": CompressionType.ZSTD, "upstream lz4": CompressionType.LZ4,
                "upstream uncompressed": CompressionType.NONE}[make]
        upstream_mcap_bag(store, path, messages, 9, n_files=2 if "split" in make else 1, compression=kind)
    topics = list(TOPICS)
    with Reader(path) as reader:
        theirs = {t: [(log, bytes(raw)) for c, log, raw in reader.messages() if c.topic == t] for t in topics}
    with StorageBag(path) as bag:
        # complete MCAP files are read through their indexes, never record by record
        assert all(file.indexed() for file in bag.iter_files() if isinstance(file, McapFile))
        packed = bag.read(topics)
        streamed = {t: [] for t in topics}
        for file in bag.iter_files():
            for tid, log, raw in file.messages():
                streamed[file.topics[tid].name].append((log, bag.decompress(raw)))
        counts = bag.count_messages()
    for topic, ours in zip(topics, packed):
        assert len(theirs[topic]) == 40 and counts[topic] == 40
        assert [(int(ours.log_ns[k]), ours.message(k)) for k in range(len(ours))] == theirs[topic]
        assert sorted(streamed[topic]) == sorted(theirs[topic])
