"""What every simulated hardware driver shares: lockstep or real-time stepping, episodes, reports.

A driver subclasses ``SimDriverNode`` and provides the simulator (``reset(seed)``
and ``step(action)``, whose result has ``done`` and optionally ``success`` and
``crashed``), what to publish (``publish_state``, ``publish_task``) and what an
episode's report adds (``episode_result``). The base does the rest, the same
way for every robot:

- ``lockstep: true``: the node owns ``/clock``. It publishes a state, waits for
  the command that answers it (header stamp >= the state's), steps by ``dt``
  and advances the clock. While waiting it re-publishes the state, since the
  first messages after discovery can be lost. With ``wait_for_recorder`` (the launch files set it in
  lockstep) it steps only while the recorder (the data_logger, ``<recorder>/recording``) has a matched
  publisher on every topic it records and has received a command: until then the state is published and
  re-published as usual, its answers are held, and a warning says what is missing; a recorder that does not
  come within ``recorder_timeout`` wall seconds ends the node (exit 1) with that reason. A lockstep
  simulator steps as fast as commands come: under load it once drove 300 random transitions in 0.85 s,
  before the data_logger had matched ``hw/command``, so nothing of the exploration was recorded.
- ``lockstep: false``: a wall-clock timer steps at ``1/dt`` with the latest
  command held (zero-order hold), like a real robot; when that command is the
  controller's stop, the robot's ``hold_stop`` instead (the car brakes on to a standstill).
  In lockstep a step answered by the stop takes the robot's ``lockstep_stop`` of it (the car's brakes
  from its own speed, as the real car's bridge commands speed zero on the stop).
- Each finished episode is reported once on ``sim/episodes`` (diagnostic_msgs/
  DiagnosticArray with one status, named ``episode <k>``; latched, so a late
  subscriber gets the latest; the data_logger records them all) with the stamps it spans
  (states stamped in [start_stamp_ns, end_stamp_ns) belong to it); the next
  starts with the next seed, after ``reset_gap`` seconds of simulated time so
  that the data path splits episodes at the gap. A simulator whose steps say
  nothing about success succeeds by reaching the time limit without a crash.
- ``sim/start_evaluation`` (std_srvs/Trigger): the episodes from the next one on (after
  ``evaluation_delay`` more: a demo's learning episodes) take the seeds
  ``evaluation_seed``, ``evaluation_seed + 1``, ... (the answer's message names that episode's number), so
  a run's evaluated episodes have the same starts and goals whenever its model arrived (the demo calls it
  once the first model, and policy, reached the controller; before, episode k took seed + k, and the
  evaluated seeds moved with the trainer's wall time).
- ``hold_learning_episodes`` (lockstep): after that call, each episode from the next one up to the first
  evaluated one (the learning episodes and the first evaluated episode) holds its first step, its state
  published and re-published as under ``wait_for_recorder``, until ``sim/release`` (std_srvs/Trigger) is
  called or ``hold_timeout`` wall seconds pass. The demo releases it once the trainer has retrained on the
  episodes before and the controller has the model (``mbrl_ros.demo.run``): each learning episode drives the
  latest model. Without it a race's learning episodes ended in the first turn, 3-7 s of simulated time, and
  the next one started before the trainer had read them.
"""

from __future__ import annotations

import math
import time

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock as WallClock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from mbrl_interfaces.msg import CommandVector
from mbrl_ros.ros.commands import is_stop
from mbrl_ros.ros.params import Param, declare_all
from mbrl_ros.ros.qos import COMMAND, EPISODE_REPORTS, LATCHED
from mbrl_ros.ros.run import NodeFatalError
from mbrl_ros.ros.stamps import ns_to_stamp, stamp_to_ns

