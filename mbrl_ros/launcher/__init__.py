"""`mbrl-ros launch`: run upstream ROS 2 YAML launch files in a pip-only install.

There is no `ros2launch` on PyPI; this runs the subset of the YAML front end our
launch files use (tags arg, let, include, group, push-ros-namespace, node,
set_env; substitutions var, env, find-pkg-share, eval, equals, not-equals,
dirname) with upstream's semantics, so the same files run under `ros2 launch`.

Python API::

    from mbrl_ros import launcher
    description = launcher.load_launch_file("launch/bringup.launch.yaml", {"robot": "car"})
    for node in description.nodes:          # resolved, nothing started yet
        print(node.label, node.command)
    runner = launcher.start(description)    # supervised in a background thread
    ...
    runner.stop()                           # SIGINT, then SIGTERM, then SIGKILL

or, blocking (Ctrl-C stops it): `launcher.run("launch/x.launch.yaml", ["robot:=car"])`.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from .description import (BUILTIN_CONFIGURATIONS, LaunchDescription, discover_arguments,
                          load_launch_file, parse_cli_arguments)
from .errors import LaunchArgumentError, LaunchError, LaunchFileError
from .evaluate import ArgumentInfo, NodeAction
from .runner import LaunchRunner, OutputSink, print_to_screen

__all__ = [
    "ArgumentInfo", "BUILTIN_CONFIGURATIONS", "LaunchArgumentError", "LaunchDescription",
    "LaunchError", "LaunchFileError", "LaunchRunner", "NodeAction", "OutputSink",
    "discover_arguments", "load_launch_file", "parse_cli_arguments", "print_to_screen",
    "make_runner", "run", "start",
]



def make_runner(description: LaunchDescription, *, output: OutputSink | None = None,
                log_directory: str | os.PathLike | None = None,
                sigterm_timeout: float | None = None, sigkill_timeout: float | None = None,
                ) -> LaunchRunner:
    """A runner for the description's nodes; it removes the description's generated
    parameter files when it ends. Timeouts default to the launch configurations
    `sigterm_timeout`/`sigkill_timeout` (as upstream), else 5 s each."""
    conf = description.configurations
    return LaunchRunner(
        description.nodes, output=output, log_directory=log_directory,
        sigterm_timeout=_seconds(sigterm_timeout, conf.get("sigterm_timeout")),
        sigkill_timeout=_seconds(sigkill_timeout, conf.get("sigkill_timeout")),
        on_finish=description.cleanup)


def run(launch: LaunchDescription | str | os.PathLike,
        arguments: Mapping[str, str] | Iterable[str] | None = None, **runner_options) -> int:
    """Load (if given a path) and run a launch until every node is gone. From the
    main thread, SIGINT and SIGTERM stop it. Returns 1 if any node failed, else 0."""
    description = _description(launch, arguments)
    return make_runner(description, **runner_options).run()


def start(launch: LaunchDescription | str | os.PathLike,
          arguments: Mapping[str, str] | Iterable[str] | None = None,
          **runner_options) -> LaunchRunner:
    """Load (if given a path) and start a launch in the background; returns its
    runner: `stop()`, `wait()`, `pids`, `returncode`."""
    description = _description(launch, arguments)
    return make_runner(description, **runner_options).start()


def _description(launch, arguments) -> LaunchDescription:
    if isinstance(launch, LaunchDescription):
        if arguments:
            raise TypeError("arguments are given to load_launch_file, not with a LaunchDescription")
        return launch
    return load_launch_file(launch, arguments)


def _seconds(explicit: float | None, configured: str | None) -> float:
    if explicit is not None:
        return float(explicit)
    return 5.0 if configured is None else float(configured)
