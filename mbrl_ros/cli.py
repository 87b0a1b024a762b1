"""The ``mbrl-ros`` command: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``,
which registers its arguments and sets ``func``; heavy imports (torch, rclpy,
simulators) happen inside ``func`` so ``mbrl-ros --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mbrl_ros.interrupts import exit_code, signal_name, stop_on_signals

# Modules that provide a subcommand, in the order `--help` lists them.
SUBCOMMAND_MODULES = (
    "mbrl_ros.demo.cli",
    "mbrl_ros.launcher.cli",
    "mbrl_ros.bench.cli",
    "mbrl_ros.offline.cli",
    "mbrl_ros.bag.cli",
    "mbrl_ros.record",
    "mbrl_ros.soak",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mbrl-ros",
        description="Model-based RL for ROS 2: learn a robot's dynamics, plan through them in real time.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and SIGTERM are a KeyboardInterrupt in every subcommand (mbrl_ros.interrupts), so each ends
    # through its own cleanup (a demo stops its stack) instead of dying with its processes left behind.
    stop_on_signals()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for a subcommand that must restart itself (demo: in the workspace environment)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as interrupt:  # a subcommand without its own message for it
        print(f"mbrl-ros {args.command}: stopped by {signal_name(interrupt)}", file=sys.stderr)
        return exit_code(interrupt)


if __name__ == "__main__":
    sys.exit(main())