SIM_PARAMS = [
    Param("lockstep", True, "step when a command arrives and publish /clock (true), or run in real time (false)",
          read_only=True),
    Param("seed", 0, "seed of the first episode; episode k uses seed + k (until sim/start_evaluation)",
          (0, 2**31 - 1), read_only=True),
    Param("evaluation_seed", 1000, "seed of the first episode after a call of sim/start_evaluation, then + 1 each",
          (0, 2**31 - 1), read_only=True),
    Param("evaluation_delay", 0, "episodes after a call of sim/start_evaluation that keep their ordinary seeds "
          "before the evaluation seeds start (a demo's learning episodes)", (0, 1_000_000), read_only=True),
    Param("episodes", 0, "stop after this many episodes (0: run forever)", (0, 1_000_000)),
    Param("max_episode_steps", 0, "time limit of an episode, in control steps (0: the task's own)", (0, 100_000)),
    Param("frame_id", "map", "frame of the published poses"),
    Param("republish_period", 0.2, "lockstep: wall seconds between re-publishing an unanswered state", (0.01, 5.0)),
    Param("dt", 0.0, "the robot config's control period ('/**' dt): must be the simulator's step (0: not checked)",
          (0.0, 10.0), read_only=True),
    Param("wait_for_recorder", False, "lockstep: step only while the recorder has a matched publisher on every "
          "topic it records and has received a command (its <recorder>/recording); real time: ignored",
          read_only=True),
    Param("recorder", "data_logger", "the recorder's node name (relative: in this node's namespace)", read_only=True),
    Param("recorder_timeout", 120.0, "wait_for_recorder: wall seconds the simulation may be held for the recorder "
          "before the node gives up (exit 1)", (1.0, 86400.0), read_only=True),
    Param("hold_learning_episodes", False, "lockstep, after sim/start_evaluation: hold the first step of each "
          "episode up to the first evaluated one until sim/release (the demo releases it once the trainer has "
          "retrained on the episodes before); real time: ignored", read_only=True),
    Param("hold_timeout", 600.0, "hold_learning_episodes: wall seconds a held episode waits for sim/release "
          "before it starts anyway (with a warning)", (0.1, 86400.0), read_only=True),
]

RECORDER_CHECK_PERIOD = 0.1  # wall seconds between looks at the recorder (its report also counts on arrival)


