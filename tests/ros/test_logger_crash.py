"""A data_logger process killed with SIGKILL mid-recording loses at most the last second.

Real processes over real DDS in a domain of their own: the data_logger (split
every 1.5 s, flushed every 0.5 s) and a publisher at a known rate that prints
what it sent and when (logger_crash_peers.py). After the kill, `mbrl-ros bag
repair` makes the folder's killed bag complete; every bag must then read back
with rosbags' Reader, and hold an unbroken run 0..n-1 of the sent messages with
n within one second (RATE messages) of what was sent before the kill.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from mbrl_ros.io.bags import default_typestore, list_bags
from mbrl_ros.io.bag_tools import DAMAGED_SUFFIX

PEERS = Path(__file__).with_name("logger_crash_peers.py")
RATE_HZ = 50
# Bags start at 0, 1.5 and 3.0 s after the first message: the kill comes 0.9 s into the third,
# after at least one flush of it.
RUN_S = 3.9
SLACK = 3  # messages: scheduling jitter of a loaded 2-core machine at the bound


def node(module: str, *ros_args: str) -> list[str]:
    return ["-c", f"import sys; from mbrl_ros.nodes.{module} import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/car", *ros_args]


def wait_for(proc: subprocess.Popen, prefix: str, timeout: float, other: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return
        if not line:
            break
    for p in (proc, other):
        p.kill()
    pytest.fail(f"no '{prefix}' from the publisher in {timeout} s\npublisher:\n{proc.stderr.read()}\n"
                f"logger:\n{other.stderr.read()}")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sigkilled_logger_loses_at_most_one_second(spawn, ros_env, tmp_path, storage):
    out_dir = tmp_path / "bags"
    logger = spawn(*node("data_logger", "-p", f"output_dir:={out_dir}", "-p", f"storage:={storage}",
                         "-p", "topics:=['hw/command', 'hw/odom']", "-p", "split_duration:=1.5",
                         "-p", "flush_period:=0.5"))
    publisher = spawn(str(PEERS), "publish", str(RATE_HZ))
    wait_for(publisher, "ready", timeout=90, other=logger)
    time.sleep(RUN_S)
    killed_at = time.time()
    logger.send_signal(signal.SIGKILL)
    assert logger.wait(timeout=10) == -signal.SIGKILL
    publisher.kill()
    out, _ = publisher.communicate(timeout=10)
    sent_times = [float(t) for _, _, t in (line.split() for line in out.splitlines() if line.startswith("sent "))]
    sent = sum(t < killed_at for t in sent_times)
    assert sent >= RATE_HZ * (RUN_S - 0.5), f"the publisher sent only {sent} messages in {RUN_S} s"

    closed = list_bags(out_dir)
    assert closed, "no bag was closed while the logger ran"
    repair = subprocess.run([sys.executable, "-m", "mbrl_ros.cli", "bag", "repair", str(out_dir)],
                            env=ros_env, capture_output=True, text=True, timeout=120)
    assert repair.returncode == 0, repair.stderr
    assert "recovered" in repair.stdout and "/car/hw/command" in repair.stdout, repair.stdout
    damaged = [p for p in out_dir.iterdir() if p.name.endswith(DAMAGED_SUFFIX)]
    assert len(damaged) == 1, f"expected one killed bag, kept as *{DAMAGED_SUFFIX}: {sorted(out_dir.iterdir())}"

    store = default_typestore()
    indices: list[int] = []
    bags = list_bags(out_dir)
    assert len(bags) == len(closed) + 1
    for bag in bags:
        with Reader(bag) as reader:
            commands = [c for c in reader.connections if c.topic == "/car/hw/command"]
            for _conn, _t, data in reader.messages(connections=commands):
                indices.append(int(store.deserialize_cdr(data, "mbrl_interfaces/msg/CommandVector").values[0]))
    recovered = len(indices)
    print(f"{storage}: sent {sent} before SIGKILL, recovered {recovered}, lost {sent - recovered} "
          f"({(sent - recovered) / RATE_HZ:.2f} s at {RATE_HZ} Hz)")
    assert indices == list(range(recovered)), "recovered messages are not the unbroken run from the first"
    assert sent - RATE_HZ * 1.0 - SLACK <= recovered <= sent
