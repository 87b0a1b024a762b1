"""``mbrl-ros demo car``: the simulated car learning and parking (or racing)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job: a simulated robot collects data, learns, and is controlled",
        description="Collect random driving data in simulation, fit a dynamics model, then control "
        "the car with a planner through that model, episode after episode. Prints a live progress "
        "line and a summary; writes plots to runs/<time>/.",
    )
    parser.add_argument("robot", choices=["car"], help="which robot (the hand comes in a later release)")
    parser.add_argument("--task", choices=["parking", "race"], default="parking", help="default: parking")
    parser.add_argument("--episodes", type=int, default=20, help="controlled episodes (default: 20)")
    parser.add_argument("--model", choices=["parametric", "ensemble", "semiparametric"], default=None,
                        help="model kind (default: the config's trainer.model_kind)")
    parser.add_argument("--random-transitions", type=int, default=None,
                        help="random exploration before the first model (default: from config)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data collection and evaluation")
    parser.add_argument("--config-dir", default=None, help="folder with car.yaml and car_<task>.yaml "
                        "(default: the package's config/)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<time>)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mbrl_ros.demo.car import run_demo

    if args.episodes < 1:
        raise SystemExit("mbrl-ros demo: --episodes must be >= 1")
    return run_demo(
        task=args.task, episodes=args.episodes, model_kind=args.model,
        random_transitions=args.random_transitions, seed=args.seed, config_dir=args.config_dir,
        out_dir=args.out, json_path=args.json,
    )
