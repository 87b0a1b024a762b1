"""``mbrl-ros demo ROBOT``: a simulated robot learning its task through the stack (the car parks or races,
the base reaches goals, the hand reaches fingertip targets)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from mbrl_ros.demo.scene import demo_tasks

    tasks = demo_tasks()
    parser = subparsers.add_parser(
        "demo",
        help="the main job: the whole stack in simulation collects data, learns, and controls",
        description="Bring up the stack (launch/bringup.launch.yaml) with a simulated robot: it drives "
        "randomly, the trainer fits a model from the logged bags, the controller plans through it, "
        "episode after episode. Prints a live progress line and a summary; writes bags, checkpoints, "
        "logs and plots to runs/<time>/.",
    )
    parser.add_argument("robot", choices=sorted(tasks), help="which robot (those with a simulator demo)")
    parser.add_argument("--task", choices=sorted({t for ts in tasks.values() for t in ts}), default=None,
                        help="the robot's task; default: its first ("
                        + "; ".join(f"{r}: {', '.join(ts)}" for r, ts in sorted(tasks.items())) + ")")
    parser.add_argument("--episodes", type=int, default=20,
                        help="evaluated episodes, counted from the first one that starts with a model (default: 20)")
    parser.add_argument("--learning-episodes", type=int, default=0, metavar="N",
                        help="episodes under the learned model (retrained online) before the evaluated ones "
                             "(default: 0)")
    parser.add_argument("--model", choices=["parametric", "ensemble", "semiparametric"], default=None,
                        help="model kind the trainer fits (default: the config's trainer.model_kind)")
    parser.add_argument("--controller", choices=["mppi", "cem", "ilqr", "rs", "policy"], default="mppi",
                        help="default: mppi; policy: the policy the trainer learns on each model, alone (evaluated "
                        "from the first episode that starts with it)")
    parser.add_argument("--policy-prior", type=float, default=None, metavar="FRACTION",
                        help="mppi or cem with the learned policy as prior: this share of the samples drawn around "
                        "its rollout (the planner's policy_prior_fraction; the trainer then learns a policy)")
    parser.add_argument("--samples", type=int, default=None,
                        help="the planner's samples (mppi num_samples, cem population; default: from config)")
    parser.add_argument("--random-transitions", type=int, default=None,
                        help="random exploration before the first model (default: from config)")
    parser.add_argument("--policy-rounds", type=int, default=1, metavar="N",
                        help="with a learned policy (controller policy or --policy-prior): evaluate after the "
                        "trainer's N-th policy round (later rounds learn on the controller's episodes; needs "
                        "trainer.policy_retrain_every; default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode and of exploration")
    parser.add_argument("--real-time", action="store_true",
                        help="run the simulator in real time instead of lockstep (slower; latency as on a robot)")
    parser.add_argument("--config-dir", default=None, help="folder with <robot>.yaml and <robot>_<task>.yaml "
                        "(default: the package's config/)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<time>)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS domain of the stack (default: $ROS_DOMAIN_ID, else one derived from the pid)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds per phase")
    parser.add_argument("--show-logs", action="store_true", help="print the nodes' output (always in stack.log)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mbrl_ros.demo.scene import demo_tasks

    if args.episodes < 1:
        raise SystemExit("mbrl-ros demo: --episodes must be >= 1")
    if args.learning_episodes < 0:
        raise SystemExit("mbrl-ros demo: --learning-episodes must be >= 0")
    if args.policy_rounds < 1:
        raise SystemExit("mbrl-ros demo: --policy-rounds must be >= 1")
    if args.random_transitions is not None and args.random_transitions < 1:
        raise SystemExit("mbrl-ros demo: --random-transitions must be >= 1")
    if args.policy_prior is not None and (args.controller not in ("mppi", "cem") or not 0 < args.policy_prior <= 1):
        raise SystemExit("mbrl-ros demo: --policy-prior needs --controller mppi or cem and a fraction in (0, 1]")
    if args.samples is not None and (args.controller not in ("mppi", "cem") or args.samples < 1):
        raise SystemExit("mbrl-ros demo: --samples needs --controller mppi or cem and a count >= 1")
    tasks = demo_tasks()[args.robot]
    if args.task is not None and args.task not in tasks:
        raise SystemExit(f"mbrl-ros demo: robot {args.robot} has no task '{args.task}'; tasks: {', '.join(tasks)}")
    from mbrl_ros.ros_env import restart_in_workspace_if_needed

    restart_in_workspace_if_needed(args.argv)  # the demo watches mbrl_interfaces topics
    from mbrl_ros.demo.run import run_demo
    from mbrl_ros.launcher.errors import LaunchError

    try:
        return run_demo(
            robot=args.robot, task=args.task, episodes=args.episodes, model_kind=args.model,
            controller=args.controller, random_transitions=args.random_transitions, seed=args.seed,
            config_dir=args.config_dir, out_dir=args.out, json_path=args.json, lockstep=not args.real_time,
            domain_id=args.domain_id, timeout_s=args.timeout, show_logs=args.show_logs,
            overrides=planner_overrides(args.controller, args.samples, args.policy_prior),
            learning_episodes=args.learning_episodes, policy_rounds=args.policy_rounds,
        )
    except (ValueError, LaunchError, RuntimeError) as error:  # config, launch file, a node that died
        print(f"mbrl-ros demo: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM (mbrl_ros.interrupts), at any moment
        from mbrl_ros.interrupts import exit_code, signal_name

        # run_demo returns or raises only once every process of its stack is gone (StackRun.stop).
        print(f"mbrl-ros demo: stopped by {signal_name(interrupt)}; every process of the stack has ended",
              file=sys.stderr)
        return exit_code(interrupt)


def planner_overrides(controller: str, samples: int | None, policy_prior: float | None) -> dict[str, dict]:
    """The planner section as ``--samples`` and ``--policy-prior`` set it (run_demo's overrides), for the controller
    and the trainer (which checks a policy as that planner's prior with the same settings): in each node's own
    section, which overrides the shared ``/**`` one key by key wherever the task file has the planner."""
    section = {}
    if samples is not None:
        section["num_samples" if controller == "mppi" else "population"] = samples
    if policy_prior is not None:
        section["policy_prior_fraction"] = policy_prior
    return {node: {controller: dict(section)} for node in ("controller", "trainer")} if section else {}
