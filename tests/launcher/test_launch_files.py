"""Loading launch files: arguments, includes, groups, nodes' command lines, and
the errors raised before anything starts. Nothing here starts a process."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import yaml

from launcher_helpers import write
from mbrl_ros.launcher import (LaunchArgumentError, LaunchFileError, discover_arguments,
                               load_launch_file)


@pytest.fixture
def robot_file(tmp_path, ament_prefix):
    return write(tmp_path / "robot.launch.yaml", """
        launch:
        - arg: {name: robot, default: car, description: Which robot, choice: [{value: car}, {value: hand}]}
        - arg: {name: rate, default: '20'}
        - node: {pkg: test_pkg, exec: sleeper, name: "$(var robot)_node", args: "--after $(var rate)"}
        """)


def test_defaults_and_overrides(robot_file):
    with load_launch_file(robot_file) as description:
        assert description.configurations["robot"] == "car"
        assert description.nodes[0].name == "car_node"
        assert description.nodes[0].command[1:3] == ["--after", "20"]
    with load_launch_file(robot_file, ["robot:=hand", "rate:=5"]) as description:
        assert description.nodes[0].name == "hand_node"
        assert description.nodes[0].command[1:3] == ["--after", "5"]
    assert [a.name for a in description.arguments] == ["robot", "rate"]


def test_unknown_argument_lists_the_valid_ones(robot_file):
    with pytest.raises(LaunchArgumentError) as info:
        load_launch_file(robot_file, {"robto": "car"})
    message = str(info.value)
    assert "unknown launch argument(s) robto" in message
    assert "robot (car|hand) [default: 'car']" in message and "rate [default: '20']" in message


def test_value_outside_choices_is_refused(robot_file):
    with pytest.raises(LaunchArgumentError, match="'truck', which is not one of its choices: car, hand"):
        load_launch_file(robot_file, {"robot": "truck"})


def test_malformed_command_line_argument(robot_file):
    with pytest.raises(LaunchArgumentError, match="name:=value, got 'robot=car'"):
        load_launch_file(robot_file, ["robot=car"])


def test_required_argument_and_bad_default(tmp_path, ament_prefix):
    required = write(tmp_path / "required.launch.yaml", """
        launch:
        - arg: {name: map, description: the map file}
        """)
    with pytest.raises(LaunchArgumentError, match="required argument 'map' was not given; pass map:=VALUE"):
        load_launch_file(required)
    assert load_launch_file(required, {"map": "m.yaml"}).configurations["map"] == "m.yaml"
    bad_default = write(tmp_path / "bad.launch.yaml", """
        launch:
        - arg: {name: mode, default: C, choice: [{value: A}, {value: B}]}
        """)
    with pytest.raises(LaunchFileError, match=r"bad.launch.yaml:2: in 'arg': default 'C' is not one of"):
        load_launch_file(bad_default)


def test_include_passes_arguments_and_finds_files_by_dirname(tmp_path, ament_prefix):
    write(tmp_path / "parts" / "inner.launch.yaml", """
        launch:
        - arg: {name: who, description: passed by the includer}
        - arg: {name: inner_only, default: "$(var who)-inner"}
        - node: {pkg: test_pkg, exec: sleeper, name: "$(var who)"}
        """)
    outer = write(tmp_path / "outer.launch.yaml", """
        launch:
        - arg: {name: robot, default: car}
        - include:
            file: "$(dirname)/parts/inner.launch.yaml"
            arg: [{name: who, value: "$(var robot)_driver"}]
        # An include is not a scope (upstream): its configurations stay visible.
        - node: {pkg: test_pkg, exec: sleeper, name: after, args: "$(var inner_only)"}
        """)
    with load_launch_file(outer, {"inner_only": "given"}) as description:
        assert [n.name for n in description.nodes] == ["car_driver", "after"]
        assert description.nodes[1].command[1] == "given"
    assert [a.name for a in description.arguments] == ["robot", "who", "inner_only"]
    assert description.arguments[1].file == str(tmp_path / "parts" / "inner.launch.yaml")
    with load_launch_file(outer) as description:
        assert description.nodes[1].command[1] == "car_driver-inner"


def test_include_must_pass_required_arguments(tmp_path, ament_prefix):
    write(tmp_path / "inner.launch.yaml", "launch:\n- arg: {name: who}\n")
    outer = write(tmp_path / "outer.launch.yaml", """
        launch:
        - include: {file: "$(dirname)/inner.launch.yaml"}
        """)
    with pytest.raises(LaunchFileError, match="outer.launch.yaml:2: in 'include': included file .* "
                                              "needs argument 'who'"):
        load_launch_file(outer)


def test_groups_conditions_scopes_and_namespaces(tmp_path, ament_prefix):
    path = write(tmp_path / "groups.launch.yaml", """
        launch:
        - arg: {name: use_extra, default: 'false'}
        - arg: {name: robot, default: car}
        - node: {pkg: test_pkg, exec: sleeper, name: extra, if: "$(var use_extra)"}
        - node: {pkg: test_pkg, exec: sleeper, name: no_extra, unless: "$(var use_extra)"}
        - group:
            if: "$(equals $(var robot) car)"
            children:
            - push-ros-namespace: {namespace: "$(var robot)"}
            - let: {name: scoped_value, value: inside}
            - set_env: {name: MBRL_TEST_SCOPE, value: inside}
            - node: {pkg: test_pkg, exec: sleeper, name: driver}
            - group:
              - push_ros_namespace: {namespace: sensors}
              - node: {pkg: test_pkg, exec: sleeper, name: lidar, namespace: front}
              - node: {pkg: test_pkg, exec: sleeper, name: absolute, namespace: /elsewhere}
        - group:
            scoped: false
            children:
            - let: {name: leaked, value: from_unscoped_group}
        - node:
            pkg: test_pkg
            exec: sleeper
            name: outside
            args: "$(var scoped_value unset) $(var leaked)"
            if: "$(not-equals $(var robot) hand)"
        """)
    with load_launch_file(path) as description:
        nodes = {n.name: n for n in description.nodes}
        assert list(nodes) == ["no_extra", "driver", "lidar", "absolute", "outside"]
        assert [nodes[n].namespace for n in nodes] == [None, "/car", "/car/sensors/front", "/elsewhere", None]
        assert nodes["lidar"].full_name == "/car/sensors/front/lidar"
        assert nodes["driver"].environment["MBRL_TEST_SCOPE"] == "inside"
        assert "MBRL_TEST_SCOPE" not in nodes["outside"].environment
        assert nodes["outside"].command[1:3] == ["unset", "from_unscoped_group"]
        assert "ros_namespace" not in description.configurations
    with load_launch_file(path, {"use_extra": "true", "robot": "hand"}) as description:
        assert [n.name for n in description.nodes] == ["extra"]


def test_condition_must_be_boolean(tmp_path, ament_prefix):
    path = write(tmp_path / "cond.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, if: "yes please"}
        """)
    with pytest.raises(LaunchFileError, match="'if' must evaluate to true, false, 1 or 0, got 'yes please'"):
        load_launch_file(path)


