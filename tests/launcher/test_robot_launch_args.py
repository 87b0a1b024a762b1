"""Every robot's launch file takes every bringup argument (none is dropped silently for one robot)."""

from __future__ import annotations

import yaml

from mbrl_ros.robots import available_robots
from mbrl_ros.ros_env import REPO_ROOT

LAUNCH = REPO_ROOT / "launch"


def _args(entries: list[dict]) -> dict[str, dict]:
    return {e["arg"]["name"]: e["arg"] for e in entries if "arg" in e}


def test_every_robot_launch_file_takes_every_argument_bringup_passes():
    bringup = yaml.safe_load((LAUNCH / "bringup.launch.yaml").read_text())["launch"]
    group = next(e["group"] for e in bringup if "group" in e)
    include = next(e["include"] for e in group if "include" in e)
    passed = {a["name"] for a in include["arg"]}
    robots = [c["value"] for c in _args(bringup)["robot"]["choice"]]
    assert sorted(robots) == available_robots()
    for robot in robots:
        declared = set(_args(yaml.safe_load((LAUNCH / f"{robot}.launch.yaml").read_text())["launch"]))
        assert passed <= declared, f"launch/{robot}.launch.yaml drops {sorted(passed - declared)}"
