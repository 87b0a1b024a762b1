"""Run the whole stack through its launch file and watch it from this process.

``StackRun`` is the launch-and-watch harness of ``mbrl-ros demo``, the stack benchmarks and the
end-to-end tests: it copies
the parameter files into the run folder (with the run's overrides merged in, so
the folder records exactly what ran), starts ``launch/bringup.launch.yaml`` with
the pip-only launcher in a ROS domain of its own, and watches the robot with a
plain rclpy node: episode reports (``sim/episodes``), ``/diagnostics``, the
controller's per-cycle timing, odometry and goals.

Watching ``controller/timing`` needs ``mbrl_interfaces``, which only a process
started with the workspace environment can import (``ros_env.workspace_env``);
``ros_env.restart_in_workspace_if_needed`` restarts the current command that way.
"""

from __future__ import annotations

import collections
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from mbrl_ros.core.angles import yaw_from_quaternion
from mbrl_ros.io.config import ConfigError, merge
from mbrl_ros.ros.stamps import stamp_to_ns
from mbrl_ros.ros_env import REPO_ROOT, free_domain_id, workspace_env

STOP_TIMEOUT_S = 30.0  # the launcher's SIGINT, SIGTERM and SIGKILL to a node take 12 s at most (5 + 5 + 2)


def progress_options() -> dict:
    """tqdm options: live on a terminal; in a log file (CI, nohup) a line every 10 s instead of silence."""
    return {"mininterval": 0.5} if sys.stderr.isatty() else {"mininterval": 10.0, "ascii": True}


def default_domain_id(label: str) -> int:
    """A ROS domain for a run: ROS_DOMAIN_ID if set, else a free one (``ros_env.free_domain_id``),
    so a demo does not talk to robots on the default domain 0 or to another run on this machine."""
    if os.environ.get("ROS_DOMAIN_ID", "").strip().isdigit():
        return int(os.environ["ROS_DOMAIN_ID"])
    return free_domain_id(label)


def prepare_config(source: Path, target: Path, robot: str, task: str,
                   overrides: dict[str, dict] | None = None) -> Path:
    """Copy the parameter files to ``target`` and merge ``overrides`` ({node: {param: value}}; the node
    "/**": all of them) into ``<robot>_<task>.yaml``, the file the launch file loads last."""
    source, target = Path(source), Path(target)
    for name in (f"{robot}.yaml", f"{robot}_{task}.yaml"):
        if not (source / name).is_file():
            raise ConfigError(f"{source / name}: not found (the parameter files of robot '{robot}', task '{task}')")
    shutil.copytree(source, target, dirs_exist_ok=True)
    if overrides:
        task_file = target / f"{robot}_{task}.yaml"
        data = yaml.safe_load(task_file.read_text()) or {}
        for node, params in overrides.items():
            name = node if node.startswith("/") else f"/**/{node}"  # "/**": every node's section
            section = data.setdefault(name, {}).setdefault("ros__parameters", {})
            section.update(merge(section, params))
        # Strings are quoted on the way out: rcl's YAML parser reads a bare y/n as a boolean.
        task_file.write_text(f"# {source / task_file.name} with this run's overrides\n"
                             + yaml.dump(data, Dumper=_QuotingDumper, sort_keys=False))
    return target


class _QuotingDumper(yaml.SafeDumper):
    pass


_QuotingDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="'" if not value.startswith("/**") else None))


@dataclass
class EpisodeTrace:
    """One finished episode as the simulator reported it, with the odometry that fell in it."""

    report: dict[str, str]
    poses: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return self.report.get("success") == "True"

    @property
    def outcome(self) -> str:
        if self.success:
            return "success"
        return "crashed" if self.report.get("crashed") == "True" else "timeout"

    def number(self, key: str, default: float = float("nan")) -> float:
        try:
            return float(self.report[key])
        except (KeyError, ValueError):
            return default


