"""BagRecorder/BagSequence crash safety: what was flushed survives a SIGKILL, in both storages.

The writer runs in a process of its own that kills itself (killed_writer.py),
so nothing of this process's memory can help: only what is in the file counts.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from mbrl_ros.io.bag_tools import Salvage, scan_mcap, scan_sqlite3
from mbrl_ros.io.bags import BagError, default_typestore, list_bags
from mbrl_ros.io.recording import BagRecorder, BagSequence

KILLED_WRITER = Path(__file__).with_name("killed_writer.py")


def killed_recording(path: Path, storage: str, flushed: int, unflushed: int, payload: int = 100) -> Path:
    """A bag whose writer wrote ``flushed`` messages, flushed, wrote ``unflushed`` more and was SIGKILLed."""
    proc = subprocess.run([sys.executable, str(KILLED_WRITER), str(path), storage, str(flushed), str(unflushed),
                           str(payload)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == f"written {flushed} {unflushed}"
    return path


def surviving(bag: Path, storage: str, workdir: Path) -> list[tuple[str, int]]:
    """(topic, time) of each message the storage file holds, read without rosbags' Reader (it needs a footer)."""
    file = bag / f"{bag.name}.{'mcap' if storage == 'mcap' else 'db3'}"
    salvage = Salvage(file, storage)
    messages = scan_mcap(file, salvage) if storage == "mcap" else scan_sqlite3(file, salvage, workdir)
    return [(salvage.topics[tid].name, t) for tid, t, _ in messages]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_flushed_messages_survive_sigkill_and_unflushed_do_not(tmp_path, storage):
    bag = killed_recording(tmp_path / "bag", storage, flushed=40, unflushed=30)
    assert not (bag / "metadata.yaml").exists()
    found = surviving(bag, storage, tmp_path)
    # Without the flush rosbags would have kept all 70 in memory (an MCAP chunk is written
    # at 1 MiB, the sqlite transaction is committed on close): exactly the flushed 40 survive.
    assert [t for _, t in found] == [10**9 + i * 10**6 for i in range(40)]
    assert {name for name, _ in found} == {"/count", "/blob"}


def test_without_flush_a_killed_mcap_keeps_nothing(tmp_path):
    """What flush fixes: rosbags' MCAP writer holds an unfilled chunk in memory."""
    bag = killed_recording(tmp_path / "bag", "mcap", flushed=0, unflushed=50)
    assert surviving(bag, "mcap", tmp_path) == []


def test_large_messages_fill_chunks_that_survive_between_flushes(tmp_path):
    """Chunks rosbags closes by itself (> 1 MiB) are in the file too, flushed or not."""
    bag = killed_recording(tmp_path / "bag", "mcap", flushed=10, unflushed=40, payload=100_000)
    found = surviving(bag, "mcap", tmp_path)
    assert len(found) >= 10 + 20  # 20 unflushed 100 kB strings passed 1 MiB at least once
    assert [t for _, t in found] == [10**9 + i * 10**6 for i in range(len(found))]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_flush_then_close_is_a_complete_bag(tmp_path, storage):
    store = default_typestore()
    Int32 = store.types["std_msgs/msg/Int32"]
    with BagRecorder(tmp_path / "b", storage=storage, typestore=store) as bag:
        bag.add_topic("/n", "std_msgs/msg/Int32")
        assert bag.flush() == 0  # nothing to flush: no empty chunk, no empty transaction
        for i in range(25):
            bag.write("/n", 10**9 + i, store.serialize_cdr(Int32(data=i), "std_msgs/msg/Int32"))
            if i % 10 == 9:
                assert bag.flush() == 10
    with Reader(tmp_path / "b") as reader:
        values = [store.deserialize_cdr(d, "std_msgs/msg/Int32").data for _, _, d in reader.messages()]
    assert values == list(range(25))


def test_sqlite_flush_is_a_commit_another_connection_sees(tmp_path):
    store = default_typestore()
    bag = BagRecorder(tmp_path / "b", storage="sqlite3", typestore=store)
    bag.add_topic("/n", "std_msgs/msg/Int32")
    raw = store.serialize_cdr(store.types["std_msgs/msg/Int32"](data=1), "std_msgs/msg/Int32")
    for i in range(5):
        bag.write("/n", i, raw)
    other = sqlite3.connect(tmp_path / "b" / "b.db3", timeout=0.1)
    bag.flush()
    assert other.execute("SELECT count(*) FROM messages").fetchone()[0] == 5
    other.close()
    bag.close()
    with pytest.raises(BagError, match="closed"):
        bag.write("/n", 9, raw)


def test_sequence_splits_by_size_and_flushes_the_open_bag(tmp_path):
    store = default_typestore()
    String = store.types["std_msgs/msg/String"]
    raw = bytes(store.serialize_cdr(String(data="x" * 992), "std_msgs/msg/String"))  # 1000 bytes
    seq = BagSequence(tmp_path, prefix="s", split_duration_ns=10**12, split_size_bytes=3_500, typestore=store)
    seq.add_topic("/s", "std_msgs/msg/String")
    for i in range(10):
        seq.write("/s", 10**9 + i, raw)
    assert seq.flush() == 2  # the open bag holds messages 8 and 9
    seq.close()
    counts = []
    for bag in list_bags(tmp_path):
        with Reader(bag) as reader:
            counts.append(reader.message_count)
    assert counts == [4, 4, 2]  # closed once a bag held >= 3,500 bytes
    with pytest.raises(BagError, match="split size must be > 0"):
        BagSequence(tmp_path / "x", split_size_bytes=0)
