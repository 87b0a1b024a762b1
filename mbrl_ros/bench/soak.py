"""The soak (``mbrl-ros soak``): the simulated car stack in real time for a while, retraining online; does it hold up?

The stack is brought up as the demo and the latency benchmark do (``StackRun``,
``launch/bringup.launch.yaml``, config copied and overridden in the run folder):
the car in real time (``lockstep:=false``, the controller planning once per new
state), a model served from the start (the configured parametric prior), and
the trainer retraining from the logger's bags every ``RETRAIN_EVERY`` new
transitions. After a warm-up (the controller planning and the trainer's first
round done) it measures for ``--minutes``, then stops the stack and reads the
bags. The result:

- ``minutes``: the length of the measured window.
- ``rss_growth_pct``: the resident memory of the stack, summed over the node
  processes (each node's process group, from /proc, every ``SAMPLE_S``):
  median of the samples in the last fifth of the window against the first fifth.
- ``p99_drift_pct``: control latency (a state's stamp -> its command received by
  a watcher, as the hardware driver receives it): p99 in the last fifth of the
  window against the first fifth.
- ``deadline_miss_rate``: the fraction of the window's planning cycles (``plan``, and
  ``fallback``: planning overran, the shifted previous plan went out) whose control
  latency exceeded the control period.
- ``messages_lost``: every planning cycle of the window (``controller/timing``;
  one per state the controller answered) stands for one state on ``state`` and
  one command on ``hw/command``, both stamped with that state's stamp, which the
  data_logger should have recorded; the count of those stamps missing from the
  logger's complete bags after the stack stopped, states and commands together.
- ``restarts``: node processes started again (respawns: a node's pid changing,
  per node, as the launcher recorded them).

The run folder keeps the samples behind the numbers: ``cycles.csv`` (per planning
cycle: its state's stamp from the window's start, planning and control latency, in ms) and
``rss.csv`` (time from the window's start, bytes in all and per node), with the bags, checkpoints and
each node's output (``stack.log``).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mbrl_ros.bench.latency import planning_cycles, real_time_car, start_real_time_car

SAMPLE_S = 5.0  # seconds between memory samples
# The controller's cycles that answer a state with a planned command: planned now, or the learned policy's
# action or the shifted previous plan when planning overran the period (an overrun is a deadline miss, not a
# lost cycle), or the policy's action under controller:=policy.
PLANNED = ("plan", "fallback", "fallback_policy", "policy")
RETRAIN_EVERY = 100  # transitions (20 s of parking at 5 Hz): a round about every closed bag
WARMUP_TIMEOUT_S = 600.0
FLUSH_S = 3.0  # kept running after the window, so the logger has what the window sent (flush period 0.5 s)


def rss_bytes(pgid: int) -> int:
    """Resident memory of the processes in process group ``pgid`` (a node and anything it started)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
            if int(fields[2]) != pgid:  # state, ppid, pgrp
                continue
            with open(f"/proc/{entry.name}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
    return total


def percent_change(first: float, last: float) -> float:
    return 100.0 * (last - first) / first if first > 0 else float("nan")


def fifths(stamps: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the first and the last fifth of [start, end) over ``stamps``."""
    fifth = (end - start) // 5
    return (stamps >= start) & (stamps < start + fifth), (stamps >= end - fifth) & (stamps < end)


def logged_stamps(bag_dir: Path, topic: str) -> set[int]:
    """The header stamps of ``topic``'s messages in the complete bags under ``bag_dir``."""
    from mbrl_ros.io.bag_storage import StorageBag
    from mbrl_ros.io.bags import list_bags
    from mbrl_ros.offline.replay import header_stamp_ns

    stamps: set[int] = set()
    for bag in list_bags(bag_dir):
        with StorageBag(bag) as storage:
            if topic in storage.topics:
                (packed,) = storage.read([topic])
                stamps.update(header_stamp_ns(packed.message(k)) for k in range(len(packed)))
    return stamps


def analyse(cycles: tuple[np.ndarray, np.ndarray, np.ndarray], rss: list[tuple[int, int]], start_ns: int,
            end_ns: int, period_ms: float, logged: dict[str, set[int]], restarts: int) -> dict:
    """The soak's numbers from what was watched (see the module docstring).

    ``cycles``: planning cycles of any window as ``planning_cycles`` gives them (state stamps ns, planning ms,
    control latency ms); ``rss``: (time ns, bytes) samples; ``logged``: per topic the stamps in the bags."""
    stamps, _, latency = cycles
    inside = (stamps >= start_ns) & (stamps < end_ns)
    stamps, latency = stamps[inside], latency[inside]
    if len(stamps) < 10:
        raise RuntimeError(f"only {len(stamps)} planning cycles were watched in the window: nothing to measure")
    first, last = fifths(stamps, start_ns, end_ns)
    times = np.array([t for t, _ in rss], dtype=np.int64)
    memory = np.array([b for _, b in rss], dtype=float)
    rss_first, rss_last = fifths(times, start_ns, end_ns)
    if not rss_first.any() or not rss_last.any():
        raise RuntimeError(f"{len(rss)} memory samples: too few for the first and last fifth of the window")
    expected = set(stamps.tolist())
    return {
        "minutes": (end_ns - start_ns) / 60e9,
        "rss_growth_pct": percent_change(float(np.median(memory[rss_first])), float(np.median(memory[rss_last]))),
        "p99_drift_pct": percent_change(float(np.percentile(latency[first], 99)),
                                        float(np.percentile(latency[last], 99))),
        "deadline_miss_rate": float(np.mean(latency > period_ms)),
        "messages_lost": sum(len(expected - stamps_of) for stamps_of in logged.values()),
        "restarts": int(restarts),
    }


def run(minutes: float, task: str = "parking", out: str | None = None, json_path: str | None = None) -> dict:
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="mbrl_soak_"))
    folder.mkdir(parents=True, exist_ok=True)
    overrides = {node: {"random_transitions": RETRAIN_EVERY} for node in ("trainer", "controller")}
    overrides["trainer"]["retrain_every"] = RETRAIN_EVERY
    config, rate_hz = real_time_car(folder, task, overrides)
    period_ms = 1e3 / rate_hz
    print(f"[soak] car/{task} in real time, {rate_hz:g} Hz, retraining every {RETRAIN_EVERY} transitions; "
          f"{minutes:g} min measured after warm-up -> {folder}/", flush=True)
    stack = start_real_time_car(folder, task, config, "soak")
    watcher = stack.watcher
    rss: list[tuple[int, int]] = []  # (time ns, bytes of the whole stack)
    per_node: list[dict[str, int]] = []  # bytes per node, at the same times
    sampled = [0.0]

    def sample() -> None:
        if time.monotonic() - sampled[0] >= SAMPLE_S:
            sampled[0] = time.monotonic()
            nodes = {name: rss_bytes(pids[-1]) for name, pids in stack.runner.pids.items()}
            rss.append((time.time_ns(), sum(nodes.values())))
            per_node.append(nodes)

    try:
        stack.wait_for(lambda: sum(t[1] in PLANNED for t in watcher.timings) > 10
                       and int(watcher.node_status("trainer").get("rounds", "0")) >= 1,
                       WARMUP_TIMEOUT_S, "the controller planning and the trainer's first round")
        start_ns = time.time_ns()
        stack.expect_exits = True  # from now on a node that exits and respawns is counted (restarts), not fatal
        print(f"[soak] warmed up; measuring for {minutes:g} min", flush=True)
        stack.wait_for(lambda: time.time_ns() - start_ns >= minutes * 60e9, minutes * 60 + 120, "the soak",
                       tick=sample)
        end_ns = time.time_ns()
        watcher.spin(FLUSH_S)
        restarts = sum(len(pids) - 1 for pids in stack.runner.pids.values())
    finally:
        stack.stop()
    namespace = watcher.namespace
    logged = {topic: logged_stamps(folder / "bags", f"{namespace}/{topic}") for topic in ("state", "hw/command")}
    cycles = planning_cycles(watcher.timings, watcher.commands, PLANNED)
    result = analyse(cycles, rss, start_ns, end_ns, period_ms, logged, restarts)
    np.savetxt(folder / "cycles.csv", np.column_stack([(cycles[0] - start_ns) / 1e6, cycles[1], cycles[2]]),
               fmt="%.3f", delimiter=",", header="stamp_from_start_ms,planning_ms,control_latency_ms", comments="")
    names = sorted({name for nodes in per_node for name in nodes})
    np.savetxt(folder / "rss.csv", [[t - start_ns, total, *(nodes.get(n, 0) for n in names)]
                                    for (t, total), nodes in zip(rss, per_node)],
               fmt="%d", delimiter=",", header=",".join(["time_from_start_ns", "rss_bytes", *names]), comments="")
    print("[soak] " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()),
          flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result
