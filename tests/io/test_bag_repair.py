"""`mbrl-ros bag repair` on hand-made broken bags: killed writers, cut files, lost metadata, empty bags."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from mbrl_ros.io.bag_tools import DAMAGED_SUFFIX, repair_bag, repair_path
from mbrl_ros.io.bags import BagError, default_typestore

from test_recording import killed_recording  # tests/io is on sys.path (pytest rootdir-relative imports)


def read_back(bag: Path) -> dict[str, list[int]]:
    """Per topic the log times, read with rosbags' Reader (the proof that the bag is valid)."""
    times: dict[str, list[int]] = {}
    with Reader(bag) as reader:
        for conn, t, data in reader.messages():
            default_typestore().deserialize_cdr(data, conn.msgtype)
            times.setdefault(conn.topic, []).append(t)
    return times


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrl_ros.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_killed_recording_is_repaired_in_place_and_original_kept(tmp_path, storage):
    bag = killed_recording(tmp_path / "run", storage, flushed=60, unflushed=20)
    original = sorted(p.name for p in bag.iterdir())
    if storage == "sqlite3":
        assert f"run.db3-journal" in original  # the open transaction's rollback journal
    done = cli("bag", "repair", str(bag))
    assert done.returncode == 0, done.stderr
    assert "recovered 60 messages" in done.stdout
    assert "/count" in done.stdout and "30" in done.stdout
    times = read_back(bag)
    assert {k: len(v) for k, v in times.items()} == {"/count": 30, "/blob": 30}
    assert sorted(p.name for p in (tmp_path / f"run{DAMAGED_SUFFIX}").iterdir()) == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", f"run{DAMAGED_SUFFIX}"]  # no temp left
    again = cli("bag", "repair", str(bag))
    assert again.returncode == 0 and "complete (60 messages); nothing to repair" in again.stdout


def test_mcap_cut_inside_a_chunk_keeps_the_complete_messages(tmp_path):
    store = default_typestore()
    bag = killed_recording(tmp_path / "run", "mcap", flushed=50, unflushed=0)
    shutil.rmtree(bag)
    # A complete bag of 1 kB messages in chunks of ~1 MiB, cut in the middle of its second chunk.
    from mbrl_ros.io.recording import BagRecorder

    String = store.types["std_msgs/msg/String"]
    raw = store.serialize_cdr(String(data="y" * 992), "std_msgs/msg/String")
    with BagRecorder(bag, typestore=store) as recorder:
        recorder.add_topic("/s", "std_msgs/msg/String")
        for i in range(3000):
            recorder.write("/s", 10**9 + i, raw)
    mcap = bag / "run.mcap"
    os.truncate(mcap, 1_700_000)  # chunk 1 ends near 1.05 MB; chunk 2 is cut about 60 % in
    (bag / "metadata.yaml").unlink()
    result = repair_bag(bag, tmp_path / "fixed")
    n = result.counts["/s"]
    assert 1_600 < n < 1_700, n  # every whole message before the cut, from the cut chunk too
    assert read_back(tmp_path / "fixed")["/s"] == [10**9 + i for i in range(n)]
    assert any("ends inside a record" in note for note in result.lost)
    assert (bag / "run.mcap").stat().st_size == 1_700_000  # with -o the original is left alone


def test_sqlite_copied_with_its_uncommitted_journal(tmp_path):
    """A database copied mid-transaction (pages already spilled) with its -journal: sqlite rolls back."""
    bag = killed_recording(tmp_path / "run", "sqlite3", flushed=30, unflushed=3000, payload=2000)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in bag.iterdir():
        shutil.copy(f, copy / f.name.replace("run", "copy"))
    assert (copy / "copy.db3-journal").stat().st_size > 0  # a hot journal: the transaction was not committed
    result = repair_bag(copy)
    assert result.message_count == 30
    assert {k: len(v) for k, v in read_back(copy).items()} == {"/count": 15, "/blob": 15}


def test_bag_that_lost_only_its_metadata(tmp_path):
    store = default_typestore()
    from mbrl_ros.io.recording import BagRecorder

    for storage in ("mcap", "sqlite3"):
        bag = tmp_path / storage
        with BagRecorder(bag, storage=storage, typestore=store) as recorder:
            recorder.add_topic("/n", "std_msgs/msg/Int32")
            for i in range(7):
                recorder.write("/n", i + 1, store.serialize_cdr(store.types["std_msgs/msg/Int32"](data=i),
                                                                "std_msgs/msg/Int32"))
        (bag / "metadata.yaml").unlink()
        assert repair_bag(bag).counts == {"/n": 7}
        assert read_back(bag) == {"/n": list(range(1, 8))}


def test_folder_of_bags_repairs_only_the_damaged_ones(tmp_path):
    killed_recording(tmp_path / "bag_0000", "mcap", flushed=10, unflushed=0)
    repair_bag(tmp_path / "bag_0000")
    shutil.rmtree(tmp_path / f"bag_0000{DAMAGED_SUFFIX}")
    killed_recording(tmp_path / "bag_0001", "mcap", flushed=8, unflushed=2)
    killed_recording(tmp_path / "bag_0002", "mcap", flushed=0, unflushed=5)  # killed before any flush
    results = {r.path.name: r for r in repair_path(tmp_path)}
    assert sorted(results) == ["bag_0001", "bag_0002"]
    assert results["bag_0001"].message_count == 8
    assert results["bag_0002"].message_count == 0 and "no message survived" in results["bag_0002"].lost[0]
    assert not (tmp_path / "bag_0002" / "metadata.yaml").exists()  # nothing to make a bag of: left as it was
    assert repair_path(tmp_path / "bag_0001")[0].was_complete


def test_clear_errors_and_nothing_half_written(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "zero.mcap").write_bytes(b"")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk.mcap").write_bytes(b"not an mcap file at all")
    (tmp_path / "file.mcap").write_bytes(b"")
    cases = {
        tmp_path / "missing": "no such bag",
        empty: "not a bag and no bags under it",
        zero: "no message survived",
        junk: "not an MCAP file",
        tmp_path / "file.mcap": "is a file",
    }
    for path, message in cases.items():
        done = cli("bag", "repair", str(path))
        assert done.returncode == 1, (path, done.stdout)
        assert message in done.stderr and str(path) in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    with pytest.raises(BagError, match="exists already"):
        repair_bag(zero, empty)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or p.name.endswith(DAMAGED_SUFFIX)]
    assert leftovers == []
