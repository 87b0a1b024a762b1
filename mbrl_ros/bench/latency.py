"""End-to-end latency of the running stack in real time: state stamp -> command received.

The whole car stack is brought up through the launch file (real-time simulation,
``lockstep:=false``, the controller planning once per new state) with a model
served from the start, so every cycle plans. A watcher process receives
``hw/command`` as the hardware driver does; each command carries the stamp of
the state it answers, which the simulator set from the system clock when it
published the odometry, so ``received - stamp`` is the whole path: simulator ->
estimator -> controller (planning) -> DDS. The controller's own per-cycle
planning time (``controller/timing``, same stamp) is measured in the same
cycles, so the two distributions are side by side.

Target (issue 3): end-to-end p99 <= planning p99 + 3 ms at 20 Hz.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mbrl_ros.stack_run import StackRun, default_domain_id, prepare_config
from mbrl_ros.io.config import launch_parameters
from mbrl_ros.ros_env import REPO_ROOT

TARGET_MARGIN_MS = 3.0


def prior_checkpoint(config: Path, task: str, path: Path) -> Path:
    """The trainer's parametric model as configured (no data needed), saved for the dynamics_server."""
    from mbrl_ros.io import checkpoint
    from mbrl_ros.robots import get_robot

    trainer = launch_parameters(config, "car", task, "trainer")
    model_config = trainer["parametric"]
    checkpoint.save(path, get_robot("car").build_model(model_config), model_config, {})
    return path


def real_time_car(folder: Path, task: str, overrides: dict[str, dict]) -> tuple[Path, float]:
    """The run folder of the car stack in real time, planning once per state with the configured
    parametric model from the start: its config (with ``overrides``) and prior; -> (config, rate Hz)."""
    config = prepare_config(REPO_ROOT / "config", folder / "config", "car", task, overrides)
    prior_checkpoint(config, task, folder / "prior.pt")
    return config, 1.0 / float(launch_parameters(config, "car", task, "controller")["dt"])


def start_real_time_car(folder: Path, task: str, config: Path, label: str) -> StackRun:
    """``real_time_car``'s stack started, with a watcher of the timing and of the commands."""
    return StackRun(folder, {"robot": "car", "hardware": "sim", "task": task, "lockstep": "false",
                             "trigger": "state", "checkpoint": str(folder / "prior.pt"), "run_dir": str(folder),
                             "config_dir": str(config)},
                    default_domain_id(label), watch_commands=True)


