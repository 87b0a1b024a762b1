"""``mbrl-ros fit`` and ``mbrl-ros replay``: working with recorded bags."""

from __future__ import annotations

import argparse
import sys

from mbrl_ros.core.model_kinds import MODEL_KINDS
from mbrl_ros.robots import available_robots


FIT_DESCRIPTION = (
    "Read transitions from bags (the trainer's code and config), hold out whole episodes, "
    "fit the model (and, for the comparison table, the other two kinds) and write DIR/model.pt (the "
    "dynamics_server's 'checkpoint' parameter loads it), DIR/report.md, DIR/errors.csv, "
    "DIR/error_vs_horizon.png and DIR/trajectories.png."
)


def fit_parser() -> argparse.ArgumentParser:
    """The ``fit`` arguments alone: what each rank of a data-parallel fit parses (``offline.distributed``)."""
    parser = argparse.ArgumentParser(prog="mbrl-ros fit (one rank)", description=FIT_DESCRIPTION)
    _add_fit_arguments(parser)
    return parser


def _add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    fit.add_argument("bags", nargs="*", metavar="BAG", help="bag directories, or folders of bags")
    fit.add_argument("--robot", required=True, choices=available_robots(), help="reads config/<robot>.yaml")
    fit.add_argument("--model", choices=MODEL_KINDS, default=None,
                     help="model kind to save in DIR/model.pt (default: the config's trainer.model_kind)")
    fit.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    fit.add_argument("--json", metavar="FILE", help="also write the held-out errors per horizon of each model as JSON")
    fit.add_argument("--config-dir", metavar="DIR", default=None,
                     help="folder of <robot>.yaml and <robot>_<task>.yaml (default: the repository's config/)")
    fit.add_argument("--task", default=None, help="also read <robot>_<task>.yaml (e.g. parking, race)")
    fit.add_argument("--only", action="store_true",
                     help="fit only the requested model (default: also the other two kinds, for the comparison)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    fit = subparsers.add_parser("fit", help="fit a dynamics model to recorded bags; checkpoint + report",
                                description=FIT_DESCRIPTION)
    _add_fit_arguments(fit)
    fit.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="fit data-parallel in N processes on torch.distributed (gloo on CPU), each reading its "
                     "share of the bags (needs at least N bags); across machines run "
                     "'torchrun ... -m mbrl_ros.offline.distributed' with the same arguments (see the README)")
    fit.set_defaults(func=_run_fit)

    replay = subparsers.add_parser(
        "replay",
        help="republish a bag with its original timing and /clock",
        description="Publish a bag's messages as recorded (serialised bytes, any type) at their recorded times "
        "scaled by --rate, each topic with the QoS it was recorded with, and /clock from the bag's time, so "
        "nodes with use_sim_time run against recorded data. Ctrl-C stops.",
    )
    replay.add_argument("bags", nargs="+", metavar="BAG",
                        help="bag directories, or folders of bags (played one after the other, in order)")
    replay.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0: recorded timing)")
    replay.add_argument("--topics", nargs="+", metavar="T", default=None,
                        help="replay only these topics (full names, or names relative to the robot namespace)")
    replay.add_argument("--loop", action="store_true", help="start again at the end (until Ctrl-C)")
    replay.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    replay.add_argument("--clock-rate", type=float, default=100.0,
                        help="/clock messages per second of wall time between messages (default 100)")
    replay.add_argument("--delay", type=float, default=0.0,
                        help="wall seconds between creating the publishers and the first message "
                        "(time for subscribers to discover them)")
    replay.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="before the first message, wait until every replayed topic has N matched "
                        "subscriptions (then --delay)")
    replay.add_argument("--by-stamp", action="store_true",
                        help="time messages by their header stamps instead of when they were logged (a loaded "
                        "recorder logs bunched: several steps at one instant); messages without a header keep "
                        "their log time; messages of one stamp go latched topics first (an episode's report "
                        "and goal before the odometry stamped with them), then in the order of --topics")
    replay.add_argument("--min-gap", type=float, default=0.0, metavar="S",
                        help="wall seconds at least between two messages, also of one instant, for subscribers "
                        "whose result depends on the order they handle messages in (default 0)")
    replay.set_defaults(func=_run_replay)


def _run_fit(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        print(f"mbrl-ros fit: error: --nproc: expected at least 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.nproc > 1:
        from mbrl_ros.offline.distributed import launch

        return launch(args, args.nproc)
    return run_fit_args(args)


def run_fit_args(args: argparse.Namespace, data_parallel: bool = False) -> int:
    """``mbrl-ros fit`` with parsed arguments; a user error is one line on stderr and exit code 2."""
    from mbrl_ros.offline.fit import is_user_error, run_fit

    try:
        return run_fit(args.bags, args.robot, args.model, args.out, json_path=args.json,
                       config_dir=args.config_dir, task=args.task, compare=not args.only,
                       data_parallel=data_parallel)
    except Exception as err:
        if not is_user_error(err):
            raise
        print(f"mbrl-ros fit: error: {err}", file=sys.stderr)
        return 2


def _run_replay(args: argparse.Namespace) -> int:
    from mbrl_ros.offline.replay import main

    return main(args)
