"""`mbrl-ros record [TOPICS...] [-o DIR] [--storage mcap|sqlite3] [--split-duration S] [--split-size MB]`.

Records the stack's topics without launching the logger node: it runs the
data_logger node itself (``mbrl_ros.nodes.data_logger``, one code path) in this
process, with the data_logger section of ``config/car.yaml`` as its parameters
and the command line's on top. Ctrl-C closes the bag.

The logger imports the message classes of what it records, mbrl_interfaces
among them, which needs the colcon workspace's environment, and part of that
(LD_LIBRARY_PATH) only counts when a process starts. So when mbrl_interfaces
cannot be imported, the command runs itself again with the workspace's
environment (``mbrl_ros.ros_env.reexec_in_workspace``), once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "car.yaml"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "record", help="record the stack's topics to rosbag2 (the data_logger, without launching it)",
        description="Record topics to <DIR>/<prefix>_NNNN bags with the data_logger node, run in this process. "
                    "Default topics: the data_logger's list in the config, in the robot's namespace. "
                    "Crash-safe as the logger is: a killed recording is made complete by `mbrl-ros bag repair`.")
    parser.add_argument("topics", nargs="*", metavar="TOPIC",
                        help="topics to record (relative names are in --namespace); default: the config's list")
    parser.add_argument("-o", "--output", metavar="DIR", default="bags", help="folder of the bags (default: bags)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], help="storage (default: the config's, mcap)")
    parser.add_argument("--split-duration", type=float, metavar="S", help="seconds per bag (default: the config's)")
    parser.add_argument("--split-size", type=float, metavar="MB", help="MB of messages per bag (default: no size split)")
    parser.add_argument("--namespace", default="/car", help="the robot's namespace (default: /car)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), metavar="YAML",
                        help="ROS parameter file with a data_logger section (default: config/car.yaml)")
    parser.add_argument("--use-sim-time", action="store_true", help="stamp and split on /clock")
    parser.set_defaults(func=run_record)


def ros_arguments(args: argparse.Namespace) -> list[str]:
    """The data_logger node's --ros-args for these command-line options."""
    ros_args = ["--ros-args", "-r", f"__ns:={args.namespace}", "--params-file", str(args.config)]
    overrides = {
        "output_dir": str(Path(args.output).absolute()),
        "storage": args.storage,
        "split_duration": args.split_duration,
        "split_size": args.split_size,
        "use_sim_time": True if args.use_sim_time else None,
        "topics": "[" + ",".join(f"'{t}'" for t in args.topics) + "]" if args.topics else None,
    }
    for name, value in overrides.items():
        if value is not None:
            ros_args += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
    return ros_args


def run_record(args: argparse.Namespace) -> int:
    if not Path(args.config).is_file():
        print(f"mbrl-ros record: error: {args.config}: no such parameter file", file=sys.stderr)
        return 1
    from mbrl_ros.ros_env import WorkspaceNotBuiltError, restart_in_workspace_if_needed

    try:
        restart_in_workspace_if_needed(args.argv)
    except WorkspaceNotBuiltError as error:
        print(f"mbrl-ros record: error: {error}", file=sys.stderr)
        return 1
    from mbrl_ros.nodes.data_logger import main

    return main(["mbrl-ros-record", *ros_arguments(args)])