def test_node_command_line_is_built_like_launch_ros(tmp_path, ament_prefix):
    write(tmp_path / "params.yaml", "/**:\n  ros__parameters:\n    from_file: 1\n")
    path = write(tmp_path / "node.launch.yaml", """
        launch:
        - arg: {name: rate, default: '20'}
        - push-ros-namespace: {namespace: car}
        - node:
            pkg: test_pkg
            exec: sleeper
            name: estimator
            namespace: est
            args: "--rate $(var rate) 'two words' pre$(var rate)post"
            ros_args: "--log-level debug"
            output: screen
            respawn: 'true'
            respawn_delay: 1.5
            respawn_max_retries: 4
            param:
            - {name: a_string, value: '5'}
            - {name: an_int, value: "$(var rate)"}
            - {name: floats, value: [1.0, 2.5]}
            - {name: nested, param: [{name: gain, value: 0.5}]}
            - {from: "$(dirname)/params.yaml"}
            - {name: after_file, value: true}
            remap:
            - {from: odom, to: "/car/hw/odom"}
        """)
    with load_launch_file(path) as description:
        node = description.nodes[0]
        generated_1, from_file, generated_2 = node.params_files
        assert node.command == [
            str(ament_prefix / "lib" / "test_pkg" / "sleeper"),
            "--rate", "20", "two words", "pre20post",
            "--ros-args", "--log-level", "debug",
            "--ros-args", "-r", "__node:=estimator", "-r", "__ns:=/car/est",
            "--params-file", generated_1, "--params-file", from_file, "--params-file", generated_2,
            "-r", "odom:=/car/hw/odom"]
        assert from_file == str(tmp_path / "params.yaml")
        # Inline values keep launch_ros' types; the key is the full node name.
        assert yaml.safe_load(Path(generated_1).read_text()) == {"/car/est/estimator": {"ros__parameters": {
            "a_string": "5", "an_int": 20, "floats": [1.0, 2.5], "nested": {"gain": 0.5}}}}
        assert yaml.safe_load(Path(generated_2).read_text()) == {
            "/car/est/estimator": {"ros__parameters": {"after_file": True}}}
        assert (node.output, node.respawn, node.respawn_delay, node.respawn_max_retries) == ("screen", True, 1.5, 4)
        assert node.label == "estimator"
    assert not Path(generated_1).exists(), "cleanup() removes generated parameter files"


