"""``mbrl-ros bench trainer-latency``: the controller's planning latency with the trainer training vs idle.

Real processes over DDS, in a ROS domain of their own: sim_car in real time
(lockstep false), estimator, dynamics_server (serving a bicycle model, so the
controller plans with MPPI from the first cycle), controller in timer mode at
its configured rate (config/car.yaml, car_parking.yaml), and the trainer on a
folder of synthetic driving bags (a few thousand transitions), which this
benchmark keeps training by calling ``trainer/train`` again after every round.
With ``--policy shac|mbpo`` the trainer learns a policy instead (``learn_policy``
with the parking task's policy section, the method as given) through the served
bicycle, and the benchmark keeps it busy with ``trainer/train_policy`` (issue 12:
the controller's p99 with the policy trainer running).

Phases alternate in one run (idle, training, training, idle, ...), so both
conditions see the same machine load from outside, a trend in it included. A phase lasts until the
controller has run a whole diagnostics window of cycles (500) inside it; its
numbers are the controller's own /diagnostics latency p50/p99 (the compute time
of a cycle) over that window, so every sample belongs to that phase. Per
condition the report gives the median over phases of p50 and p99, the worst
p99, and the ratio training p99 / idle p99 (target <= 1.25).

Levers, applied to the trainer process from outside (all its threads):
``--trainer-cpu N`` pins it to core N and the other processes to the rest;
``--sched-idle`` gives it the SCHED_IDLE policy. Its niceness (10) and torch
threads (1) are the node's own.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mbrl_ros.ros_env import REPO_ROOT, free_domain_id, workspace_env

NAMESPACE = "/car"
WINDOW = 500  # LoopStats' window in the controller's diagnostics
NODES = {  # name -> (module, extra parameters)
    "sim_car": ("mbrl_ros_hardware.car.sim", {"lockstep": "false", "task": "parking"}),
    "estimator": ("mbrl_ros.nodes.estimator", {}),
    "dynamics_server": ("mbrl_ros.nodes.dynamics_server", {}),
    "controller": ("mbrl_ros.nodes.controller", {}),
    "trainer": ("mbrl_ros.nodes.trainer", {}),
}


def write_driving_bags(folder: Path, bags: int, episodes: int, steps: int, dt: float, seed: int = 0) -> int:
    """Bags of a bicycle car driven by held random commands, as the data_logger records them. -> transitions."""
    import torch

    from mbrl_ros.robots import get_robot
    from mbrl_ros.io.bags import COMMAND_TYPE, STATE_TYPE, default_typestore
    from mbrl_ros.io.config import node_parameters
    from mbrl_ros.io.recording import BagRecorder

    config = node_parameters(REPO_ROOT / "config" / "car.yaml", "trainer")
    car = get_robot("car").build_model(config["parametric"])
    names, action_names = list(config["state_names"]), list(config["action_names"])
    store = default_typestore()
    header_t, time_t = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    g = torch.Generator().manual_seed(seed)
    stamp, dt_ns = 100 * 10**9, int(round(dt * 1e9))
    for b in range(bags):
        with BagRecorder(folder / f"run_{b:04d}", typestore=store) as bag:
            bag.add_topic(f"{NAMESPACE}/state", STATE_TYPE)
            bag.add_topic(f"{NAMESPACE}/hw/command", COMMAND_TYPE)
            for _ in range(episodes):
                state = torch.zeros(1, 5)
                held = torch.zeros(1, 2)
                for k in range(steps + 1):
                    header = header_t(stamp=time_t(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="map")
                    msg = store.types[STATE_TYPE](header=header, names=names, values=state[0].double().numpy(),
                                                  valid=True, reason="")
                    bag.write(f"{NAMESPACE}/state", stamp, bytes(store.serialize_cdr(msg, STATE_TYPE)))
                    if k < steps:
                        change = torch.rand(1, 2, generator=g) < 0.15
                        held = torch.where(change, torch.rand(1, 2, generator=g) * 2 - 1, held)
                        action = held.clone()  # acceleration towards a held speed (|v| <= 4 m/s), held steering
                        action[:, 0] = (2.0 * (held[:, 0] * 4.0 - state[:, 3]) / 5.0).clamp(-1, 1)
                        command = store.types[COMMAND_TYPE](header=header, names=action_names,
                                                            values=action[0].double().numpy())
                        bag.write(f"{NAMESPACE}/hw/command", stamp + 1, bytes(store.serialize_cdr(command, COMMAND_TYPE)))
                        with torch.no_grad():
                            state = car(state, action)
                    stamp += dt_ns
                stamp += 50 * dt_ns  # a pause: the next episode is a new one
    return bags * episodes * steps


class Watcher:
    """The benchmark's own rclpy node: /diagnostics of the controller and trainer, the train service."""

    def __init__(self, domain_id: int, service: str = "trainer/train") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from std_srvs.srv import Trigger

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("trainer_latency_bench", context=self.context)
        self.latest: dict[str, dict[str, str]] = {}
        self.trainer_busy: list[bool] = []  # training_now, one per trainer diagnostics message
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.train = self.node.create_client(Trigger, f"{NAMESPACE}/{service}")
        self.trigger = Trigger
        # Spun from the benchmark's own thread (spin_for), never from a second one: a service
        # call from one thread while another spins hung the watcher in one run.
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=left)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            for name in ("controller", "trainer", "dynamics_server"):
                if status.name.endswith("/" + name):
                    values = {kv.key: kv.value for kv in status.values}
                    self.latest[name] = values
                    if name == "trainer":
                        self.trainer_busy.append(values.get("training_now") == "True")

    def values(self, name: str) -> dict[str, str]:
        return dict(self.latest.get(name, {}))

    def wait(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            self.spin_for(0.2)
        raise RuntimeError(f"trainer-latency: no {what} within {timeout:.0f} s")

    def request_training(self) -> None:
        if self.train.service_is_ready():
            self.train.call_async(self.trigger.Request())

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        import rclpy
        rclpy.try_shutdown(context=self.context)


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def apply_levers(procs: dict[str, subprocess.Popen], trainer_cpu: int | None, sched_idle: bool) -> list[str]:
    """Pin and/or de-prioritise the trainer (every thread it has now; later ones inherit)."""
    applied = []
    trainer = procs["trainer"].pid
    if trainer_cpu is not None:
        cores = sorted(os.sched_getaffinity(0))
        rest = set(cores) - {trainer_cpu} or set(cores)
        for tid in _threads(trainer):
            os.sched_setaffinity(tid, {trainer_cpu})
        for name, proc in procs.items():
            if name != "trainer":
                for tid in _threads(proc.pid):
                    os.sched_setaffinity(tid, rest)
        applied.append(f"trainer pinned to CPU {trainer_cpu}, the other nodes to {sorted(rest)}")
    if sched_idle:
        for tid in _threads(trainer):
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        applied.append("trainer SCHED_IDLE")
    return applied


def run_phase(watcher: Watcher, training: bool, timeout: float) -> dict:
    """One phase: a whole diagnostics window of controller cycles with the trainer training or idle."""
    if training:
        watcher.request_training()
        watcher.wait(lambda: watcher.values("trainer").get("training_now") == "True", 120, "training round start")
    else:  # a round in progress would spill into the idle phase
        watcher.wait(lambda: watcher.values("trainer").get("training_now") == "False", timeout, "end of the round")
    start_cycles = int(watcher.values("controller").get("cycles", "0"))
    busy_from = len(watcher.trainer_busy)
    started = time.monotonic()
    rounds_before = int(watcher.values("trainer").get("rounds", "0"))
    policy_rounds_before = int(watcher.values("trainer").get("policy_rounds", "0"))
    deadline = started + timeout
    while time.monotonic() < deadline:
        values = watcher.values("controller")
        if int(values.get("cycles", "0")) >= start_cycles + WINDOW:
            break
        if training and watcher.values("trainer").get("training_now") == "False":
            watcher.request_training()  # keep it training: the next round at once
        watcher.spin_for(0.25)
    else:
        raise RuntimeError(f"trainer-latency: the controller did not run {WINDOW} cycles within {timeout:.0f} s")
    busy = watcher.trainer_busy[busy_from:]
    trainer = watcher.values("trainer")
    return {
        "training": training,
        "seconds": round(time.monotonic() - started, 1),
        "cycles": int(values["cycles"]) - start_cycles,
        "p50_ms": float(values["latency_p50_ms"]),
        "p99_ms": float(values["latency_p99_ms"]),
        "rate_hz": float(values["rate_hz"]),
        "deadline_misses_total": int(values["deadline_misses"]),
        "trainer_busy_fraction": round(sum(busy) / len(busy), 3) if busy else 0.0,
        "trainer_rounds": int(trainer.get("rounds", "0")) - rounds_before,
        "policy_rounds": int(trainer.get("policy_rounds", "0")) - policy_rounds_before,
        "load_average_1min": os.getloadavg()[0],  # the machine is shared: how loaded it was
    }


def summarise(phases: list[dict]) -> dict:
    out = {}
    for key, training in (("idle", False), ("training", True)):
        rows = [p for p in phases if p["training"] == training]
        out[key] = {
            "phases": len(rows),
            "p50_ms": statistics.median(p["p50_ms"] for p in rows),
            "p99_ms": statistics.median(p["p99_ms"] for p in rows),
            "worst_p99_ms": max(p["p99_ms"] for p in rows),
            "trainer_busy_fraction": statistics.mean(p["trainer_busy_fraction"] for p in rows),
        }
    out["p99_ratio"] = out["training"]["p99_ms"] / out["idle"]["p99_ms"]
    out["worst_p99_ratio"] = out["training"]["worst_p99_ms"] / out["idle"]["worst_p99_ms"]
    return out


def main(phases: int = 3, model: str = "ensemble", epochs: int = 30, trainer_cpu: int | None = None,
         sched_idle: bool = False, json_path: str | None = None, keep: str | None = None,
         policy: str | None = None) -> int:
    from mbrl_ros.robots import get_robot
    from mbrl_ros.io import checkpoint
    from mbrl_ros.io.config import node_parameters

    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="trainer_latency_"))
    work.mkdir(parents=True, exist_ok=True)
    trainer_config = node_parameters(REPO_ROOT / "config" / "car.yaml", "trainer")
    dt = float(trainer_config["dt"])
    written = write_driving_bags(work / "bags", bags=4, episodes=10, steps=75, dt=dt)
    model_file = work / "bicycle.pt"
    checkpoint.save(model_file, get_robot("car").build_model(trainer_config["parametric"]), trainer_config["parametric"])
    # A params file of the benchmark's own, after the config's: rcl lets a node's section in a
    # params file win over a `-p` assignment, so overrides of '/**/trainer' keys must be a section too.
    overrides = work / "overrides.yaml"
    overrides.write_text(json.dumps({
        "/**/dynamics_server": {"ros__parameters": {"checkpoint": str(model_file)}},
        "/**/trainer": {"ros__parameters": {
            "bag_dir": str(work / "bags"), "checkpoint_dir": str(work / "checkpoints"), "model_kind": model,
            "random_transitions": 100_000_000, "poll_period": 0.5, "training": {"epochs": epochs},
            **({"learn_policy": True, "policy": {"method": policy}} if policy else {})}},
        "/**/controller": {"ros__parameters": {"trigger": "timer"}},
    }, indent=1))
    domain = free_domain_id("trainer-latency")
    env = workspace_env(domain_id=domain)
    env["ROS_LOG_DIR"] = str(work / "ros_log")
    config_files = [REPO_ROOT / "config" / "car.yaml", REPO_ROOT / "config" / "car_parking.yaml", overrides]
    procs: dict[str, subprocess.Popen] = {}
    watcher = None
    print(f"trainer-latency: {written} transitions in 4 bags under {work}; ROS domain {domain}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for name, (module, params) in NODES.items():
            argv = [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())",
                    "--ros-args", "-r", f"__ns:={NAMESPACE}"]
            if name != "sim_car":
                for f in config_files:
                    argv += ["--params-file", str(f)]
            for key, value in params.items():
                argv += ["-p", f"{key}:={value}"]
            procs[name] = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                           stdout=(work / f"{name}.log").open("w"), stderr=subprocess.STDOUT)
        watcher = Watcher(domain, "trainer/train_policy" if policy else "trainer/train")
        watcher.wait(lambda: watcher.values("trainer").get("bags") == "4", 180, "trainer reading the bags")
        read = int(watcher.values("trainer")["transitions"])
        if read == 0:
            raise RuntimeError(f"trainer-latency: the trainer read no transitions from the bags; see {work}/trainer.log")
        watcher.wait(lambda: int(watcher.values("controller").get("cycles_plan", "0")) > 10, 180,
                     "controller planning cycles")
        levers = apply_levers(procs, trainer_cpu, sched_idle)
        rate = 1.0 / float(node_parameters(config_files[0], "controller")["dt"])
        timeout = 3 * WINDOW / rate + 120
        print(f"trainer-latency: the trainer reads {read} transitions; controller at {rate} Hz, {WINDOW} cycles per phase (~{WINDOW / rate:.0f} s); "
              f"levers: {', '.join(levers) or 'none (nice 10, 1 torch thread: the node defaults)'}", flush=True)
        # Idle, training, training, idle, ...: a trend in the machine's outside load (other users'
        # jobs starting or ending) then weighs on both conditions alike.
        order = [training for i in range(phases) for training in ((False, True) if i % 2 == 0 else (True, False))]
        results = []
        for i, training in enumerate(order):
            phase = run_phase(watcher, training=training, timeout=timeout)
            results.append(phase)
            print(f"  phase {i + 1}/{2 * phases} {'training' if phase['training'] else 'idle':8s} "
                  f"p50 {phase['p50_ms']:7.2f} ms  p99 {phase['p99_ms']:7.2f} ms  rate {phase['rate_hz']:.2f} Hz  "
                  f"trainer busy {phase['trainer_busy_fraction']:.0%} ({phase['trainer_rounds']} model, "
                  f"{phase['policy_rounds']} policy rounds)  "
                  f"load {phase['load_average_1min']:.2f}", flush=True)
        summary = summarise(results)
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"trainer-latency: {name} exited with {proc.returncode}; see {work}/{name}.log")
    finally:
        if watcher is not None:
            watcher.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    report = {
        "benchmark": "trainer-latency",
        "controller_rate_hz": rate,
        "window_cycles": WINDOW,
        "trainer": {"model_kind": model, "epochs": epochs, "policy": policy, "transitions": read, "levers": levers},
        "cpus": os.cpu_count(),
        "load_average_end": list(os.getloadavg()),
        "phases": results,
        **summary,
        "target_ratio": 1.25,
        "command": " ".join(sys.argv),
    }
    print(f"idle     p50 {summary['idle']['p50_ms']:.2f} ms  p99 {summary['idle']['p99_ms']:.2f} ms "
          f"(median of {phases} phases; worst p99 {summary['idle']['worst_p99_ms']:.2f})")
    print(f"training p50 {summary['training']['p50_ms']:.2f} ms  p99 {summary['training']['p99_ms']:.2f} ms "
          f"(worst p99 {summary['training']['worst_p99_ms']:.2f}); trainer busy "
          f"{summary['training']['trainer_busy_fraction']:.0%} of the training phases")
    print(f"p99 ratio training/idle {summary['p99_ratio']:.3f} (worst-phase ratio {summary['worst_p99_ratio']:.3f}); "
          f"target <= 1.25")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2))
        print(f"wrote {json_path}")
    return 0
