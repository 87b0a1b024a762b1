"""``mbrl-ros bench ...``: benchmarks that print numbers, never pass/fail tests."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print its numbers")
    which = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    planners = which.add_parser(
        "planners",
        help="planning-step latency of MPPI/CEM/iLQR against pytorch_mppi",
        description="Median and p99 ms per planning step for each case, the same case through "
        "pytorch_mppi in the same run, and the machine's fp32 GEMM rate.",
    )
    planners.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier numbers)")
    planners.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    planners.add_argument("--cases", nargs="+", metavar="NAME", help="run only these cases")
    planners.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    planners.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 200)")
    planners.set_defaults(func=_run_planners)

    trainer = which.add_parser(
        "trainer-latency",
        help="controller p99 planning latency with the trainer training vs idle (real processes over DDS)",
        description="Alternating idle and training phases in one run; per phase the controller's own "
        "latency p50/p99 over a full diagnostics window; the ratio training p99 / idle p99 (target <= 1.25).",
    )
    trainer.add_argument("--phases", type=int, default=3, help="idle and training phases, each (default 3)")
    trainer.add_argument("--model", default="ensemble", choices=["parametric", "ensemble", "semiparametric"],
                         help="what the trainer trains (default ensemble: the most CPU)")
    trainer.add_argument("--epochs", type=int, default=30, help="training epochs per round (default 30)")
    trainer.add_argument("--policy", choices=["shac", "mbpo"], default=None,
                         help="the trainer learns a policy by this method instead of models (learn_policy)")
    trainer.add_argument("--trainer-cpu", type=int, default=None, metavar="N",
                         help="pin the trainer to CPU N and the other nodes to the remaining CPUs")
    trainer.add_argument("--sched-idle", action="store_true", help="run the trainer under SCHED_IDLE")
    trainer.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    trainer.add_argument("--keep", metavar="DIR", help="work in DIR (bags, logs) and keep it")
    trainer.set_defaults(func=_run_trainer_latency)

    latency = which.add_parser(
        "latency",
        help="end-to-end latency of the running stack in real time (state stamp -> command received)",
        description="Brings up the car stack in real-time simulation with a model served from the start and "
        "measures, per planning cycle, the controller's planning time and the time from the state's stamp "
        "to the command's arrival. Target: end-to-end p99 <= planning p99 + 3 ms at 20 Hz.",
    )
    latency.add_argument("--duration", type=float, default=60.0, help="seconds measured (default: 60)")
    latency.add_argument("--task", choices=["race", "parking"], default="race",
                         help="race runs at 20 Hz, parking at 5 Hz (default: race)")
    latency.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    latency.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    latency.add_argument("--executor", choices=["single", "events"], default=None,
                         help="every node's rclpy executor (default: the config's; the race sets events)")
    latency.add_argument("--settle-heap", action="store_true",
                         help="every node's settle_heap true (mbrl_ros/ros/gc_pauses.py), for comparison (default: "
                         "the config's, off)")
    latency.add_argument("--logger-niceness", type=int, default=None, metavar="N",
                         help="the data_logger's niceness (default: the config's, 0), for comparison")
    latency.set_defaults(func=_run_latency)

    curve = which.add_parser(
        "learning-curve",
        help="parking success against transitions collected, online retraining from zero data",
        description="Brings up the car stack (lockstep parking) with no data: random driving for a small budget, "
        "then the trainer retrains online; every episode counts. Prints and writes the curve (JSON) and a plot. "
        "Target: >= 90%% success within 2,000 transitions.",
    )
    curve.add_argument("--episodes", type=int, default=60, help="episodes from the first (default: 60)")
    curve.add_argument("--random-transitions", type=int, default=200, help="random budget (default: 200)")
    curve.add_argument("--retrain-every", type=int, default=200, help="new transitions per round (default: 200)")
    curve.add_argument("--window", type=int, default=10, help="episodes per success-rate point (default: 10)")
    curve.add_argument("--model", choices=["parametric", "ensemble", "semiparametric"], default="parametric")
    curve.add_argument("--seed", type=int, default=0)
    curve.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    curve.add_argument("--json", metavar="FILE", help="also write the curve as JSON to FILE")
    curve.set_defaults(func=_run_learning_curve)

    recording = which.add_parser(
        "recording", help="bag write throughput with and without the logger's crash-safety flushes",
        description="msgs/s through BagRecorder (mcap, sqlite3) with no flush, a flush every 0.5 s and every "
        "10 ms, interleaved in one run; median and p99 over the repeats.")
    recording.add_argument("--messages", type=int, default=100_000, help="messages per run (default 100000)")
    recording.add_argument("--repeats", type=int, default=5, help="runs per case (default 5)")
    recording.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    recording.set_defaults(func=_run_recording)

    bags = which.add_parser(
        "bags", help="bag to transition tensors: messages per second (target >= 100,000)",
        description="Writes the stack's bags (mcap, sqlite3) and an F1TENTH-style odometry + Ackermann bag, "
        "times load_transitions on each (median and p99 of the runs) beside rosbags' per-message decode.")
    bags.add_argument("--steps", type=int, default=50_000, help="control steps per stack bag, 2 messages each")
    bags.add_argument("--runs", type=int, default=7, help="timed runs per case after one warm-up (default 7)")
    bags.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bags.add_argument("--keep", metavar="DIR", help="write the bags to DIR and reuse them next time")
    bags.set_defaults(func=_run_bags)

    policy = which.add_parser(
        "policy-training", help="wall time of one policy training round (SHAC, MBPO) and of the actor's call",
        description="The car's parking task with 2,000 logged transitions, one torch thread: seconds per "
        "train_policy round of each method at the default sizes, held-out closed-loop costs, act() latency.")
    policy.add_argument("--methods", nargs="+", choices=["shac", "mbpo"], default=["shac", "mbpo"])
    policy.add_argument("--quick", action="store_true", help="a few iterations (a smoke run, not a result)")
    policy.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    policy.set_defaults(func=_run_policy_training)

    race = which.add_parser(
        "race-sweep", help="the race per model kind and target speed: laps, lap time, exits (demo runs)",
        description="One `mbrl-ros demo car --task race` per model kind and target speed; per kind the highest "
        "target speed it sustains for its laps without leaving the track, and the learned kinds' lap-time gain "
        "over the prior at the prior's best speed. Writes JSON and a plot (lap time, exits against speed).")
    race.add_argument("--speeds", type=float, nargs="+", default=[8.0, 11.0, 14.0, 17.0],
                      help="target speeds (m/s): the race cost's path_tracking target_speed, a cap in the shipped "
                           "racing cost")
    race.add_argument("--models", nargs="+", choices=["parametric", "semiparametric", "ensemble"],
                      default=["parametric", "semiparametric", "ensemble"])
    race.add_argument("--episodes", type=int, default=1, help="evaluated episodes (of 3 laps) per run (default 1)")
    race.add_argument("--learning-episodes", type=int, default=0, metavar="N",
                      help="episodes under each learned model (retrained online) before the evaluated ones "
                           "(default 0)")
    race.add_argument("--random-transitions", type=int, default=None, help="random budget (default: config)")
    race.add_argument("--retrain-every", type=int, default=None, metavar="N",
                      help="the trainer's new transitions between rounds (default: config)")
    race.add_argument("--speed-cap-margin", type=float, default=None, metavar="M",
                      help="m/s: the cap follows the speeds seen (the controller's speed_cap_margin: each model "
                           "caps at the fastest speed so far plus M, at most the target speed) (default: config)")
    race.add_argument("--sim", choices=["st", "std"], default=None,
                      help="the simulated car: commonroad's single-track model (st, no friction limit) or its drift "
                           "model (std, tyres that saturate) (default: config, sim_car's race_model)")
    race.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0], metavar="SEED",
                      help="one run per seed at each speed and kind (random data, training, planner); a speed counts "
                           "as sustained where every seed's run drove its laps clean (default 0)")
    race.add_argument("--out", default="runs/race_sweep", help="run folder (default: runs/race_sweep)")
    race.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    race.set_defaults(func=_run_race_sweep)

    bound = which.add_parser(
        "hand-reach-bound", help="HandReach: the goals out of the hand's reach, the most any controller can succeed on",
        description="For each evaluation seed the closest the hand's exact kinematics brings the fingertips to "
        "HandReach's goal with every joint within its range (random restarts, Levenberg-Marquardt): the goals farther than the "
        "env's 1 cm threshold fail whatever the controller. Prints per seed, writes JSON and a plot.")
    bound.add_argument("--first-seed", type=int, default=1000,
                       help="first seed (default 1000: the first episode `mbrl-ros demo hand` evaluates)")
    bound.add_argument("--episodes", type=int, default=50, help="seeds (default 50)")
    bound.add_argument("--restarts", type=int, default=128, help="random starts per goal (default 128)")
    bound.add_argument("--steps", type=int, default=100, help="Levenberg-Marquardt steps per start (default 100)")
    bound.add_argument("--out", default="runs/hand_reach_bound", help="folder of the plot and JSON")
    bound.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    bound.set_defaults(func=_run_hand_reach_bound)

    sb3 = which.add_parser(
        "sb3-baseline", aliases=["sb3-parking"],
        help="model-free baseline: stable-baselines3 SAC+HER on parking-v0 or HandReach-v3, success against transitions",
        description="Trains SB3's SAC with HerReplayBuffer on the task's simulator as the stack's driver builds it "
        "(parking: highway-env parking-v0, 100-step episodes, walls; hand-reach: gymnasium-robotics HandReach-v3, "
        "50-step episodes; success the env's is_success) and evaluates the deterministic policy on the demo's seeds at "
        "checkpoints of the budget of real transitions. Prints a table, writes JSON and a plot "
        "(OUT/sb3_<task>.*). `sb3-parking` is `sb3-baseline --task parking`.")
    sb3.add_argument("--task", choices=["parking", "hand-reach"], default="parking", help="default: parking")
    sb3.add_argument("--max-steps", type=int, default=50_000, help="environment transitions in all (default 50000)")
    sb3.add_argument("--checkpoints", type=int, nargs="+", metavar="N",
                     help="evaluate after these many transitions (default: 1000, 2000, the reference budget, "
                     "5000, 10000, ... below --max-steps, and --max-steps)")
    sb3.add_argument("--episodes", type=int, default=None,
                     help="evaluation episodes per checkpoint (default: parking 20, hand-reach 50)")
    sb3.add_argument("--first-seed", type=int, default=None,
                     help="seed of the first evaluation episode (default: parking 44, the 95%% parking demo's "
                     "evaluated 44-63; hand-reach 1000, the hand demo's evaluation seeds)")
    sb3.add_argument("--train-seed", type=int, default=0,
                     help="training episode k uses seed train-seed + k, as the simulator's episode k")
    sb3.add_argument("--seed", type=int, default=0, help="SB3's seed (networks, exploration)")
    sb3.add_argument("--preset", choices=["zoo", "highway-env"], default="zoo",
                     help="hyperparameters: the RL Zoo's (default) or highway-env's notebook (about 9x the compute)")
    sb3.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    sb3.add_argument("--budget", type=int, default=None,
                     help="reference transitions (default: parking 2766, the 95%% demo's; hand-reach 20000, the issue's)")
    sb3.add_argument("--target", type=float, default=None,
                     help="reference success (default: parking 0.95, the demo's; hand-reach 0.9, the issue's)")
    sb3.add_argument("--reference", metavar="DEMO_JSON",
                     help="take --budget and --target from a `mbrl-ros demo ... --json` file")
    sb3.add_argument("--out", default=None, help="folder of the plot and JSON (default runs/sb3_<task>)")
    sb3.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    sb3.set_defaults(func=_run_sb3_baseline)


def _run_sb3_baseline(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.sb3_baseline import run

    run(task=args.task, max_steps=args.max_steps, checkpoints=args.checkpoints, episodes=args.episodes,
        first_seed=args.first_seed, train_seed=args.train_seed, seed=args.seed, preset=args.preset,
        threads=args.threads, budget=args.budget, target=args.target, reference=args.reference, out=args.out,
        json_path=args.json)
    return 0


def _run_hand_reach_bound(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.hand_reach_bound import run

    run(first_seed=args.first_seed, episodes=args.episodes, restarts=args.restarts, steps=args.steps,
        out=args.out, json_path=args.json)
    return 0


def _run_race_sweep(args: argparse.Namespace) -> int:
    from mbrl_ros.ros_env import restart_in_workspace_if_needed

    restart_in_workspace_if_needed(args.argv)  # the demo watches mbrl_interfaces topics
    from mbrl_ros.bench.race_sweep import run

    run(speeds=args.speeds, models=args.models, episodes=args.episodes, random_transitions=args.random_transitions,
        seeds=args.seeds, out=args.out, json_path=args.json, learning_episodes=args.learning_episodes,
        retrain_every=args.retrain_every, sim=args.sim, speed_cap_margin=args.speed_cap_margin)
    return 0


def _run_planners(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.planners import main

    return main(quick=args.quick, json_path=args.json, cases=args.cases, threads=args.threads,
                repeats=args.repeats)


def _run_latency(args: argparse.Namespace) -> int:
    from mbrl_ros.ros_env import restart_in_workspace_if_needed

    restart_in_workspace_if_needed(args.argv)  # it watches mbrl_interfaces topics
    from mbrl_ros.bench.latency import run

    run(duration_s=args.duration, task=args.task, out=args.out, json_path=args.json, executor=args.executor,
        settle_heap=args.settle_heap, logger_niceness=args.logger_niceness)
    return 0


def _run_learning_curve(args: argparse.Namespace) -> int:
    from mbrl_ros.ros_env import restart_in_workspace_if_needed

    restart_in_workspace_if_needed(args.argv)  # it watches mbrl_interfaces topics
    from mbrl_ros.bench.learning_curve import run

    run(episodes=args.episodes, random_transitions=args.random_transitions, retrain_every=args.retrain_every,
        window=args.window, model=args.model, seed=args.seed, out=args.out, json_path=args.json)
    return 0


def _run_trainer_latency(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.trainer_latency import main

    return main(phases=args.phases, model=args.model, epochs=args.epochs, trainer_cpu=args.trainer_cpu,
                sched_idle=args.sched_idle, json_path=args.json, keep=args.keep, policy=args.policy)


def _run_recording(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.recording import main

    return main(messages=args.messages, repeats=args.repeats, json_path=args.json)


def _run_bags(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.bags import main

    return main(steps=args.steps, runs=args.runs, json_path=args.json, keep=args.keep)


def _run_policy_training(args: argparse.Namespace) -> int:
    from mbrl_ros.bench.policy_training import run

    run(methods=tuple(args.methods), quick=args.quick, json_path=args.json)
    return 0