def run(duration_s: float = 60.0, warmup_s: float = 5.0, task: str = "race", out: str | None = None,
        json_path: str | None = None, executor: str | None = None, settle_heap: bool = False,
        logger_niceness: int | None = None) -> dict:
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="mbrl_latency_"))
    folder.mkdir(parents=True, exist_ok=True)
    # The trainer stays idle (its first round needs more data than the run collects): this
    # measures the control path alone; `mbrl-ros bench trainer-latency` measures it training.
    overrides: dict[str, dict] = {"trainer": {"random_transitions": 100_000_000}}
    if executor is not None:  # every node's (the config's, if not given)
        overrides["/**"] = {"executor": executor}
    if settle_heap:
        overrides.setdefault("/**", {})["settle_heap"] = True
    if logger_niceness is not None:
        overrides["data_logger"] = {"niceness": logger_niceness}
    config, rate_hz = real_time_car(folder, task, overrides)
    executor = launch_parameters(config, "car", task, "controller").get("executor", "single")
    print(f"[latency] car/{task} in real time at {rate_hz:g} Hz, {duration_s:g} s after {warmup_s:g} s warm-up, "
          f"{executor} executor -> {folder}/", flush=True)
    run = start_real_time_car(folder, task, config, "latency")
    watcher = run.watcher
    try:
        run.wait_for(lambda: sum(t[1] == "plan" for t in watcher.timings) > 10, 300, "planning cycles")
        watcher.spin(warmup_s)
        watcher.timings.clear()
        watcher.commands.clear()
        started = time.monotonic()
        run.wait_for(lambda: time.monotonic() - started >= duration_s, duration_s + 60, "the measurement")
        status = {node: run.watcher.node_status(node) for node in ("estimator", "controller")}
        breakdown = path_breakdown(status["estimator"], status["controller"])
        collector = {node: {k: v for k, v in values.items() if k.startswith("gc_")} for node, values in status.items()}
    finally:
        run.stop()

    result = analyse(watcher.timings, watcher.commands, rate_hz, duration_s)
    result["breakdown_ms"] = breakdown
    result["gc"] = collector  # each node's cyclic collector passes and longest pause (ros/gc_pauses.py)
    result["task"] = task
    result["executor"] = executor
    result["settle_heap"] = settle_heap
    result["logger_niceness"] = launch_parameters(config, "car", task, "data_logger").get("niceness", 0)
    print(f"[latency] {result['cycles']} planning cycles: planning p50 {result['planning_ms']['p50']:.2f} / p99 "
          f"{result['planning_ms']['p99']:.2f} ms; end-to-end p50 {result['end_to_end_ms']['p50']:.2f} / p99 "
          f"{result['end_to_end_ms']['p99']:.2f} ms; overhead p50 {result['overhead_ms']['p50']:.2f} / p99 "
          f"{result['overhead_ms']['p99']:.2f} ms; target e2e p99 <= planning p99 + {TARGET_MARGIN_MS:g} ms: "
          f"{'met' if result['target_met'] else 'MISSED'}", flush=True)
    print("[latency] where the time goes (the nodes' /diagnostics, their last 500 cycles): "
          + "; ".join(f"{k} p50 {v['p50']:.2f} / p99 {v['p99']:.2f} ms" for k, v in breakdown.items()), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def path_breakdown(estimator: dict[str, str], controller: dict[str, str]) -> dict[str, dict[str, float]]:
    """The stages of the path from the nodes' own diagnostics (each a window of their last 500 cycles):
    the estimator's odometry stamp -> state published (the simulator's hop and the estimator), its time in the
    callback, and the controller's state arrival -> command published (planning included). What is left of
    the end-to-end time is the two hops state -> controller and command -> receiver."""
    def stage(values: dict[str, str], key: str) -> dict[str, float]:
        return {q: float(values.get(f"{key}_{q}_ms", "nan")) for q in ("p50", "p99")}

    return {"odometry_to_state": stage(estimator, "latency"), "estimator_callback": stage(estimator, "processing"),
            "state_to_command": stage(controller, "state_to_command")}


def planning_cycles(timings: list[tuple], commands: list[tuple[int, int]], modes: tuple[str, ...] = ("plan",)
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cycle of the ``modes`` paired with the first command received for its state stamp, in the order
    of ``timings``: (state stamps ns [int64], planning ms, end-to-end ms = received - stamp)."""
    received: dict[int, int] = {}
    for stamp, arrival in commands:
        received.setdefault(stamp, arrival)
    matched = [(stamp, compute_ms) for stamp, mode, compute_ms, _deadline, _model in timings
               if mode in modes and stamp in received]
    stamps = np.array([stamp for stamp, _ in matched], dtype=np.int64)
    planning = np.array([compute_ms for _, compute_ms in matched], dtype=float)
    end_to_end = np.array([(received[stamp] - stamp) / 1e6 for stamp, _ in matched], dtype=float)
    return stamps, planning, end_to_end


def analyse(timings: list[tuple], commands: list[tuple[int, int]], rate_hz: float, duration_s: float) -> dict:
    """Pair each planning cycle with the first command received for the same state stamp."""
    _, planning, end_to_end = planning_cycles(timings, commands)
    if not len(planning):
        raise RuntimeError("no planning cycle was matched with a received command")

    def stats(values: np.ndarray) -> dict[str, float]:
        return {"p50": float(np.percentile(values, 50)), "p99": float(np.percentile(values, 99)),
                "max": float(values.max())}

    result = {
        "rate_hz": rate_hz,
        "duration_s": duration_s,
        "cycles": int(len(planning)),
        "expected_cycles": int(rate_hz * duration_s),
        "planning_ms": stats(planning),
        "end_to_end_ms": stats(end_to_end),
        "overhead_ms": stats(end_to_end - planning),
        "deadline_miss_rate": float(np.mean(end_to_end > 1e3 / rate_hz)),
    }
    result["target_met"] = bool(result["end_to_end_ms"]["p99"] <= result["planning_ms"]["p99"] + TARGET_MARGIN_MS)
    return result
