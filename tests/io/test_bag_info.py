"""`mbrl-ros bag info`: metadata or counted, the exact JSON, folders of bags, undecodable messages, bad bags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl_ros.io.bag_tools import bag_info
from mbrl_ros.io.bags import default_typestore
from mbrl_ros.io.recording import BagRecorder, BagSequence

from test_recording import killed_recording  # tests/io is on sys.path (pytest rootdir-relative imports)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrl_ros.cli", *args], capture_output=True, text=True, timeout=120)


def int32(i: int) -> bytes:
    store = default_typestore()
    return bytes(store.serialize_cdr(store.types["std_msgs/msg/Int32"](data=i), "std_msgs/msg/Int32"))


def write_bag(path: Path, storage: str = "mcap", n: int = 10, bad: tuple[int, ...] = ()) -> Path:
    """/n: n Int32 every 0.1 s from t = 1 s (the indices in ``bad`` are 3 bytes of garbage); /e: none."""
    with BagRecorder(path, storage=storage, typestore=default_typestore()) as bag:
        bag.add_topic("/n", "std_msgs/msg/Int32")
        bag.add_topic("/e", "std_msgs/msg/String")
        for i in range(n):
            bag.write("/n", 10**9 + i * 10**8, b"\x00\x01\x00" if i in bad else int32(i))
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_info_json_is_exactly_the_agreed_shape(tmp_path, storage):
    bag = write_bag(tmp_path / "b", storage)
    done = cli("bag", "info", str(bag), "--json", str(tmp_path / "info.json"))
    assert done.returncode == 0, done.stderr
    assert f"storage:   {storage}" in done.stdout and "0.900 s" in done.stdout
    assert json.loads((tmp_path / "info.json").read_text()) == {
        "storage": storage, "duration_s": 0.9,
        "topics": [{"name": "/e", "type": "std_msgs/msg/String", "count": 0},
                   {"name": "/n", "type": "std_msgs/msg/Int32", "count": 10}],
    }


def test_count_reports_undecodable_messages_instead_of_crashing(tmp_path):
    bag = write_bag(tmp_path / "b", bad=(3, 7))
    assert bag_info(bag).topics[1].count == 10  # metadata.yaml trusts the writer
    info = bag_info(bag, count=True)
    # every message in storage is counted; 8 of the 10 decode
    assert info.counted and [t.count for t in info.topics] == [0, 10] and [t.decoded for t in info.topics] == [0, 8]
    assert [(p.topic, p.index, p.time_ns) for p in info.problems] == [("/n", 3, 13 * 10**8), ("/n", 7, 17 * 10**8)]
    assert all("cannot decode as std_msgs/msg/Int32" in p.reason for p in info.problems)
    done = cli("bag", "info", str(bag), "--count")
    assert done.returncode == 1 and "2 messages or reads failed" in done.stdout
    assert "/n: message 3 at t=1300000000 ns: cannot decode" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_count_catches_a_file_cut_after_its_metadata_was_written(tmp_path):
    store = default_typestore()
    bag = tmp_path / "b"
    with BagRecorder(bag, typestore=store) as recorder:
        recorder.add_topic("/n", "std_msgs/msg/Int32")
        for i in range(40_000):  # about 2 MB: two chunks
            recorder.write("/n", 10**9 + i, int32(i))
    mcap = bag / "b.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) // 4] + data[len(data) // 2:])  # a stretch of the first chunk gone
    done = cli("bag", "info", str(bag), "--count")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert str(bag) in done.stdout + done.stderr


def test_folder_of_bags_is_summed_and_damaged_ones_named(tmp_path):
    seq = BagSequence(tmp_path / "rec", prefix="log", split_duration_ns=10**9, storage="sqlite3",
                      typestore=default_typestore())
    seq.add_topic("/n", "std_msgs/msg/Int32")
    for i in range(25):
        seq.write("/n", 10**9 + i * 10**8, int32(i))
    seq.close()
    killed_recording(tmp_path / "rec" / "log_0003", "mcap", flushed=4, unflushed=0)
    info = bag_info(tmp_path / "rec", count=True)
    assert len(info.bags) == 3 and info.storage == "sqlite3"
    assert [(t.name, t.count) for t in info.topics] == [("/n", 25)]
    assert info.duration_s == pytest.approx(2.4)
    assert [p.name for p in info.incomplete] == ["log_0003"]
    done = cli("bag", "info", str(tmp_path / "rec"))
    assert "(3 bags, summed)" in done.stdout and "log_0003 has no metadata.yaml; run `mbrl-ros bag repair" in done.stdout


def test_bad_bags_give_one_clear_line(tmp_path):
    killed = killed_recording(tmp_path / "killed", "mcap", flushed=4, unflushed=0)
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    empty_bag = write_bag(tmp_path / "empty", n=0)
    cases = {
        killed: "no metadata.yaml (a recording that was killed or is still being written); run `mbrl-ros bag repair",
        empty_dir: "not a bag",
        killed / "killed.mcap": "is a file, not a rosbag2 directory",
        tmp_path / "missing": "no such bag",
    }
    for path, message in cases.items():
        done = cli("bag", "info", str(path))
        assert done.returncode == 1 and message in done.stderr and str(path) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = cli("bag", "info", str(empty_bag))
    assert done.returncode == 0 and "messages:  0 (from metadata.yaml)  empty bag" in done.stdout
