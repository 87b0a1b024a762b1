"""``mbrl-ros soak``: the simulated car stack in real time with online retraining, measured for a while.

The command line only; what runs and what is measured: ``mbrl_ros.bench.soak``.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "soak",
        help="run the simulated car stack in real time with online retraining; memory, latency drift, losses",
        description="Brings up the car stack in real time with online retraining and measures, after a warm-up, "
        "for --minutes: memory growth of the node processes, p99 control latency drift (last fifth against "
        "first), deadline misses, states and commands the data_logger lost, node restarts.",
    )
    parser.add_argument("--minutes", type=float, required=True, help="length of the measured window")
    parser.add_argument("--task", choices=["parking", "race"], default="parking",
                        help="parking runs at 5 Hz, race at 20 Hz (default: parking)")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.minutes > 0:
        print(f"mbrl-ros soak: error: --minutes must be > 0, got {args.minutes}", file=sys.stderr)
        return 2
    from mbrl_ros.ros_env import restart_in_workspace_if_needed

    restart_in_workspace_if_needed(args.argv)  # the soak watches mbrl_interfaces topics
    from mbrl_ros.bench.soak import run
    from mbrl_ros.launcher.errors import LaunchError

    try:
        run(args.minutes, args.task, args.out, args.json)
    except (ValueError, LaunchError, RuntimeError) as error:  # config, launch file, a node that died
        print(f"mbrl-ros soak: error: {error}", file=sys.stderr)
        return 1
    return 0
