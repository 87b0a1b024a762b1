"""Parameters, namespaces and remappings arriving in real rclpy nodes, through
the command line the launcher builds (no ros2cli involved)."""

from __future__ import annotations

import json

from launcher_helpers import DATA, write
from mbrl_ros import launcher


def test_params_namespace_and_remaps_reach_rclpy_nodes(tmp_path, ament_prefix, ros_isolation, captured):
    path = write(tmp_path / "ros.launch.yaml", f"""
        launch:
        - arg: {{name: robot, default: car}}
        - arg: {{name: rate, default: '20'}}
        - group:
          - push-ros-namespace: {{namespace: "$(var robot)"}}
          - node:
              pkg: test_pkg
              exec: param_node
              name: estimator
              namespace: est
              output: screen
              param:
              - {{from: "{DATA}/estimator_params.yaml"}}
              - {{name: frame, value: inline_overrides_file}}
              - {{name: rate_from_arg, value: "$(var rate)"}}
              - {{name: label, value: '5'}}
              - {{name: filter, param: [{{name: alpha, value: 0.25}}, {{name: enabled, value: true}}]}}
              remap:
              - {{from: chatter, to: "/$(var robot)/remapped"}}
        - node: {{pkg: test_pkg, exec: param_node, output: screen,
                 param: [{{name: speeds, value: [1, 2, 3]}}]}}
        """)
    assert launcher.run(path, output=captured) == 0, captured.text()
    estimator = json.loads(captured.of("estimator", "stdout")[0])
    assert estimator["name"] == "estimator"
    assert estimator["namespace"] == "/car/est"
    assert estimator["topic"] == "/car/remapped"
    assert estimator["params"] == {
        "rate_hz": 50.0, "gains": [1.0, 2.0, 3.0],      # from the file
        "frame": "inline_overrides_file",                # inline, after the file: wins
        "rate_from_arg": 20,                             # substitution read as YAML: int
        "label": "5",                                    # plain string stays a string
        "filter.alpha": 0.25, "filter.enabled": True,    # nested params
    }
    unnamed = json.loads(captured.of("param_node", "stdout")[0])
    assert (unnamed["name"], unnamed["namespace"], unnamed["topic"]) == ("param_node", "/", "/chatter")
    assert unnamed["params"] == {"speeds": [1, 2, 3]}
