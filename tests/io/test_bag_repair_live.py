"""`mbrl-ros bag repair FOLDER` leaves alone the bag a live writer is still writing (issue 9).

A real writer process (live_writer.py: the data_logger's BagSequence, flushed
every 0.1 s) keeps recording into a folder that also holds a bag whose writer
was killed. Repair on the folder repairs the killed bag, leaves the live one as
it is (not renamed, no metadata.yaml), and the writer goes on writing and
finally closes a complete bag holding every message it wrote.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mbrl_ros.io.bag_tools import DAMAGED_SUFFIX, bag_info, live_writers

from test_recording import killed_recording  # tests/io is on sys.path (pytest rootdir-relative imports)

LIVE_WRITER = Path(__file__).with_name("live_writer.py")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mbrl_ros.cli", *args], capture_output=True, text=True, timeout=120)


def flushed(writer: subprocess.Popen) -> int:
    """Wait for the writer's next flush; the messages written by then."""
    line = writer.stdout.readline()
    assert line.startswith("flushed "), (line, writer.stderr.read() if writer.poll() is not None else "")
    return int(line.split()[1])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_repair_leaves_the_bag_being_written_alone(tmp_path, storage):
    folder = tmp_path / "bags"
    killed_recording(folder / "bag_0000", storage, flushed=10, unflushed=4)
    writer = subprocess.Popen([sys.executable, str(LIVE_WRITER), str(folder), storage],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        flushed(writer)
        live = folder / "bag_0001"
        assert sorted(p.name for p in folder.iterdir()) == ["bag_0000", "bag_0001"]
        assert f"process {writer.pid} (" in live_writers(live)
        assert live_writers(folder / "bag_0000") == ""  # its writer is dead: it holds no file open

        done = cli("bag", "repair", str(folder))
        assert done.returncode == 0, done.stderr
        assert "bag_0000: repaired" in done.stdout and "recovered 10 messages" in done.stdout
        assert f"{live}: still being written: process {writer.pid} (" in done.stdout, done.stdout
        assert sorted(p.name for p in folder.iterdir()) == ["bag_0000", f"bag_0000{DAMAGED_SUFFIX}", "bag_0001"]
        assert not (live / "metadata.yaml").exists()

        alone = cli("bag", "repair", str(live))  # named directly: an error, and still nothing touched
        assert alone.returncode == 1 and f"{live}: still being written" in alone.stderr, alone.stderr
        info = cli("bag", "info", str(live))
        assert info.returncode == 1 and "it is being written" in info.stderr, info.stderr

        before = flushed(writer)
        after = flushed(writer)  # the writer goes on writing into the bag repair left alone
        assert after > before and writer.poll() is None
    finally:
        writer.send_signal(signal.SIGTERM)
        out, err = writer.communicate(timeout=30)
    assert writer.returncode == 0, err
    total = int(out.strip().splitlines()[-1].split()[1])
    info = bag_info(live, count=True)
    assert [(t.name, t.count, t.decoded) for t in info.topics] == [("/count", total, total)] and not info.problems
    assert sorted(p.name for p in folder.iterdir()) == ["bag_0000", f"bag_0000{DAMAGED_SUFFIX}", "bag_0001"]
