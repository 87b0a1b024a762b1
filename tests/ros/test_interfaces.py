"""mbrl_interfaces over real DDS, between processes, with the environment of mbrl_ros.ros_env.

Needs the workspace built (setup.sh runs scripts/build_ros_ws.sh). Every test
runs its processes in a ROS domain of its own, discovery kept on this host.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mbrl_ros.io.ros_types import mbrl_typestore
from mbrl_ros.ros_env import DEFAULT_INSTALL, REPO_ROOT, WorkspaceNotBuiltError, workspace_env
from child_output import wait_for_line

PEERS = Path(__file__).with_name("interface_peers.py")


@pytest.fixture
def spawn(spawn):
    """Start interface_peers.py roles (the conftest's spawn stops them at the end)."""
    return lambda *args, **kwargs: spawn(str(PEERS), *args, **kwargs)


def result_of(proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    return json.loads(wait_for_line(proc, "result ", timeout))


def test_child_imports_interfaces_with_ros_env(ros_env):
    code = (
        "from mbrl_interfaces.msg import StateVector, CommandVector, ModelUpdate\n"
        "from mbrl_interfaces.srv import PredictBatch\n"
        "from ament_index_python.packages import get_package_share_directory as share\n"
        "print(share('mbrl_interfaces')); print(share('mbrl_ros'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=ros_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    interfaces_share, mbrl_ros_share = out.stdout.split()
    assert Path(interfaces_share, "msg", "StateVector.msg").is_file()
    assert Path(mbrl_ros_share, "package.xml").is_file()


def test_late_subscriber_receives_latched_model_update(spawn):
    publisher = spawn("publish-model", "300000")
    checksum = wait_for_line(publisher, "published ", timeout=30)
    time.sleep(0.5)  # let the publisher's discovery settle: the subscriber really joins late
    got = result_of(spawn("subscribe-model", "20"))
    assert got["received"], "the late subscriber got no ModelUpdate"
    assert got["num_bytes"] == 300_000
    assert got["sha256"] == got["checksum"] == checksum
    assert got["version"] == 3 and got["model_kind"] == "ensemble"
    assert got["metrics"] == {"rmse_h1": 0.01, "rmse_h10": 0.25}
    assert got["config_yaml"].startswith("members: 5")


def test_predict_batch_service_across_processes(spawn):
    server = spawn("serve-predict")
    wait_for_line(server, "ready", timeout=30)
    got = result_of(spawn("call-predict", "64"))
    assert got["service"], "the client found no PredictBatch service"
    assert got["success"] and got["model_version"] == 3
    expected = np.arange(64 * 4, dtype=np.float64).reshape(64, 4)
    expected[:, :2] += 1.0
    np.testing.assert_array_equal(np.array(got["next_states"]).reshape(64, 4), expected)
    assert got["spread_len"] == 64 * 4
    assert not got["bad_success"] and "bad dimensions" in got["bad_message"]


def test_state_vector_cdr_is_the_same_in_rclpy_and_rosbags(spawn):
    store = mbrl_typestore()
    typename = "mbrl_interfaces/msg/StateVector"
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    StateVector = store.types[typename]
    ours = StateVector(
        header=Header(stamp=Time(sec=1_700_000_000, nanosec=5), frame_id="map"),
        names=["x", "y", "yaw"], values=np.array([0.5, -1.0, 3.0]), valid=True, reason="",
    )
    peer = spawn("serialization", stdin=subprocess.PIPE)
    peer.stdin.write(base64.b64encode(bytes(store.serialize_cdr(ours, typename))).decode())
    peer.stdin.close()
    got = result_of(peer)

    # rosbags -> rclpy
    assert got["decoded"] == {
        "sec": 1_700_000_000, "nanosec": 5, "frame_id": "map",
        "names": ["x", "y", "yaw"], "values": [0.5, -1.0, 3.0], "valid": True, "reason": "",
    }
    # rclpy -> rosbags
    raw = base64.b64decode(got["encoded"])
    theirs = store.deserialize_cdr(raw, typename)
    assert (theirs.header.stamp.sec, theirs.header.stamp.nanosec, theirs.header.frame_id) == (42, 7, "odom")
    assert theirs.names == ["x", "y"] and list(theirs.values) == [1.5, -2.25]
    assert theirs.valid is False and theirs.reason == "stale odometry"
    # (not compared byte for byte: CDR alignment padding is unspecified, and Fast CDR leaves it as is)


def test_rosbags_type_hashes_match_rosidl():
    """Bags written with rosbags carry the same RIHS01 type hashes as ROS 2's own."""
    store = mbrl_typestore()
    share = DEFAULT_INSTALL / "mbrl_interfaces" / "share" / "mbrl_interfaces" / "msg"
    for name in ("StateVector", "CommandVector", "ModelUpdate"):
        described = json.loads((share / f"{name}.json").read_text())
        rosidl_hash = next(
            h["hash_string"] for h in described["type_hashes"] if h["type_name"] == f"mbrl_interfaces/msg/{name}"
        )
        assert store.hash_rihs01(f"mbrl_interfaces/msg/{name}") == rosidl_hash, name


def test_ros_env_matches_colcon_setup_bash(ros_env):
    """workspace_env() extends the environment as sourcing install/setup.bash does."""
    venv = sys.prefix
    script = f'export AMENT_PREFIX_PATH="{venv}"; source "{DEFAULT_INSTALL}/setup.bash"; env -0'
    base = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH")}
    out = subprocess.run(["bash", "-c", script], env=base, capture_output=True, timeout=60, check=True)
    sourced = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
    ours = workspace_env(base=base)
    for variable in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH"):
        assert ours.get(variable, "").split(os.pathsep) == sourced.get(variable, "").split(os.pathsep), variable
    assert str(REPO_ROOT / "ros_ws" / "install" / "mbrl_interfaces") in ours["AMENT_PREFIX_PATH"]


def test_package_manifests_pass_catkin_pkg_validation():
    """colcon quietly builds a package whose package.xml is invalid as plain Python: check it here."""
    from catkin_pkg.package import parse_package

    for name, build_type in (("mbrl_interfaces", "ament_cmake"), ("mbrl_ros", "ament_python")):
        warnings: list[str] = []
        package = parse_package(REPO_ROOT / "ros_ws" / "src" / name, warnings=warnings)
        package.validate(warnings=warnings)
        assert (package.name, package.get_build_type(), warnings) == (name, build_type, [])
        if name == "mbrl_interfaces":
            assert [g.name for g in package.member_of_groups] == ["rosidl_interface_packages"]


def test_ros_env_without_a_workspace(tmp_path):
    missing = tmp_path / "install"
    with pytest.raises(WorkspaceNotBuiltError, match="scripts/build_ros_ws.sh"):
        workspace_env(missing, base={"PATH": "/usr/bin"})
    # A robot where install/setup.bash was sourced: the environment already has it.
    prefix = tmp_path / "robot_install"
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / "mbrl_interfaces"
    marker.parent.mkdir(parents=True)
    marker.touch()
    base = {"AMENT_PREFIX_PATH": f"{prefix}:/opt/ros/jazzy", "PYTHONPATH": "/somewhere"}
    env = workspace_env(missing, base=base, domain_id=17)
    assert env == {**base, "ROS_DOMAIN_ID": "17", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
