"""`mbrl-ros record`: the data_logger in the command's own process, started WITHOUT the workspace environment.

The command must re-run itself with the colcon workspace's environment to
record mbrl_interfaces messages; its default topics come from the data_logger
section of config/car.yaml in /car. A publisher (logger_crash_peers.py) sends
numbered commands until the recording is stopped with SIGINT, which closes the bag.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rosbags.rosbag2 import Reader

from mbrl_ros.io.bags import default_typestore, list_bags

from test_logger_crash import PEERS, wait_for


def test_record_without_workspace_environment(spawn, ros_env, tmp_path):
    plain = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "MBRL_ROS_IN_WORKSPACE")}
    plain.update(ROS_DOMAIN_ID=ros_env["ROS_DOMAIN_ID"], ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    check = subprocess.run([sys.executable, "-c", "import mbrl_interfaces"], env=plain, capture_output=True)
    assert check.returncode != 0, "the plain environment can import mbrl_interfaces: the test would prove nothing"
    out_dir = tmp_path / "rec"
    record = subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "record", "-o", str(out_dir),
                               "--storage", "sqlite3"], env=plain, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        publisher = spawn(str(PEERS), "publish", "20")
        wait_for(publisher, "ready", timeout=90, other=record)
        time.sleep(1.5)
        record.send_signal(signal.SIGINT)
        rc = record.wait(timeout=30)
        stopped_at = time.time()
    finally:
        if record.poll() is None:
            record.kill()
    err = record.stderr.read()
    assert rc == 0, err
    assert "recording ['/car/goal_pose', '/car/hw/command', '/car/hw/odom', '/car/sim/episodes', '/car/state']" in err
    publisher.kill()
    out, _ = publisher.communicate(timeout=10)
    sent = sum(float(line.split()[2]) < stopped_at for line in out.splitlines() if line.startswith("sent "))

    bags = list_bags(out_dir)
    assert [b.name for b in bags] == ["bag_0000"]
    store = default_typestore()
    with Reader(bags[0]) as reader:
        assert {c.topic for c in reader.connections} >= {"/car/hw/command", "/car/hw/odom", "/car/state"}
        commands = [c for c in reader.connections if c.topic == "/car/hw/command"]
        indices = [int(store.deserialize_cdr(d, c.msgtype).values[0]) for c, _, d in reader.messages(commands)]
    assert len(indices) >= 20 and indices == list(range(len(indices))) and len(indices) <= sent
