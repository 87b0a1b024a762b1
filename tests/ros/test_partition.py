"""Issue 9 §3: a network partition between the robot and the workstation, real processes over real DDS.

Two network namespaces joined by a veth pair with private addresses: "robot" runs the hardware
driver, estimator, controller and data_logger; "workstation" runs the dynamics_server and the
trainer. The nodes are those of bringup.launch.yaml (the same commands and parameters, started by
the pip launcher, with respawn), each run through ``ip netns exec``; DDS discovers across the link
(ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, a ROS domain of this test's own). The link is cut (veth down)
while the car is controlled: the controller keeps planning on the model it has; a model deployed
on the workstation during the partition reaches the controller once the link is back. A test
process of its own in each namespace (dynamics_peers.py) watches and acts.

Needs root (CAP_NET_ADMIN) and iproute2: where namespaces cannot be made the test is skipped with
the reason; CI on the project's machines runs as root.
"""

from __future__ import annotations

import pickle
import time

import pytest

from mbrl_ros import launcher
from mbrl_ros.io import checkpoint
from mbrl_ros.io.config import launch_parameters, model_section_at
from mbrl_ros.io.model_update import pack
from mbrl_ros.robots import get_robot
from mbrl_ros.ros_env import REPO_ROOT
from mbrl_ros.stack_run import prepare_config
from netns import exec_in, host_tag, peers, set_link, subnet_env, two_hosts

ROBOT_SIDE = ("sim_car", "estimator", "controller", "data_logger")
WORKSTATION_SIDE = ("dynamics_server", "trainer")
OVERRIDES = {node: {"diagnostics_period": 0.2} for node in ("estimator", "controller", "dynamics_server")}


def test_control_continues_through_a_partition_and_model_updates_resume_after_it(tmp_path):
    tag = host_tag("partition")
    env = subnet_env(tag, tmp_path / "ros_log")
    config = prepare_config(REPO_ROOT / "config", tmp_path / "config", "car", "parking", OVERRIDES)
    trainer = launch_parameters(config, "car", "parking", "trainer")
    section = model_section_at(trainer["parametric"], trainer["dt"], "trainer.parametric")
    build = get_robot("car").build_model
    checkpoint.save(first := tmp_path / "model.pt", build(section), section)
    update = {**section, "params": {**section["params"], "wheelbase": 2.6}}
    (update_file := tmp_path / "update.pkl").write_bytes(pickle.dumps(pack(build(update), update, None, 1,
                                                                           "parametric")))
    with two_hosts(tag) as (robot, workstation, link):
        description = launcher.load_launch_file(
            REPO_ROOT / "launch" / "bringup.launch.yaml",
            {"robot": "car", "hardware": "sim", "lockstep": "false", "run_dir": str(tmp_path / "run"),
             "config_dir": str(config), "checkpoint": str(first)}, environment=env)
        assert sorted(n.label for n in description.nodes) == sorted(("launch_check",) + ROBOT_SIDE + WORKSTATION_SIDE)
        for node in description.nodes:  # launch_check (no network) stays where the launch is
            if node.label in ROBOT_SIDE + WORKSTATION_SIDE:
                node.command = exec_in(robot if node.label in ROBOT_SIDE else workstation, node.command)
        log = open(tmp_path / "stack.log", "w", buffering=1)
        runner = launcher.make_runner(description, output=lambda label, _, text: log.write(f"[{label}] {text}\n"),
                                      log_directory=tmp_path / "launch_log").start()
        try:
            with peers(env, "/car") as peer:
                on_robot, on_workstation = peer(robot), peer(workstation)
                controller = lambda: on_robot.do("latest", node="controller")  # noqa: E731

                def planning(at_least: int, timeout: float) -> dict:
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline:
                        if int((values := controller()).get("cycles_plan", "0")) >= at_least:
                            return values
                        time.sleep(0.2)
                    pytest.fail(f"controller: fewer than {at_least} planned cycles within {timeout} s: {controller()}\n"
                                + (tmp_path / "stack.log").read_text()[-3000:])

                # The checkpoint's model crossed from the workstation: the controller plans with it.
                before = planning(5, 180)
                assert before["model_version"] == "1", before

                set_link(robot, link, "down")
                cut = time.monotonic()
                served = on_workstation.do("publish_candidate", fields=str(update_file))["published"]
                deployed = on_workstation.do("wait_model", checksum=served, version=2, timeout=30)
                assert deployed["received"], deployed
                during = planning(int(before["cycles_plan"]) + 15, 30)  # three seconds at 5 Hz, link down
                assert during["model_version"] == "1" and "stale" not in during["last_reason"], during
                partitioned = time.monotonic() - cut

                set_link(robot, link, "up")
                healed = time.monotonic()
                after = on_robot.do("wait_diagnostics", node="controller", key="model_version", value="2", timeout=60)
                assert after["found"], (after, (tmp_path / "stack.log").read_text()[-3000:])
                print(f"partition: {partitioned:.1f} s with the link down, the controller planned "
                      f"{int(during['cycles_plan']) - int(before['cycles_plan'])} cycles on model v1; model v2 "
                      f"reached it {time.monotonic() - healed:.2f} s after the link came back")
                assert not {name: codes for name, codes in runner.exit_codes.items() if any(codes)}, runner.exit_codes
        finally:
            runner.stop(timeout=30)
            log.close()