def test_unnamed_node_gets_wildcard_params_and_unique_labels(tmp_path, ament_prefix):
    path = write(tmp_path / "n.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, param: [{name: x, value: 1}]}
        - node: {pkg: test_pkg, exec: sleeper}
        """)
    with load_launch_file(path) as description:
        first, second = description.nodes
        assert first.command[1:3] == ["--ros-args", "--params-file"]
        assert list(yaml.safe_load(Path(first.params_files[0]).read_text())) == ["/**"]
        assert (first.label, second.label) == ("sleeper", "sleeper-2")
        assert first.output == "log" and first.respawn is False


def test_executables_from_entry_points_and_not_found(tmp_path, ament_prefix, monkeypatch):
    site = tmp_path / "site"
    write(site / "fake_nodes-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: fake-nodes\nVersion: 1.0\n")
    write(site / "fake_nodes-1.0.dist-info" / "entry_points.txt", """
        [mbrl_ros.nodes]
        other_pkg/talker = fake_module:main
        estimator = fake_module:estimator
        """)
    monkeypatch.syspath_prepend(str(site))
    path = write(tmp_path / "ep.launch.yaml", """
        launch:
        - node: {pkg: other_pkg, exec: talker}
        - node: {pkg: mbrl_ros, exec: estimator}
        """)
    # This process's environment only: the built colcon workspace would provide mbrl_ros's executables.
    with load_launch_file(path, environment=dict(os.environ)) as description:
        talker, estimator = description.nodes
        assert talker.command[:5] == [sys.executable, "-m", "mbrl_ros.launcher.entry_point",
                                      "fake_module:main", "talker"]
        assert estimator.command[3:5] == ["fake_module:estimator", "estimator"]
    missing = write(tmp_path / "missing.launch.yaml", "launch:\n- node: {pkg: test_pkg, exec: nope}\n")
    with pytest.raises(LaunchFileError, match=r"missing.launch.yaml:2: in 'node': executable 'nope' of "
                                              r"package 'test_pkg' not found; looked for .*lib/test_pkg/nope"):
        load_launch_file(missing)


@pytest.mark.parametrize("body,message", [
    ("- nod: {pkg: a, exec: b}", "line 2|tag 'nod' is not a launch tag; supported tags: arg, let, include"),
    ("- timer: {period: 1.0}", "tag 'timer' is valid upstream but not supported by mbrl-ros launch"),
    ("- node: {pkg: a, exec: b, pakage: c}", "unknown attribute 'pakage'; valid attributes: pkg, exec"),
    ("- node: {package: a, exec: b}", "unknown attribute 'package' \\(use 'pkg'\\)"),
    ("- arg: {name: a, choices: [a, b]}", "upstream spells it 'choice'"),
    ("- group: {namespace: car, children: []}", "push-ros-namespace"),
    ("- node: {pkg: a, exec: b, name: \"$(anon x)\"}", "\\$\\(anon ...\\): valid upstream but not supported"),
    ("- node: {pkg: a, exec: b, name: \"$(nope x)\"}", "\\$\\(nope ...\\): unknown substitution"),
    ("- arg: {name: rate, default: 5}", "attribute 'default' must be a string, got int 5 \\(quote it"),
    ("- node: {pkg: a, exec: b, respawn: true}", "attribute 'respawn' must be a string"),
    ("- node: {pkg: a, exec: b, respawn_delay: 2}", "must be a float such as 2.0"),
    ("- node: {pkg: a, exec: b, respawn_max_retries: '3'}", "must be an unquoted integer >= -1 such as 10"),
    ("- node: {pkg: a, exec: b, respawn_max_retries: -2}", "must be an unquoted integer >= -1"),
    ("- node: {pkg: a, exec: b, on_exit: restart}", "attribute 'on_exit' must be 'shutdown'"),
    ("- node: {pkg: a, exec: b, if: x, unless: y}", "'if' and 'unless' are mutually exclusive"),
    ("- node: {pkg: a, exec: b, param: [{name: p}]}", "param 'p' needs exactly one of 'value'"),
    ("- node: {pkg: a, exec: b, param: [{from: f, name: p}]}", "'from' is exclusive"),
    ("- node: {pkg: a, exec: b, param: [{name: p, value: {a: 1}}]}", "nested 'param' list"),
    ("- node: {pkg: a}", "missing required attribute 'exec'"),
    ("- group: {scoped: 'false', children: []}", "'scoped' must be true or false \\(unquoted\\)"),
    ("- node: [1]", "needs a mapping of attributes"),
    ("- node: {pkg: a, exec: b}\n  arg: {}", "exactly one key, its tag"),
    ("- node: {pkg: a, exec: b, name: x, name: y}", "duplicate key 'name'"),
    ("- node: {pkg: a, exec: [b", "invalid YAML"),
])
def test_errors_name_file_line_and_tag_before_anything_starts(tmp_path, body, message):
    path = write(tmp_path / "bad.launch.yaml", "launch:\n" + body + "\n")
    with pytest.raises(LaunchFileError) as info:
        load_launch_file(path)
    text = str(info.value)
    assert text.startswith(f"{path}:"), text
    for part in message.split("|"):
        if part.startswith("line "):
            assert text.startswith(f"{path}:{part[5:]}:"), text
        else:
            assert __import__("re").search(part, text), text


def test_resolution_errors(tmp_path, ament_prefix):
    cases = {
        "- node: {pkg: test_pkg, exec: sleeper, output: loud}": "output 'loud' is not one of screen, log, both",
        "- node: {pkg: test_pkg, exec: sleeper, name: 'bad-name'}": "'bad-name' is not a valid node name",
        "- node: {pkg: test_pkg, exec: sleeper, respawn: 'sometimes'}": "respawn must be 'true' or 'false'",
        "- node: {pkg: test_pkg, exec: sleeper, param: [{from: nope.yaml}]}": "parameter file .*nope.yaml' does not exist",
        "- include: {file: nope.launch.yaml}": "included launch file .*nope.launch.yaml' does not exist",
        "- include: {file: other_launch.py}": "only YAML launch files can be included",
        "- let: {name: x, value: \"$(var undefined_thing)\"}": "launch configuration 'undefined_thing' is not set",
    }
    for body, message in cases.items():
        path = write(tmp_path / "bad.launch.yaml", "launch:\n" + body + "\n")
        with pytest.raises(LaunchFileError, match=message) as info:
            load_launch_file(path)
        assert str(info.value).startswith(f"{path}:2:"), str(info.value)


def test_root_must_be_launch_list(tmp_path):
    path = write(tmp_path / "x.launch.yaml", "nodes: []\n")
    with pytest.raises(LaunchFileError, match="exactly one top-level key, 'launch'"):
        load_launch_file(path)


def test_discovery_lists_arguments_in_every_branch(tmp_path, ament_prefix):
    write(tmp_path / "car.launch.yaml", "launch:\n- arg: {name: car_speed, default: '1.0'}\n")
    path = write(tmp_path / "main.launch.yaml", """
        launch:
        - arg: {name: robot, default: car}
        - group:
            if: "$(equals $(var robot) hand)"
            children:
            - arg: {name: hand_only, default: x}
        - include: {file: "$(dirname)/$(var robot).launch.yaml"}
        - include: {file: "$(dirname)/$(var missing_arg).launch.yaml"}
        """)
    arguments, notes = discover_arguments(path)
    assert [a.name for a in arguments] == ["robot", "hand_only", "car_speed"]
    assert any("missing_arg" in note for note in notes)
    # ... so an argument of an untaken branch is still a known argument.
    with pytest.raises(LaunchFileError, match="missing_arg"):
        load_launch_file(path, {"hand_only": "y"})


def test_mbrl_ros_executables_table_is_a_fallback(tmp_path, ament_prefix, monkeypatch):
    table = types.ModuleType("mbrl_ros.executables")
    table.EXECUTABLES = {"controller": "mbrl_ros.nodes.controller:main"}
    monkeypatch.setitem(sys.modules, "mbrl_ros.executables", table)
    path = write(tmp_path / "t.launch.yaml", "launch:\n- node: {pkg: mbrl_ros, exec: controller}\n")
    with load_launch_file(path, environment=dict(os.environ)) as description:
        assert description.nodes[0].command[3:5] == ["mbrl_ros.nodes.controller:main", "controller"]


# --- the repository's bringup: robot and hardware choices ------------------------------------------
BRINGUP = Path(__file__).resolve().parents[2] / "launch" / "bringup.launch.yaml"


@pytest.mark.parametrize("args, driver, task, model", [
    ({}, "sim_car", "parking", "parametric"),
    ({"hardware": "real"}, "real_car", "parking", "parametric"),
    ({"robot": "hand"}, "sim_hand", "reach", "parametric"),
    ({"robot": "hand", "hardware": "real"}, "real_hand", "reach", "parametric"),
])
def test_bringup_picks_the_driver_and_the_robots_default_task_and_model(args, driver, task, model):
    from mbrl_ros.ros_env import workspace_env

    with load_launch_file(BRINGUP, args, environment=workspace_env()) as description:
        names = [n.name for n in description.nodes]
        assert names == ["launch_check", driver, "estimator", "dynamics_server", "controller", "data_logger", "trainer"]
        assert (description.configurations["task"], description.configurations["model"]) == (task, model)
        trainer = next(n for n in description.nodes if n.name == "trainer").command
        inline = yaml.safe_load(Path(trainer[-1]).read_text())  # the inline params, written for --params-file
        assert [section["ros__parameters"]["model_kind"] for section in inline.values()] == [model]


@pytest.mark.parametrize("args, message", [
    ({"robot": "car", "task": "reach"}, "car_reach.yaml' does not exist"),
    ({"robot": "hand", "task": "parking"}, "hand_parking.yaml' does not exist"),
    ({"hardware": "hil"}, "'hil', which is not one of its choices: sim, real"),
    ({"robot": "drone"}, "'drone', which is not one of its choices: car, hand"),
])
def test_bringup_refuses_a_task_of_another_robot_and_unknown_choices(args, message):
    from mbrl_ros.ros_env import workspace_env

    with pytest.raises((LaunchFileError, LaunchArgumentError), match=message.replace("(", r"\(")):
        load_launch_file(BRINGUP, args, environment=workspace_env())


@pytest.mark.parametrize("planner", ["mppi", "ilqr", "cem", "rs", "policy"])
def test_bringup_gives_the_controller_the_chosen_planner(planner):
    from mbrl_ros.core.control import POLICY_CONTROLLER
    from mbrl_ros.core.planners import PLANNERS
    from mbrl_ros.ros_env import workspace_env

    # Every launch choice is a planner the controller can build, or the learned policy alone.
    assert planner in PLANNERS or planner == POLICY_CONTROLLER
    with load_launch_file(BRINGUP, {"controller": planner}, environment=workspace_env()) as description:
        controller = next(n for n in description.nodes if n.name == "controller").command
        inline = yaml.safe_load(Path(controller[-1]).read_text())
        assert [section["ros__parameters"]["planner"] for section in inline.values()] == [planner]
        # The trainer learns a policy (the config's policy section) exactly when the policy is to drive.
        trainer = next(n for n in description.nodes if n.name == "trainer").command
        inline = yaml.safe_load(Path(trainer[-1]).read_text())
        learn = [section["ros__parameters"]["learn_policy"] for section in inline.values()]
        assert learn == [planner == "policy"], learn


def test_bringup_lets_a_planner_with_the_policy_prior_learn_a_policy():
    from mbrl_ros.ros_env import workspace_env

    with load_launch_file(BRINGUP, {"controller": "mppi", "learn_policy": "true"},
                          environment=workspace_env()) as description:
        trainer = next(n for n in description.nodes if n.name == "trainer").command
        inline = yaml.safe_load(Path(trainer[-1]).read_text())
        assert [section["ros__parameters"]["learn_policy"] for section in inline.values()] == [True]


@pytest.mark.parametrize("robot", ["car", "hand", "base"])
@pytest.mark.parametrize("args, fallback", [({}, False), ({"lockstep": "false"}, True), ({"hardware": "real"}, True)])
def test_a_lockstep_simulation_uses_late_plans_and_real_time_replaces_them(robot, args, fallback):
    """The controller's overrun_fallback follows the clock the world runs on: a lockstep simulation waits for each
    command (a plan slower than dt is late only on the wall clock: used), real time and hardware do not wait
    (the previous plan's next step goes out instead)."""
    from mbrl_ros.ros_env import workspace_env

    with load_launch_file(BRINGUP, {"robot": robot, **args}, environment=workspace_env()) as description:
        controller = next(n for n in description.nodes if n.name == "controller").command
        inline = yaml.safe_load(Path(controller[-1]).read_text())
        values = [section["ros__parameters"] for section in inline.values()]
        assert [(v["overrun_fallback"], v["use_sim_time"]) for v in values] == [(fallback, not fallback)], values
