"""Issue 13 §1: the robot and workstation roles of bringup.launch.yaml, on two hosts joined only by a network.

Two network namespaces joined by a veth pair (tests/ros/netns.py): the pip launcher starts
``bringup.launch.yaml role:=robot`` with every node in the "robot" namespace (sim_car in lockstep,
estimator, controller) and ``role:=workstation`` with every node in the "workstation" one
(dynamics_server, data_logger, trainer), each side with a run folder of its own. The only path between
them is DDS over the link: the workstation's data_logger records the robot's topics, its trainer fits
on those bags, and the model goes back to the robot's controller on the latched dynamics/model topic.
The car must then park. A test process in the robot namespace (dynamics_peers.py) watches.
"""

from __future__ import annotations

import time

import pytest

from mbrl_ros import launcher
from mbrl_ros.ros_env import REPO_ROOT
from mbrl_ros.stack_run import prepare_config
from netns import exec_in, host_tag, peers, subnet_env, two_hosts

# Little exploration (as the demo test), bags closed every 10 s of simulated time, quick diagnostics.
SMALL = {"trainer": {"random_transitions": 400, "poll_period": 1.0},
         "controller": {"random_transitions": 400, "diagnostics_period": 0.2},
         "data_logger": {"split_duration": 10.0}}
SIDES = {"robot": ["launch_check", "sim_car", "estimator", "controller"],
         "workstation": ["launch_check", "dynamics_server", "data_logger", "trainer"]}
EVALUATED = 2


def test_the_workstation_learns_from_the_robots_topics_and_the_robot_parks_with_its_model(tmp_path):
    tag = host_tag("roles")
    env = subnet_env(tag, tmp_path / "ros_log")
    config = prepare_config(REPO_ROOT / "config", tmp_path / "config", "car", "parking", SMALL)
    log = open(tmp_path / "stack.log", "w", buffering=1)
    runners = []

    def failed() -> dict:
        return {name: codes for r in runners for name, codes in r.exit_codes.items() if any(codes)}

    def wait_for(condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not failed(), (failed(), (tmp_path / "stack.log").read_text()[-3000:])
            if found := condition():
                return found
            time.sleep(1.0)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n" + (tmp_path / "stack.log").read_text()[-3000:])

    with two_hosts(tag) as (robot, workstation, _):
        try:
            for role, namespace in (("robot", robot), ("workstation", workstation)):
                description = launcher.load_launch_file(
                    REPO_ROOT / "launch" / "bringup.launch.yaml",
                    {"robot": "car", "hardware": "sim", "lockstep": "true", "role": role,
                     "run_dir": str(tmp_path / role), "config_dir": str(config)}, environment=env)
                assert [n.label for n in description.nodes] == SIDES[role]
                for node in description.nodes:
                    node.command = exec_in(namespace, node.command)
                runners.append(launcher.make_runner(
                    description, output=lambda label, _, text, role=role: log.write(f"[{role}/{label}] {text}\n"),
                    log_directory=tmp_path / f"{role}_launch_log").start())
            with peers(env, "/car") as peer:
                on_robot = peer(robot)
                wait_for(lambda: int(on_robot.do("latest", node="controller").get("model_version", "0") or 0) >= 1,
                         600, "the workstation's first model to reach the robot's controller")
                random = on_robot.do("episodes")["episodes"]  # the one running now started without a model

                def evaluated() -> list[dict] | None:
                    reports = on_robot.do("episodes")["episodes"]
                    return reports if len(reports) >= len(random) + 1 + EVALUATED else None
                episodes = wait_for(evaluated, 600, f"{EVALUATED} episodes under the learned model")
            controlled = episodes[len(random) + 1:len(random) + 1 + EVALUATED]
            assert not failed(), failed()
        finally:
            for runner in runners:
                runner.stop(timeout=30)
            log.close()

    error = lambda reports: [round(float(e["final_position_error_m"]), 2) for e in reports]  # noqa: E731
    print(f"roles: {len(random)} episodes before the first model (final distance to the goal {error(random)} m), "
          f"under the model {[e['success'] for e in controlled]} ({error(controlled)} m)")
    assert sum(e["success"] == "True" for e in controlled) >= 1, (random, controlled)
    # The data crossed the link: bags and checkpoints are on the workstation, nothing on the robot.
    assert list((tmp_path / "workstation" / "bags").glob("*/metadata.yaml")), "no closed bag on the workstation"
    assert list((tmp_path / "workstation" / "checkpoints").glob("model_v*.pt")), "no checkpoint on the workstation"
    assert not (tmp_path / "robot").exists(), sorted(p.name for p in (tmp_path / "robot").rglob("*"))