class StackWatcher:
    """A plain rclpy node in the stack's domain collecting what the demo and benchmarks need."""

    def __init__(self, domain_id: int, namespace: str = "car", timing: bool = True, commands: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        from mbrl_ros.ros.qos import EPISODE_REPORTS

        self.rclpy = rclpy
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        # Discovery on this host only, like the stack's processes (ros_env.workspace_env(domain_id=...)).
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("stack_watcher", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.reports: list[dict[str, str]] = []  # finished episodes, in order
        self._reports: dict[int, dict[str, str]] = {}
        self.odometry: list[tuple[int, float, float, float]] = []  # (stamp ns, x, y, yaw)
        self.goals: list[tuple[int, float, float, float]] = []
        self.timings: list[tuple[int, str, float, float, int]] = []  # (stamp ns, mode, compute, deadline, model)
        self.commands: list[tuple[int, int]] = []  # (stamp ns = the answered state's, system time received ns)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        # One message per episode, latched with its history: this node joins after the stack has started, and
        # gets the episodes that ended before it matched too.
        self.node.create_subscription(DiagnosticArray, f"{ns}/sim/episodes", self._on_episodes, EPISODE_REPORTS)
        self.node.create_subscription(Odometry, f"{ns}/hw/odom", self._on_odometry, qos_profile_sensor_data)
        self.node.create_subscription(PoseStamped, f"{ns}/goal_pose", self._on_goal, latched)
        if timing:
            from mbrl_interfaces.msg import CycleTiming

            self.node.create_subscription(CycleTiming, f"{ns}/controller/timing", self._on_timing, 200)
        if commands:  # received here as the hardware driver receives them: latency from the state's stamp
            from mbrl_interfaces.msg import CommandVector

            from mbrl_ros.ros.qos import COMMAND

            self.node.create_subscription(CommandVector, f"{ns}/hw/command", self._on_command, COMMAND)
        self.namespace = ns

    # --- callbacks ------------------------------------------------------------------------
    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            self.diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    def _on_episodes(self, msg) -> None:
        # One message per finished episode (a status each), in order; by number, so none counts twice.
        for status in msg.status:
            report = {kv.key: kv.value for kv in status.values}
            self._reports[int(report.get("episode", len(self._reports)))] = report
        self.reports = [self._reports[k] for k in sorted(self._reports)]

    def reports_of(self, first: int, count: int) -> list[dict[str, str]]:
        """The reports of episodes ``first`` .. ``first + count - 1`` (by number) received so far."""
        return [self._reports[k] for k in range(first, first + count) if k in self._reports]

    def _on_odometry(self, msg) -> None:
        q = msg.pose.pose.orientation
        yaw = _yaw(q)
        self.odometry.append((stamp_to_ns(msg.header.stamp), msg.pose.pose.position.x, msg.pose.pose.position.y, yaw))

    def _on_goal(self, msg) -> None:
        self.goals.append((stamp_to_ns(msg.header.stamp), msg.pose.position.x, msg.pose.position.y,
                           _yaw(msg.pose.orientation)))

    def _on_command(self, msg) -> None:
        self.commands.append((stamp_to_ns(msg.header.stamp), time.time_ns()))

    def _on_timing(self, msg) -> None:
        self.timings.append((stamp_to_ns(msg.header.stamp), msg.mode, msg.compute_ms, msg.deadline_ms, msg.model_version))

    # --- queries --------------------------------------------------------------------------
    def status(self, name: str) -> dict[str, str]:
        """The latest diagnostics whose status name ends with ``name`` (a node outside the robot's
        namespace too, e.g. a device emulator)."""
        return next((v for k, v in self.diagnostics.items() if k.endswith(name)), {})

    def node_status(self, node: str) -> dict[str, str]:
        """The latest diagnostics of ``<namespace>/<node>``."""
        return self.status(f"{self.namespace}/{node}")

    def model_version(self) -> int:
        return int(self.node_status("controller").get("model_version", "0") or 0)

    def policy_version(self) -> int:
        return int(self.node_status("controller").get("policy_version", "0") or 0)

    def episodes(self) -> list[EpisodeTrace]:
        """Finished episodes with their odometry (by stamp: [start, end) of each episode)."""
        traces = []
        odometry = sorted(self.odometry)
        for report in self.reports:
            start, end = int(report.get("start_stamp_ns", 0)), int(report.get("end_stamp_ns", 0))
            poses = [(x, y, yaw) for stamp, x, y, yaw in odometry if start <= stamp < end]
            if "final_x" in report:
                poses.append((float(report["final_x"]), float(report["final_y"]), float(report["final_yaw"])))
            traces.append(EpisodeTrace(report, poses))
        return traces

    def goal_at(self, stamp_ns: int) -> tuple[float, float, float] | None:
        """The goal published last at or before ``stamp_ns`` (each episode publishes its own)."""
        before = [g for g in self.goals if g[0] <= stamp_ns]
        return tuple(max(before)[1:]) if before else None

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        """Call service ``name`` and wait for its answer (AssertionError if none comes)."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available after {timeout:.0f} s")
            future = client.call_async(request)
            self.executor.spin_until_future_complete(future, timeout_sec=timeout)
            if not future.done():
                raise AssertionError(f"no answer from {name} within {timeout:.0f} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def transition(self, node: str, transition_id: int, timeout: float = 20.0) -> None:
        """Drive lifecycle node ``node`` (full name) through ``transition_id``; AssertionError if refused."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        response = self.call(ChangeState, f"{node}/change_state",
                             ChangeState.Request(transition=Transition(id=transition_id)), timeout)
        if not response.success:
            raise AssertionError(f"{node}: lifecycle transition {transition_id} refused")

    def spin(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=max(0.0, min(0.1, deadline - time.monotonic())))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


class StackRun:
    """``bringup.launch.yaml`` started in its own domain, its output in ``out/stack.log``."""

    def __init__(self, out: Path, launch_args: dict[str, str], domain_id: int, namespace: str = "car",
                 echo: Callable[[str], None] | None = None, watch_timing: bool = True,
                 watch_commands: bool = False, processes: dict | None = None,
                 prepare: Callable[[object], None] | None = None) -> None:
        """``processes``: other processes the run depends on (name -> Popen, e.g. a device emulator);
        one of them ending is a failure like a node's. ``prepare``: called with the loaded launch description
        before anything starts, to change a node's command (tests: a node that starts late)."""
        from mbrl_ros import launcher

        self.out, self.domain_id = Path(out), domain_id
        self.expect_exits = False  # set when stopping a node is the point (tests)
        self.processes = dict(processes or {})
        self.lines: collections.deque[str] = collections.deque(maxlen=200)  # the latest output (all in stack.log)
        self.env = workspace_env(domain_id=domain_id)
        description = launcher.load_launch_file(REPO_ROOT / "launch" / "bringup.launch.yaml",
                                                {"namespace": namespace, **launch_args}, environment=self.env)
        if prepare is not None:
            prepare(description)
        self.log = open(self.out / "stack.log", "a", buffering=1)
        self.echo = echo

        def output(label: str, stream: str, text: str) -> None:
            line = f"[{label}] {text}"
            self.lines.append(line.rstrip("\n"))
            self.log.write(line + ("" if line.endswith("\n") else "\n"))
            if self.echo is not None:
                self.echo(line)

        self.watcher: StackWatcher | None = None
        self.watcher_closed = False
        self.runner = launcher.make_runner(description, output=output, log_directory=self.out / "log")
        try:
            self.runner.start()
            self.watcher = StackWatcher(domain_id, namespace, timing=watch_timing, commands=watch_commands)
        except BaseException:  # Ctrl-C or SIGTERM while the stack starts: it ends here too, not later, not never
            self.stop()
            raise

    def failed_nodes(self) -> dict[str, object]:
        failed: dict[str, object] = {name: codes for name, codes in self.runner.exit_codes.items() if any(codes)}
        failed.update({name: p.returncode for name, p in self.processes.items() if p.poll() is not None})
        return failed

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str, tick: Callable[[], None] = None,
                 required: bool = True):
        """Spin until ``condition()`` is truthy; a node exiting is a RuntimeError, and so is the timeout where
        ``required`` (else it returns None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watcher.spin(0.2)
            failed = self.failed_nodes()
            if failed and not self.expect_exits:
                raise RuntimeError(f"node(s) exited {failed} while waiting for {what}; see {self.out / 'stack.log'}:\n"
                                   + "\n".join(list(self.lines)[-30:]))
            if tick is not None:
                tick()
            result = condition()
            if result:
                return result
        if not required:
            return None
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; see {self.out / 'stack.log'}:\n"
                           + "\n".join(list(self.lines)[-30:]))

    def stop(self) -> None:
        """Stop every process of the stack and return once they are all gone (the launcher escalates SIGINT,
        SIGTERM, SIGKILL to each node's process group). A Ctrl-C or SIGTERM arriving meanwhile does not abandon
        the stop, which would leave the nodes running: it moves the launcher on to its next signal, as the
        launcher's own second Ctrl-C does, and is raised again once the stack has ended."""
        interrupted: KeyboardInterrupt | None = None
        try:
            if self.watcher is not None and not self.watcher_closed:
                self.watcher_closed = True  # its answers stay readable (demo's summary, benchmarks)
                self.watcher.close()
        except KeyboardInterrupt as interrupt:
            interrupted = interrupt
        finally:
            while not self.runner.done:
                try:
                    self.runner.stop(timeout=STOP_TIMEOUT_S)  # asked again: the next signal now
                    break
                except KeyboardInterrupt as interrupt:
                    interrupted = interrupted or interrupt
            self.log.close()
        if interrupted is not None:
            raise interrupted


def _yaw(q) -> float:
    return yaw_from_quaternion(q.x, q.y, q.z, q.w)
