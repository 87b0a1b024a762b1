"""The command line: `mbrl-ros launch FILE [name:=value ...] [--show-args] [--dry-run]`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from launcher_helpers import DATA, REPO, write
from mbrl_ros.launcher import discover_arguments
from mbrl_ros.launcher.cli import add_parser, main


def _launch_files_to_show() -> list[Path]:
    # The repository's own launch files once they exist; until then, the example.
    return sorted((REPO / "launch").glob("*.launch.yaml")) or [DATA / "example.launch.yaml"]


@pytest.mark.parametrize("path", _launch_files_to_show(), ids=lambda p: p.name)
def test_show_args_lists_every_argument(path, capsys):
    assert main([str(path), "--show-args"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Arguments (pass arguments as '<name>:=<value>'):")
    arguments, _ = discover_arguments(path)
    for argument in arguments:
        assert f"    '{argument.name}':" in out


def test_show_args_of_the_example_includes_the_included_file(capsys):
    assert main([str(DATA / "example.launch.yaml"), "-s"]) == 0
    out = capsys.readouterr().out
    assert "Which robot to bring up.\n        Valid choices are: ['car', 'hand']\n        (default: 'car')" in out
    assert "'rate_hz':" in out and "example_robot.launch.yaml:3)" in out


def test_dry_run_prints_commands_and_starts_nothing(ament_prefix, capsys):
    assert main([str(DATA / "example.launch.yaml"), "robot:=hand", "rate_hz:=50", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 node process(es); nothing started" in out
    assert f"$ {ament_prefix}/lib/test_pkg/sleeper --after 0 --ros-args -r __node:=controller " \
           "-r __ns:=/hand --params-file " in out
    assert "    /hand/controller:\n      ros__parameters:\n        use_sim_time: true\n" \
           "        rate_hz: 50" in out
    generated = out.split("  generated ")[1].split(" ")[0]
    assert not Path(generated).exists(), "generated parameter files are removed after a dry run"


def test_errors_exit_2_before_starting(ament_prefix, capsys):
    assert main([str(DATA / "example.launch.yaml"), "robot:=truck"]) == 2
    assert "argument 'robot' is 'truck', which is not one of its choices: car, hand" in capsys.readouterr().err
    assert main([str(DATA / "example.launch.yaml"), "robt:=car"]) == 2
    err = capsys.readouterr().err
    assert "unknown launch argument(s) robt" in err and "  hardware (sim|real) [default: 'sim']" in err
    assert main(["no_such.launch.yaml"]) == 2
    assert "cannot read launch file" in capsys.readouterr().err


def test_package_and_file_name_as_with_ros2_launch(ament_prefix, capsys):
    share = ament_prefix / "share" / "test_pkg" / "launch"
    for name in ("example.launch.yaml", "example_robot.launch.yaml"):
        shutil.copy(DATA / name, share / name)
    assert main(["test_pkg", "example.launch.yaml", "hardware:=real", "--dry-run"]) == 0
    assert "use_sim_time: false" in capsys.readouterr().out
    assert main(["test_pkg", "missing.launch.yaml"]) == 2
    assert "no launch file 'missing.launch.yaml' in package 'test_pkg'" in capsys.readouterr().err


def test_subcommand_of_the_mbrl_ros_command(ament_prefix, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="mbrl-ros")
    add_parser(parser.add_subparsers(dest="command", required=True))
    path = write(tmp_path / "one.launch.yaml", """
        launch:
        - node: {pkg: test_pkg, exec: sleeper, args: "--after 0"}
        """)
    args = parser.parse_args(["launch", str(path)])
    assert args.func(args) == 0
    # Options may follow the file and the arguments, as with ros2 launch.
    args = parser.parse_args(["launch", str(path), "sigterm_timeout:=1", "--dry-run"])
    assert args.func(args) == 0
    assert "nothing started" in capsys.readouterr().out
    args = parser.parse_args(["launch", str(path), "--frobnicate"])
    assert args.func(args) == 2


@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt, 130), ("Terminated", 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_launch_file_is_read_ends_with_its_shells_code(monkeypatch, interrupt, code):
    """Nothing started yet: Ctrl-C is 130, SIGTERM (mbrl_ros.interrupts.Terminated) 143, not 130 for both."""
    from mbrl_ros.interrupts import Terminated
    from mbrl_ros.launcher import cli

    raised = Terminated if interrupt == "Terminated" else interrupt

    def stopped(*_args, **_kwargs):
        raise raised()

    monkeypatch.setattr(cli, "load_launch_file", stopped)
    assert main([str(DATA / "example.launch.yaml")]) == code