class SimDriverNode(Node):
    """Base of the simulated drivers; see the module docstring."""

    reset_gap = 0.0  # seconds of simulated time between episodes

    def __init__(self, name: str, params: list[Param]) -> None:
        super().__init__(name)
        self.p = declare_all(self, [*params, *SIM_PARAMS])
        self.sim = self.make_sim()
        self.dt = float(self.sim.dt)
        if self.p["dt"] and not math.isclose(self.p["dt"], self.dt, rel_tol=1e-9):
            raise ValueError(f"{self.get_fully_qualified_name()}: parameter 'dt' ({self.p['dt']} s, the robot "
                             f"config's control period) is not the simulator's step ({self.dt} s)")
        self.max_steps = self.p["max_episode_steps"] or self.default_episode_steps()
        self.lockstep = bool(self.p["lockstep"])
        self.episode_pub = self.create_publisher(DiagnosticArray, "sim/episodes", EPISODE_REPORTS)
        self.create_subscription(CommandVector, "hw/command", self.on_command, COMMAND)
        if self.lockstep:
            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.create_service(Trigger, "sim/start_evaluation", self.on_start_evaluation)
        self.create_service(Trigger, "sim/release", self.on_release)
        self.held: float | None = None  # hold_learning_episodes: when (monotonic) the held episode was held
        self.recorder_ready = True  # no recorder to wait for: step on every command
        if self.lockstep and self.p["wait_for_recorder"]:
            self.recorder_ready = False
            self.recording_topic = self.resolve_topic_name(f"{self.p['recorder']}/recording")
            self.command_topic = self.resolve_topic_name("hw/command")
            self.recording: DiagnosticStatus | None = None
            self.held_since = time.monotonic()
            self.create_subscription(DiagnosticArray, self.recording_topic, self.on_recording, LATCHED)
            self.create_timer(RECORDER_CHECK_PERIOD, self.check_recorder,
                              clock=WallClock(clock_type=ClockType.STEADY_TIME))
        self.sim_time_ns = 0
        self.episode = 0
        self.evaluation_from: int | None = None  # the first episode of the fixed evaluation seeds
        self.finished = False

    def start(self) -> None:
        """Called by run_node once the subclass has made its publishers."""
        if not self.recorder_ready:
            self.get_logger().info(f"lockstep: holding the first step until {self.p['recorder']} records every "
                                   f"topic and has a command ({self.recording_topic})")
        self.start_episode()
        if self.lockstep:
            self.create_timer(self.p["republish_period"], self.publish_current)
        else:
            self.create_timer(self.dt, self.step_real_time)

    # --- what a driver provides ------------------------------------------
    def make_sim(self):
        raise NotImplementedError

    def default_episode_steps(self) -> int:
        raise NotImplementedError

    def publish_state(self, stamp: Time) -> None:
        raise NotImplementedError

    def reset_sim(self, evaluated: bool):
        """Start the episode on ``self.seed`` (``evaluated``: on the evaluation seeds); -> its first state."""
        return self.sim.reset(seed=self.seed)

    def publish_task(self, stamp: Time) -> None:
        """The goal of the episode (latched topics); called at each episode start."""

    def episode_result(self) -> dict:
        """What an episode's report adds to episode, seed, success, crashed, steps and stamps."""
        return {}

    def observe_step(self, step) -> None:
        """Called with every simulator step (to accumulate what ``episode_result`` reports)."""

    # --- episodes --------------------------------------------------------
    def start_episode(self) -> None:
        if self.episode and self.lockstep:
            self.sim_time_ns += int(round(self.reset_gap * 1e9))
        if self.evaluation_from is not None and self.episode >= self.evaluation_from:
            self.seed = self.p["evaluation_seed"] + self.episode - self.evaluation_from
        else:
            self.seed = self.p["seed"] + self.episode
        self.state = self.reset_sim(evaluated=self.evaluation_from is not None and self.episode >= self.evaluation_from)
        self.steps = 0
        self.episode_start_ns = self.stamp_ns()
        if self.lockstep and self.p["hold_learning_episodes"] and self.evaluation_from is not None \
                and self.evaluation_from - self.p["evaluation_delay"] <= self.episode <= self.evaluation_from:
            self.held = time.monotonic()
            self.get_logger().info(f"episode {self.episode}: held until sim/release")
            self.hold_timer = self.create_timer(self.p["hold_timeout"], self.on_hold_timeout,
                                                clock=WallClock(clock_type=ClockType.STEADY_TIME))
        self.publish_task(self.stamp())
        self.publish_current()

    def finish_episode(self, success: bool, crashed: bool) -> None:
        result = {"episode": self.episode, "seed": self.seed, "success": success, "crashed": crashed,
                  "steps": self.steps, "start_stamp_ns": self.episode_start_ns, "end_stamp_ns": self.stamp_ns(),
                  **self.episode_result()}
        self.get_logger().info(f"episode {self.episode} done: {result}")
        array = DiagnosticArray()
        array.header.stamp = self.stamp()
        # This episode only: re-sending every earlier one made the traffic grow with the run's length.
        array.status = [DiagnosticStatus(
            level=DiagnosticStatus.OK if success else DiagnosticStatus.WARN,
            name=f"episode {self.episode}",
            message="success" if success else ("crashed" if crashed else "time limit"),
            values=[KeyValue(key=k, value=str(v)) for k, v in result.items()],
        )]
        self.episode_pub.publish(array)
        self.episode += 1
        if self.p["episodes"] and self.episode >= self.p["episodes"]:
            self.finished = True
            return
        self.start_episode()

    def on_start_evaluation(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        # Runs in this node's executor, between steps: the episode running now keeps its seed.
        if self.evaluation_from is None:
            self.evaluation_from = self.episode + 1 + self.p["evaluation_delay"]
        response.success = True
        response.message = (f"episode {self.evaluation_from} on: seeds {self.p['evaluation_seed']}, "
                            f"{self.p['evaluation_seed'] + 1}, ...")
        self.get_logger().info(f"sim/start_evaluation: {response.message}")
        return response

    def on_release(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success = self.release()
        response.message = (f"released episode {self.episode}" if response.success else
                            f"episode {self.episode} is not held")
        return response

    def on_hold_timeout(self) -> None:
        if self.held is not None:
            self.get_logger().warning(f"episode {self.episode}: held {self.p['hold_timeout']:.0f} s (hold_timeout) "
                                      "without sim/release: starting it")
        self.release()

    def release(self) -> bool:
        """Let the held episode step (False: none is held)."""
        if self.held is None:
            return False
        self.get_logger().info(f"episode {self.episode}: released after {time.monotonic() - self.held:.1f} s")
        self.held = None
        self.destroy_timer(self.hold_timer)
        self.publish_current()  # its answer is the first step
        return True

    # --- the recorder (wait_for_recorder) ------------------------------------
    def on_recording(self, msg: DiagnosticArray) -> None:
        if msg.status:
            self.recording = msg.status[0]
            self.check_recorder()

    def recorder_missing(self) -> str:
        """Why the simulation must not step now ('' once the recorder records everything and has a command)."""
        recorder = self.p["recorder"]
        if self.count_publishers(self.recording_topic) == 0:
            self.recording = None  # a recorder that comes back reports afresh: not its predecessor's report
            return f"no {recorder} ({self.recording_topic} has no publisher)"
        if self.recording is None:
            return f"no report from {recorder} yet on {self.recording_topic}"
        if self.recording.level != DiagnosticStatus.OK:
            return f"{recorder}: {self.recording.message}"
        values = {kv.key: kv.value for kv in self.recording.values}
        if values.get(f"received {self.command_topic}") == "False":
            return f"{recorder} has no message on {self.command_topic} yet"
        return ""

    def check_recorder(self) -> None:
        missing = self.recorder_missing()
        if not missing:
            if not self.recorder_ready:
                self.recorder_ready = True
                self.get_logger().info(f"lockstep: {self.p['recorder']} records every topic: stepping (held "
                                       f"{time.monotonic() - self.held_since:.1f} s)")
                self.publish_current()  # the held state again: its answer is the next step
            return
        if self.recorder_ready:  # it was recording, now it is not (the logger died, a publisher went)
            self.recorder_ready = False
            self.held_since = time.monotonic()
            self.get_logger().warning(f"lockstep: holding the simulation: {missing}")
        held = time.monotonic() - self.held_since
        if held > self.p["recorder_timeout"]:
            raise NodeFatalError(f"lockstep: held the simulation {held:.0f} s (recorder_timeout) waiting for the "
                                 f"recorder: {missing}; start the {self.p['recorder']} (role:=workstation where the "
                                 "stack is split) or set wait_for_recorder false")
        self.get_logger().warning(f"lockstep: simulation held for {held:.0f} s: {missing}",
                                  throttle_duration_sec=5.0)

    # --- stepping ----------------------------------------------------------
    def on_command(self, msg: CommandVector) -> None:
        if self.finished:
            return
        values = np.asarray(msg.values, dtype=float)
        if values.shape != (self.sim.action_dim,) or not np.all(np.isfinite(values)):
            self.get_logger().warning(f"hw/command: expected {self.sim.action_dim} finite values, got "
                                      f"{list(msg.values)}; ignored", throttle_duration_sec=5.0)
            return
        self.last_action = values
        self.holding_stop = is_stop(msg)
        if not self.lockstep:
            return
        if stamp_to_ns(msg.header.stamp) < self.sim_time_ns:
            return  # answers an older state; the controller will answer the current one
        if not self.recorder_ready or self.held is not None:
            return  # held (check_recorder, sim/release): the re-published state brings this answer again
        self.advance(self.lockstep_stop(values) if self.holding_stop else values)

    def step_real_time(self) -> None:
        if not self.finished:
            action = getattr(self, "last_action", np.zeros(self.sim.action_dim))
            self.advance(self.hold_stop(action) if getattr(self, "holding_stop", False) else action)

    def hold_stop(self, stop: np.ndarray) -> np.ndarray:
        """Real time, the last command was the controller's stop (``mbrl_ros.ros.commands``) and nothing
        followed (deactivated, ended): the action of each step meanwhile. Default: that command (the hand
        holds its joints); a robot whose stop depends on its motion (the car brakes) overrides it."""
        return stop

    def lockstep_stop(self, stop: np.ndarray) -> np.ndarray:
        """Lockstep, the step a command marked as the controller's stop answers: its action. Default: the stop
        as sent, computed from the state it answers; a robot whose stop can need the simulator's own measurement
        (the car: braking from a speed the controller may never have had) overrides it."""
        return stop

    def advance(self, action: np.ndarray) -> None:
        step = self.sim.step(action)
        self.state = step.state
        self.steps += 1
        self.observe_step(step)
        self.sim_time_ns += int(round(self.dt * 1e9))
        crashed = bool(getattr(step, "crashed", False))
        over = step.done or self.steps >= self.max_steps
        success = bool(step.success) if hasattr(step, "success") else (over and not crashed)
        if crashed or over:
            self.finish_episode(success, crashed)
        else:
            self.publish_current()

    # --- publishing --------------------------------------------------------
    def stamp_ns(self) -> int:
        return stamp_to_ns(self.stamp())

    def stamp(self) -> Time:
        if self.lockstep:
            return ns_to_stamp(self.sim_time_ns)
        return self.get_clock().now().to_msg()

    def publish_current(self) -> None:
        if self.finished:
            return
        stamp = self.stamp()
        if self.lockstep:
            self.clock_pub.publish(Clock(clock=stamp))
        self.publish_state(stamp)
