"""``mbrl-ros demo ROBOT``: the whole stack learning to drive a simulated robot (the car parks or races).

It brings up ``launch/bringup.launch.yaml`` (the robot's simulator, estimator,
dynamics_server, controller, data_logger, trainer: one process each, over DDS
in a ROS domain of their own) and watches: the controller explores until its
exploration budget is spent, the trainer fits a model from the logger's bags,
the dynamics_server publishes it, the controller swaps it in and does the task. The
episodes that start after the first model reached the controller are the
evaluated ones. At the end: a summary, ``runs/<time>/`` with the bags,
checkpoints, the exact config, each node's log, plots and ``summary.json``.
What is robot-specific (its tasks, what the plot draws) comes from the robot's
``mbrl_ros_hardware.<robot>.demo`` (``mbrl_ros.demo.scene``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mbrl_ros.stack_run import (EpisodeTrace, StackRun, StackWatcher, default_domain_id, prepare_config,
                                progress_options)
from mbrl_ros.io.config import launch_parameters
from mbrl_ros.demo.scene import Scene, demo_module
from mbrl_ros.plots import plot_car_trajectories, plot_error_vs_horizon, plot_latency_histogram, plot_progress
from mbrl_ros.ros_env import REPO_ROOT


def policy_settled(watcher: StackWatcher, controller: str, rounds: int = 1) -> bool:
    """Whether the demo can evaluate: the trainer's first ``rounds`` policy rounds have ended and what the last one
    deployed has reached the controller. A planner that samples around the policy (its prior) also starts when
    that round deployed none (it plans without a prior, or with the policy before, until one passes the trainer's
    checks); the policy alone waits for a policy: it has nothing to drive with."""
    trainer = watcher.node_status("trainer")
    done = int(trainer.get("policy_rounds", "0") or 0)
    if rounds <= 1 and watcher.policy_version() >= 1:  # the first policy came (before the trainer's diagnostics)
        return True
    if done < rounds or (controller == "policy" and watcher.policy_version() < 1):
        return False
    if trainer.get("policy_last_decision") == "accepted":  # on its way (the dynamics_server checks and latches it)
        version = trainer.get("policy_last_candidate_version", "")
        return version.isdigit() and watcher.policy_version() >= int(version)
    return trainer.get("policy_last_decision") in ("rejected", "failed")


def run_demo(robot: str = "car", task: str | None = None, episodes: int = 20, model_kind: str | None = None,
             controller: str = "mppi",
             random_transitions: int | None = None, seed: int = 0, config_dir: str | None = None,
             out_dir: str | None = None, json_path: str | None = None, lockstep: bool = True,
             domain_id: int | None = None, timeout_s: float = 3600.0, show_logs: bool = False,
             overrides: dict[str, dict] | None = None, learning_episodes: int = 0, policy_rounds: int = 1) -> int:
    """``overrides``: {node: {parameter: value}} merged into the task's parameter file (as the run's own).
    ``learning_episodes``: episodes driven under the learned model, retrained online as their data come in,
    before the ``episodes`` evaluated ones (model-based RL's data from its own controller: random driving
    rarely reaches the slip a fast lap has). ``policy_rounds``: with a learned policy, evaluate after the trainer's
    that many policy rounds (a later round learns on the controller's episodes, see ``policy_retrain_every``)."""
    demo = demo_module(robot)
    if demo is None:
        raise ValueError(f"robot '{robot}' has no demo (no mbrl_ros_hardware.{robot}.demo)")
    task = task or demo.TASKS[0]
    if task not in demo.TASKS:
        raise ValueError(f"robot '{robot}' has no task '{task}'; tasks: {list(demo.TASKS)}")
    out = Path(out_dir) if out_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    overrides = {node: dict(params) for node, params in (overrides or {}).items()}
    if random_transitions is not None:
        # The exploration budget, for both nodes that read it (the config's '/**' value stays as it was).
        for node in ("trainer", "controller"):
            overrides.setdefault(node, {})["random_transitions"] = random_transitions
    if learning_episodes:
        # The learning episodes keep the simulator's ordinary seeds: every run, whatever its learning episodes,
        # evaluates on the same fixed seeds (evaluation_seed, + 1, ...). Each of them, and the first evaluated
        # one, is held at its start until the trainer has retrained on the episodes before (learn_between).
        overrides.setdefault(f"sim_{robot}", {}).update(evaluation_delay=learning_episodes,
                                                         hold_learning_episodes=lockstep)
    config = prepare_config(Path(config_dir) if config_dir else REPO_ROOT / "config", out / "config", robot,
                            task, overrides)
    params = {node: launch_parameters(config, robot, task, node) for node in ("controller", "trainer", f"sim_{robot}")}
    # The trainer learns a policy for the policy alone, or for a planner that samples around it; where the task
    # has a robot's proposal (the controller's 'proposal' section), that is what the planner samples around.
    prior = float(params["controller"].get(controller, {}).get("policy_prior_fraction", 0.0))
    learn_policy = controller == "policy" or (prior > 0 and not params["controller"].get("proposal"))
    model_kind = model_kind or params["trainer"].get("model_kind", "parametric")
    budget = int(params["controller"].get("random_transitions", 0))
    if learn_policy and policy_rounds > 1 and not int(params["trainer"].get("policy_retrain_every", 0)):
        raise ValueError(f"{policy_rounds} policy rounds: the trainer learns its policy again only on a new model; "
                         f"set trainer.policy_retrain_every (transitions) in {config}/{robot}_{task}.yaml")
    domain = default_domain_id("demo") if domain_id is None else domain_id
    print(f"[demo] {robot}/{task}: the stack in ROS domain {domain}, {'lockstep' if lockstep else 'real-time'} "
          f"simulation; {budget or 'unlimited'} random transitions, model '{model_kind}', planner "
          f"'{controller}', " + (f"{learning_episodes} learning then " if learning_episodes else "")
          + (f"after {policy_rounds} policy rounds " if learn_policy and policy_rounds > 1 else "")
          + f"{episodes} evaluated episodes -> {out}/", flush=True)

    run = StackRun(out, {"robot": robot, "hardware": "sim", "task": task, "controller": controller,
                         "model": model_kind, "learn_policy": str(learn_policy).lower(),
                         "lockstep": str(lockstep).lower(), "seed": str(seed),
                         "run_dir": str(out), "config_dir": str(config)},
                   domain, namespace=robot, echo=print if show_logs else None)
    watcher = run.watcher
    started = time.monotonic()
    bars: list[tqdm] = []  # closed before the stack stops: a signal's message comes after the last bar, not before

    def progress(**options) -> tqdm:
        bars.append(tqdm(**options, **progress_options()))
        return bars[-1]

    try:
        # 1. Explore until the first model reaches the controller.
        bar = progress(total=budget or None, desc="exploring", unit="step")

        waiting_for = "model"

        def exploring() -> None:
            explored = sum(t[1] == "explore" for t in watcher.timings)
            bar.update(min(explored, budget or explored) - bar.n)
            text = f"waiting for the trainer's first {waiting_for}" if budget and explored >= budget else "random driving"
            if text != getattr(bar, "postfix", None):  # redrawn when it changes: update() does not redraw a full bar
                bar.set_postfix_str(text)

        run.wait_for(lambda: watcher.model_version() >= 1, timeout_s, "the first model to reach the controller",
                     tick=exploring)
        if learn_policy:  # the policy alone stands still, and a prior is absent, until the first policy arrives
            waiting_for = "policy" if policy_rounds == 1 else f"{policy_rounds} policy rounds"
            run.wait_for(lambda: policy_settled(watcher, controller, policy_rounds), timeout_s,
                         "the first policy to reach the controller" if policy_rounds == 1 else
                         f"the trainer's {policy_rounds} policy rounds", tick=exploring)
        bar.close()
        # The episode running now started without a model; then the learning episodes, then the evaluated ones.
        # From the first evaluated one on the simulator takes its fixed evaluation seeds (sim/start_evaluation,
        # after its evaluation_delay = the learning episodes), so every run evaluates on the same starts and
        # goals however long its model and policy took to arrive and however many learning episodes it drove.
        first = start_evaluation(watcher)
        policy = ""
        if learn_policy:
            policy = (f"and policy v{watcher.policy_version()} " if watcher.policy_version() else
                      "(no policy: the trainer's first was not deployed, so the planner plans without a prior until "
                      "one passes) ")
        print(f"[demo] model v{watcher.model_version()} ({watcher.node_status('controller').get('model_kind', '')}) "
              + policy + f"deployed after {time.monotonic() - started:.0f} s; evaluating episodes from #{first}",
              flush=True)

        def follow(begin: int, count: int, desc: str, what: str, latency: bool) -> None:
            """A progress bar over the episodes [begin, begin + count) until they have all ended."""
            bar = progress(total=count, desc=desc, unit="episode")

            def tick() -> None:
                done = watcher.reports_of(begin, count)
                bar.update(len(done) - bar.n)
                wins = sum(r.get("success") == "True" for r in done)
                plans = [t[2] for t in watcher.timings if t[1] in ("plan", "policy")][-500:] if latency else []
                bar.set_postfix_str(f"success {wins}/{len(done)} | model v{watcher.model_version()}"
                                    + (f" | plan p50 {np.median(plans):.0f} ms" if plans else ""), refresh=False)

            run.wait_for(lambda: len(watcher.reports_of(begin, count)) == count, timeout_s, what, tick=tick)
            bar.close()

        holds: list[dict] = []
        if learning_episodes and lockstep:
            # Each learning episode, and the first evaluated one, starts on the model retrained on every episode
            # before it: the simulator holds it (hold_learning_episodes) until learn_between releases it.
            hold_timeout = float(params[f"sim_{robot}"].get("hold_timeout", 600.0))
            bar = progress(total=learning_episodes, desc="learning", unit="episode")
            for episode in range(first - learning_episodes, first + 1):
                run.wait_for(lambda: watcher.reports_of(episode - 1, 1), timeout_s, f"episode {episode - 1} to end")
                bar.update(episode - (first - learning_episodes) - bar.n)
                bar.set_postfix_str(f"retraining before episode {episode}")
                holds.append(learn_between(run, watcher, episode, hold_timeout))
                bar.set_postfix_str(f"episode {episode} on model v{holds[-1]['model_version']}")
            bar.close()
            for hold in holds:
                print(f"[demo] before episode {hold['episode']}: trainer round {hold['decision']}, model "
                      f"v{hold['model_version']}, held {hold['held_s']:.0f} s", flush=True)
        elif learning_episodes:
            follow(first - learning_episodes, learning_episodes, "learning", f"{learning_episodes} learning episodes",
                   latency=False)
        # 2. Episodes under the learned model (retrained online as data comes in).
        follow(first, episodes, task, f"{episodes} evaluated episodes", latency=True)
        # The controller's own count of its random cycles: the watcher's timing subscription misses the first
        # ones whenever discovery matches it late (a loaded machine: 998 of 1,000).
        explored = watcher.node_status("controller").get("cycles_explore", "")
    finally:
        for bar in bars:
            bar.close()
        run.stop()

    # By episode number (the simulator's), not by position among the reports received.
    traces = [trace for trace in watcher.episodes() if int(trace.report["episode"]) < first + episodes]
    evaluated = [trace for trace in traces if int(trace.report["episode"]) >= first]
    last_stamp = int(evaluated[-1].report["end_stamp_ns"])
    first_stamp = int(evaluated[0].report["start_stamp_ns"])
    # The controller's answers: the planner's plans, or the policy's actions under controller:=policy.
    timings = [t for t in watcher.timings if first_stamp <= t[0] < last_stamp and t[1] in ("plan", "policy")]
    if holds:  # the held first state is planned again at every re-publication: the cycle that stepped counts
        timings = list({t[0]: t for t in timings}.values())
    scene = demo.scene(task, config)
    summary = summarise(task, evaluated, traces, timings,
                        random=int(explored) if explored.isdigit() else sum(t[1] == "explore" for t in watcher.timings),
                        distance_key=scene.distance_key, summary_key=scene.summary_key)
    summary["model"] = model_kind
    summary["learning_episodes"] = learning_episodes
    if holds:
        summary["learning_holds"] = holds
    summary["controller"] = controller
    if prior > 0:
        summary["policy_prior_fraction"] = prior
    if learn_policy:
        summary["policy_version"] = watcher.policy_version()
        summary["policy_rounds"] = int(watcher.node_status("trainer").get("policy_rounds", "0") or 0)
    tracking = params["controller"].get("cost", {}).get("path_tracking")
    if tracking and "target_speed" in tracking:
        summary["target_speed"] = float(tracking["target_speed"])
    write_report(out, task, scene, evaluated, traces, timings, summary, watcher)
    print(f"[demo] {summary['episodes']} episodes: success rate {summary['success_rate']:.0%}"
          + (f", mean final distance to the goal {summary['mean_final_distance_m']:.4f} m"
             if "mean_final_distance_m" in summary else "")
          + (f", mean final rotation error {summary['mean_final_rotation_error_rad']:.3f} rad, "
             f"{summary['blocks_dropped']} blocks dropped" if "mean_final_rotation_error_rad" in summary else "")
          + (f", mean cross-track error {summary['mean_cross_track_error_m']:.2f} m"
             if "mean_cross_track_error_m" in summary else "")
          + (f", {summary['laps']} laps (mean lap time "
             + (f"{summary['mean_lap_time_s']:.2f} s" if summary["mean_lap_time_s"] is not None else "-")
             + f"), {summary['track_exits']} track exits" if "laps" in summary else "")
          + f"; {summary['transitions']} transitions ({summary['random_transitions']} random); controller "
          f"latency p50 {summary['controller_latency_ms']['p50']:.1f} ms / p99 "
          f"{summary['controller_latency_ms']['p99']:.1f} ms, deadline misses {summary['deadline_miss_rate']:.1%}; "
          f"plots in {out}/", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(json_numbers({k: summary[k] for k in JSON_KEYS if k in summary}),
                                              indent=2) + "\n")
    return 0


def learn_between(run: StackRun, watcher: StackWatcher, episode: int, timeout: float) -> dict:
    """Before ``episode``, which the simulator holds (``hold_learning_episodes``): close the data_logger's bag
    (the stopped clock would keep it open), ask the trainer for a round on every bag closed so far, wait for the
    round and, if it deployed a model, for the controller to have it (at most ``timeout`` seconds in all, the
    simulator's ``hold_timeout``), then release the episode. -> the episode, the round's decision ("timed
    out": none came), the controller's model version and the seconds held."""
    from std_srvs.srv import Trigger

    started = time.monotonic()

    def left() -> float:
        return max(0.0, timeout - (time.monotonic() - started))

    def trainer_round() -> int:
        return int(watcher.node_status("trainer").get("last_round_number", "0") or 0)

    watcher.call(Trigger, f"{watcher.namespace}/data_logger/split", Trigger.Request())
    before = trainer_round()
    watcher.call(Trigger, f"{watcher.namespace}/trainer/train", Trigger.Request())
    # The requested round, not a scheduled one that was running when it was asked for (it may predate the bag).
    done = run.wait_for(lambda: trainer_round() > before and watcher.node_status("trainer").get("last_round")
                        == "requested" and watcher.node_status("trainer"), left(),
                        f"the trainer's round before episode {episode}", required=False)
    decision = done.get("last_decision", "") if done else "timed out"
    version = done.get("last_candidate_version", "") if done else ""
    if decision == "accepted" and version.isdigit():
        run.wait_for(lambda: watcher.model_version() >= int(version), left(),
                     f"model v{version} to reach the controller", required=False)
    watcher.call(Trigger, f"{watcher.namespace}/sim/release", Trigger.Request())
    return {"episode": episode, "decision": decision, "model_version": watcher.model_version(),
            "held_s": round(time.monotonic() - started, 1)}


def start_evaluation(watcher) -> int:
    """Call the simulator's ``sim/start_evaluation``: -> the number of the first episode on its fixed seeds."""
    import re

    from std_srvs.srv import Trigger

    name = f"{watcher.namespace}/sim/start_evaluation"
    response = watcher.call(Trigger, name, Trigger.Request())
    found = re.match(r"episode (\d+) ", response.message)
    if not response.success or not found:
        raise RuntimeError(f"{name}: unexpected answer {response.message!r}")
    return int(found.group(1))


JSON_KEYS = ("task", "episodes", "success_rate", "transitions", "controller_latency_ms", "deadline_miss_rate",
             "mean_cross_track_error_m", "mean_final_distance_m", "mean_final_rotation_error_rad", "blocks_dropped",
             "random_transitions", "model", "controller", "policy_prior_fraction", "policy_version",
             "laps", "mean_lap_time_s", "best_lap_time_s", "track_exits", "target_speed", "learning_episodes", "seeds",
             "policy_rounds", "learning_holds")


def summarise(task: str, evaluated: list[EpisodeTrace], all_episodes: list[EpisodeTrace],
              timings: list[tuple], random: int, distance_key: str = "final_position_error_m",
              summary_key: str = "mean_final_distance_m") -> dict:
    """The issue's summary: success and mean final distance to the goal (the report's ``distance_key``, as
    ``summary_key``) over the evaluated episodes, latency over their planning cycles; blocks dropped where
    the reports say (the hand's rotate task)."""
    compute = np.array([t[2] for t in timings], dtype=float)
    deadline = np.array([t[3] for t in timings], dtype=float)
    summary = {
        "task": task,
        "episodes": len(evaluated),
        "success_rate": float(np.mean([e.success for e in evaluated])),
        # Every simulator step is one transition the stack collected (random, waiting, controlled).
        "transitions": int(sum(e.number("steps", 0) for e in all_episodes)),
        "random_transitions": int(random),
        "controller_latency_ms": {"p50": float(np.percentile(compute, 50)) if len(compute) else float("nan"),
                                  "p99": float(np.percentile(compute, 99)) if len(compute) else float("nan")},
        "deadline_miss_rate": float(np.mean(compute > deadline)) if len(compute) else float("nan"),
        "seeds": [int(e.report["seed"]) for e in evaluated],  # the simulator's, fixed by sim/start_evaluation
    }
    distances = np.array([e.number(distance_key) for e in evaluated])
    if np.isfinite(distances).any():  # a task with a goal
        summary[summary_key] = float(np.nanmean(distances))
    if any("block_dropped" in e.report for e in evaluated):
        summary["blocks_dropped"] = int(sum(e.report.get("block_dropped") == "True" for e in evaluated))
    if any("mean_cross_track_error_m" in e.report for e in evaluated):  # a path-following task
        summary["mean_cross_track_error_m"] = float(np.nanmean([e.number("mean_cross_track_error_m")
                                                                 for e in evaluated]))
    if any("laps" in e.report for e in evaluated):  # a lap task (the race)
        summary.update(lap_summary(evaluated))
    return summary


def lap_summary(evaluated: list[EpisodeTrace]) -> dict:
    """Laps completed over the episodes, their mean (weighted by laps) and best lap time, and the track exits
    (episodes that ended off the track). Lap times are None (JSON null) when no lap was completed."""
    laps = np.array([e.number("laps", 0) for e in evaluated], dtype=float)
    means = np.array([e.number("mean_lap_time_s") for e in evaluated], dtype=float)
    bests = np.array([e.number("best_lap_time_s") for e in evaluated], dtype=float)
    timed = laps > 0
    return {
        "laps": int(laps.sum()),
        "mean_lap_time_s": float(np.sum(laps[timed] * means[timed]) / laps[timed].sum()) if timed.any() else None,
        "best_lap_time_s": float(np.min(bests[timed])) if timed.any() else None,
        "track_exits": int(sum(e.report.get("crashed") == "True" for e in evaluated)),
    }


def write_report(out: Path, task: str, scene: Scene, evaluated: list[EpisodeTrace], traces: list[EpisodeTrace],
                 timings: list[tuple], summary: dict, watcher) -> None:
    from mbrl_ros.io import checkpoint

    title = f"{task}: {summary['success_rate']:.0%} success over {len(evaluated)} episodes"
    if "mean_cross_track_error_m" in summary:
        title += f", mean cross-track error {summary['mean_cross_track_error_m']:.2f} m"
    if "laps" in summary:
        title += f"\n{summary['laps']} laps, {summary['track_exits']} track exits"
        if summary["best_lap_time_s"] is not None:
            title += f", best lap {summary['best_lap_time_s']:.2f} s"
    if scene.paths:
        shown = [e for e in evaluated if len(e.poses) > 1]
        plot_car_trajectories(out / "trajectories.png", [np.array(e.poses) for e in shown],
                              [watcher.goal_at(int(e.report["start_stamp_ns"])) if scene.goals else None
                               for e in shown],
                              [e.outcome for e in shown], bounds=scene.bounds, reference=scene.reference,
                              circles=scene.circles, title=title)
    # Every episode (random, waiting and evaluated) against the transitions collected by its end.
    collected = np.cumsum([e.number("steps", 0) for e in traces])
    plot_progress(out / "progress.png", collected, [e.success for e in traces],
                  [e.number(scene.distance_key) for e in traces], distance_label=scene.distance_label, title=title)
    # The trainer's held-out error per horizon for every model it deployed.
    errors = {}
    for path in sorted((out / "checkpoints").glob("model_v*.pt"), key=lambda p: int(p.stem[7:])):
        _model, _config, metrics = checkpoint.load(path)
        by_horizon = {int(k.rsplit("_h", 1)[1]): float(v) for k, v in metrics.items() if k.startswith("val_rmse_h")}
        if by_horizon:
            errors[path.stem] = by_horizon
    if errors:
        plot_error_vs_horizon(out / "model_error.png", errors,
                              title="deployed models: held-out error against horizon")
    if timings:
        plot_latency_histogram(out / "latency.png", [t[2] for t in timings], deadline_ms=timings[0][3],
                               title=f"controller planning latency ({len(timings)} cycles)")
    (out / "summary.json").write_text(json.dumps(json_numbers(
        {**summary, "model_errors": errors,
         "episodes_detail": [typed(e.report) for e in evaluated]}), indent=2) + "\n")


def json_numbers(value):
    """``value`` with every non-finite float as None: JSON has no NaN (json.dumps would write the
    non-standard ``NaN``, which strict readers refuse)."""
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_numbers(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def typed(report: dict[str, str]) -> dict:
    """An episode report as the simulator meant it: its values travel as strings on sim/episodes
    (diagnostic_msgs/KeyValue); booleans and numbers go back to JSON booleans and numbers."""
    values: dict = {}
    for key, text in report.items():
        if text in ("True", "False"):
            values[key] = text == "True"
            continue
        try:
            values[key] = int(text)
        except ValueError:
            try:
                number = float(text)
                values[key] = number if np.isfinite(number) else None  # JSON has no NaN
            except ValueError:
                values[key] = text
    return values
