"""controller: the receding-horizon control loop, as a lifecycle node.

configure: read parameters, build the cost and the planner settings, create
topics. activate: start the loop. deactivate: stop it and send the stop.
cleanup: drop the model and planner. Shutdown (SIGINT/SIGTERM): the last
command sent is the stop.

The loop runs either on a wall-clock timer at 1/dt (``trigger: timer``,
a real robot) or once per new state (``trigger: state``, lockstep simulation,
where the simulator waits for the answer to each state; once exploration is over and until
a model comes, states are answered at most once per dt of wall time, ``pace_while_waiting``,
so the simulation does not race through episodes of the stop). Each cycle hands the
latest state to the ROS-free ``RecedingHorizonController`` (which owns the cost
and the planner) and publishes its action on ``hw/command`` stamped with the
state's stamp, so the command says which state it answers. A watchdog on the
wall clock sends the stop when no fresh state arrives within ``state_timeout``.

Stop: the robot plug-in's (``Robot.stop``: the car brakes to a standstill and
holds it, the hand holds its measured joints), sent bypassing the rate limit and
marked as a stop (``mbrl_ros.ros.commands``). ``e_stop`` (std_msgs/Bool) true
latches it; only the service ``controller/release_e_stop`` (std_srvs/Trigger)
clears it. With ``e_stop_file`` set (the launch files: ``<run_dir>/e_stop``) the
latch outlives the process: a respawned or relaunched controller starts stopped
until the release service is called. Cycles that fail (no usable state, no valid plan) for longer than
``failure_tolerance`` report ERROR on /diagnostics with the stop held. A plan
that raises, is non-finite or leaves the bounds, a missing goal or path, or an overrun
gives the learned policy's action (if one is deployed on ``policy/model``), else the
previous plan shifted while it lasts, else the stop; causes are counted.
``planner: policy`` (``controller:=policy``) drives with the learned policy alone.

Parameters are declared once (no undeclared names, no blanket declaration of the
params file): a change at run time (``ros2 param set``) is checked as configure
checks it and refused with the reason when it cannot be taken (an unknown planner,
rate_hz, which follows from dt, a cost the core refuses, a name never declared);
``RUNTIME`` says how an accepted one applies: between cycles, or at the next
configure, which reads the values in effect (so they outlive cleanup).

The goal and context topics are the robot plug-in's (``robot`` parameter;
the car: ``goal_pose``, ``reference_path``; the hand: ``goal_fingertips``):
this node converts their messages with the plug-in and hands the values to the
controller object.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
import pathlib

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.parameter import Parameter
from rclpy.lifecycle import State, TransitionCallbackReturn
from std_msgs.msg import Bool, Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from mbrl_interfaces.msg import CommandVector, CycleTiming, ModelUpdate, StateVector
from mbrl_ros.core.allocator import keep_freed_memory
from mbrl_ros.io.config import derived
from mbrl_ros.robots import available_robots, get_robot
from mbrl_ros.robots.robot import ContextInput
from mbrl_ros.ros.commands import STOP_FRAME_ID
from mbrl_ros.ros.diagnostics import LoopStats, diagnostic_array
from mbrl_ros.ros.gc_pauses import PAUSES, settle_heap
from mbrl_ros.ros.run import EXECUTOR, SETTLE_HEAP, run_node
from mbrl_ros.ros.params import Param, declare_all, declare_sections, unflatten
from mbrl_ros.ros.qos import COMMAND, LATCHED, LATEST_STATE
from mbrl_ros.ros.stamps import stamp_to_ns

STOP_ACK_TIMEOUT = 1.0  # s a stopping controller waits for its last command (the stop) to be acknowledged

PARAMS = [
    Param("dt", 0.2, "control period (s), the robot config's '/**' dt: in trigger 'timer' mode the loop runs at 1/dt "
          "(rate_hz), and a cycle's deadline is dt", (0.001, 10.0)),
    Param("rate_hz", 0.0, "follows from dt (1/dt; 0: unset); a config that still sets it must agree", (0.0, 1000.0)),
    Param("exploration_steps", 0, "follows from random_transitions (0: unset); a config that sets it must agree",
          (0, 100_000_000)),
    Param("trigger", "timer", "'timer': plan at 1/dt on the wall clock; 'state': plan once per new state (lockstep simulation)"),
    Param("planner", "mppi", "planner: mppi | cem | ilqr | rs (random shooting) (its settings are the section of that "
          "name), or policy (the learned policy from policy/model alone); a change at run time applies at the next "
          "configure"),
    Param("policy_context", "goal", "the cost context the learned policy reads (as the trainer's policy.context)"),
    Param("state_names", ["x", "y", "yaw", "v", "steer"], "names of the state vector's entries, in model order"),
    Param("action_names", ["u_accel", "u_steer"], "names of the command vector's entries"),
    Param("action_low", [-1.0, -1.0], "lower action bounds, enforced at the output"),
    Param("action_high", [1.0, 1.0], "upper action bounds, enforced at the output"),
    Param("max_rate", [0.0], "largest change of each action per cycle at the output ([0.0]: no rate limit)"),
    Param("safe_action", [0.0, 0.0], "the stop's command for robots whose stop is a fixed command (the car and "
          "the hand compute theirs from the measured state: braking, holding the joints)"),
    Param("state_timeout", 0.5, "wall seconds without a fresh state before the stop", (0.01, 60.0)),
    Param("overrun_fallback", True, "a plan that takes longer than its period (dt) is replaced by the previous "
          "plan's next step, as a robot needs; false: the late plan is used, for a lockstep simulation whose world "
          "waits for it (model comparisons that must not depend on the machine's load)"),
    Param("failure_tolerance", 0.5, "seconds of failed cycles in a row (no usable state or plan) before the "
          "controller reports ERROR, with the stop held until a cycle succeeds", (0.0, 3600.0)),
    Param("explore_without_model", True, "drive randomly (within limits) until the first model arrives, to collect data"),
    Param("random_transitions", 0, "exploration budget, the robot config's '/**' random_transitions: most random "
          "actions before the first model (0: no limit); then the safe command until a model arrives", (0, 100_000_000)),
    Param("pace_while_waiting", True, "trigger 'state' (lockstep): once exploration is over and until a model "
          "comes, answer states at most once per dt of wall time, so the simulated world does not run ahead "
          "(filling the data with the stop) while the trainer fits the first model"),
    Param("exploration_smoothing", 0.8, "low-pass factor of the exploration noise", (0.0, 0.99)),
    Param("needs_goal", True, "require a goal (the robot's goal topic) before planning; false for path tracking"),
    Param("speed_cap_margin", 0.0, "m/s; > 0: the cost's speed caps (path_tracking, speed_form cap) follow the "
          "speeds seen: each model that arrives sets them to the fastest state speed so far plus this margin, at "
          "most the configured cap (0: the configured cap always)", (0.0, 1000.0)),
    Param("seed", 0, "seed of exploration and planner sampling", (0, 2**31 - 1)),
    Param("threads", 1, "torch and BLAS threads for planning (more threads than free cores makes latency "
          "jitter)", (1, 256)),
    Param("rollouts_rate_hz", 2.0, "rate of sampled-rollout markers (0: off)", (0.0, 100.0)),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.05, 60.0)),
    Param("e_stop_file", "", "file that keeps an engaged e-stop across restarts (a respawn after a crash, a new "
          "launch): written when the e-stop engages, removed by the release service ('': kept in memory only)",
          read_only=True),
    Param("max_model_bytes", 64 << 20, "largest model (bytes of weights) taken from dynamics/model", (1, 2**31 - 1)),
]
# How a change at run time (`ros2 param set`) applies: "live" between cycles; "refused: why"; any other
# parameter is checked as configure checks it and applied at the next configure (deactivate, cleanup,
# configure, activate), which keeps it. Read-only ones (robot, autostart) are refused by rclpy.
RUNTIME = {
    "state_timeout": "live", "failure_tolerance": "live", "rollouts_rate_hz": "live", "overrun_fallback": "live",
    "dt": "refused: the robot config's control period, shared by every node and the model; restart the stack",
    "rate_hz": "refused: it follows from dt (1/dt), the robot config's control period",
    "exploration_steps": "refused: it follows from random_transitions (set that; applied at the next configure)",
}
# Parameters the controller does not read: rclpy's use_sim_time (its time source applies it) and run_node's
# executor and settle_heap (declared once the node is built, read-only; the cycle reads settle_heap).
NOT_OURS = {"use_sim_time", EXECUTOR.name, SETTLE_HEAP.name}


def limit_blas_threads(threads: int) -> int:
    """Limit the BLAS libraries loaded in this process (numpy's and scipy's OpenBLAS: iLQR's numpy models and
    solves) to ``threads``, as torch.set_num_threads does for torch; -> the most any of them now uses (0: none
    loaded). OpenBLAS otherwise starts a thread per core and spins them on small products: a 10-iteration iLQR
    solve on the hand's prior took 900 ms against 260 ms with one BLAS thread (loaded 2-core machine)."""
    import scipy.linalg  # noqa: F401  (its own OpenBLAS; load it before limiting, iLQR uses it)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")  # kept for the process (not used as a context)
    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=0)


FALLBACK_LOG = {"safe": "stop", "fallback": "previous plan", "fallback_policy": "policy"}  # what a cycle sent instead
MODEL_UPDATE_INTERVAL = 0.5  # s between two models taken from dynamics/model: a flood costs one check per interval


class ControllerNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("controller")
        self.core = None
        self.configure_error = ""  # why the last configure failed (on_configure)
        self.loop_timers = []
        self.last_sent = -math.inf  # time.monotonic() of the last command
        self.last_command: CommandVector | None = None  # re-sent when lockstep re-publishes the state it answered
        self.resent = 0  # such re-sends
        self.paced_state: StateVector | None = None  # a state whose answer waits for on_pace
        self.settle_after_plan = False  # a new model's first plan (it builds or compiles the step) is still to come
        fixed = declare_all(self, [
            Param("autostart", True, "configure and activate on start (false: wait for lifecycle transitions)",
                  read_only=True),
            Param("robot", "car", f"the robot plug-in (mbrl_ros.robots.<robot>: {', '.join(available_robots())}): "
                  "its goal topics and cost terms", read_only=True),
        ])
        self.autostart = fixed["autostart"]
        self.robot = get_robot(fixed["robot"], f"{self.get_fully_qualified_name()}: parameter 'robot'")
        # Declared once: configure reads the values in effect, so a change made at run time outlives
        # deactivate -> cleanup -> configure. Only these names exist: any other is refused by rclpy.
        self.param_rows = [*PARAMS, *self.robot.messages().controller_parameters]
        declare_all(self, self.param_rows)
        from mbrl_ros.core.planners import PLANNERS  # torch: imported once the node is made, not at import

        declare_sections(self, ["cost", "proposal", *PLANNERS],
                         "a section the core validates (cost terms, planner settings, the robot's proposal)")
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.add_post_set_parameters_callback(self.on_parameters_set)
        # Topics live as long as the node: messages that arrive while unconfigured are kept
        # (the latched model, goal and path) and applied at the next configure.
        self.active = False
        self.last_messages: dict[str, object] = {}
        self.command_pub = self.create_publisher(CommandVector, "hw/command", COMMAND)
        self.plan_pub = self.create_publisher(Path, "controller/plan", 1)
        self.timing_pub = self.create_publisher(CycleTiming, "controller/timing", 50)
        self.rollouts_pub = self.create_publisher(MarkerArray, "controller/rollouts", 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Latched across reconfiguration (and, with e_stop_file, restarts): only the release service clears it.
        e_stop_file = self.get_parameter("e_stop_file").value
        self.e_stop_file = pathlib.Path(e_stop_file) if e_stop_file else None
        self.e_stopped = self.e_stop_file is not None and self.e_stop_file.exists()
        if self.e_stopped:
            self.get_logger().warn(f"e-stop ENGAGED before this start (the file {self.e_stop_file} is there): "
                                   "release with the service controller/release_e_stop")
        self.create_service(Trigger, "controller/release_e_stop", self.on_release_e_stop)
        self.contexts = self.robot.messages().context_inputs()
        self.subs = [
            self.create_subscription(StateVector, "state", self.on_state, LATEST_STATE),
            *(self.create_subscription(c.message_type, c.topic, lambda msg, c=c: self.on_context(c, msg), LATCHED)
              for c in self.contexts),
            self.create_subscription(ModelUpdate, "dynamics/model", self.on_model, LATCHED),
            self.create_subscription(ModelUpdate, "policy/model", self.on_policy, LATCHED),
            self.create_subscription(Bool, "e_stop", self.on_e_stop, 10),
        ]
        from mbrl_ros.io.model_update import UpdateThrottle  # torch: imported once the node is made, not at import

        self.model_throttle = UpdateThrottle(MODEL_UPDATE_INTERVAL)
        self.policy_throttle = UpdateThrottle(MODEL_UPDATE_INTERVAL)
        self.create_timer(MODEL_UPDATE_INTERVAL, self.on_model_throttle, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # --- parameters --------------------------------------------------------------------------
    def read_parameters(self, changes: dict | None = None) -> dict:
        """The parameters in effect (with ``changes`` over them): the rows' values, the derived ones, and the
        ``cost`` and planner sections, checked as configure checks them (ValueError naming the parameter)."""
        from mbrl_ros.core.control import POLICY_CONTROLLER
        from mbrl_ros.core.planners import PLANNERS

        flat = {name: param.value for name, param in self.get_parameters_by_prefix("").items()}
        flat.update(changes or {})
        p = {row.name: flat[row.name] for row in self.param_rows}
        source = self.get_fully_qualified_name()
        # Written once in the robot's config: the rate follows from dt, the budget is random_transitions.
        p["rate_hz"] = derived(1.0 / p["dt"], p["rate_hz"] or None, "rate_hz", "dt", source)
        p["exploration_steps"] = derived(p["random_transitions"], p["exploration_steps"] or None,
                                         "exploration_steps", "random_transitions", source)
        if p["trigger"] not in ("timer", "state"):
            raise ValueError(f"{source}: parameter 'trigger' must be 'timer' or 'state', got {p['trigger']!r}")
        if p["planner"] not in PLANNERS and p["planner"] != POLICY_CONTROLLER:
            raise ValueError(f"{source}: parameter 'planner': unknown planner {p['planner']!r}; planners: "
                             f"{sorted(PLANNERS)} or {POLICY_CONTROLLER!r}")
        for prefix in ("cost", p["planner"], "proposal"):
            p[prefix] = unflatten({k[len(prefix) + 1:]: v for k, v in flat.items() if k.startswith(prefix + ".")})
        return p

    def build_core(self, p: dict):
        """The ROS-free controller for parameters ``p`` (read_parameters); ValueError/TypeError if they do not fit."""
        from mbrl_ros.core.control import RecedingHorizonController

        source = self.get_fully_qualified_name()
        return RecedingHorizonController.from_config(
            p, term_kinds=self.robot.term_kinds(), stop=self.robot.stop(p, source),
            proposal=self.robot.planner_proposal(p.get("proposal"), f"{source}: parameter 'proposal'"), source=source)

    def on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """A change at run time (``ros2 param set``) is checked as configure checks it, and refused with the
        reason when it cannot be taken. How an accepted one applies: RUNTIME (else at the next configure)."""
        params = [param for param in params if param.name not in NOT_OURS]
        if not params:
            return SetParametersResult(successful=True)
        for param in params:
            if param.name in RUNTIME and RUNTIME[param.name].startswith("refused"):
                return SetParametersResult(successful=False, reason=f"parameter '{param.name}': {RUNTIME[param.name]}")
        try:
            candidate = self.read_parameters({param.name: param.value for param in params})
            self.build_core(candidate)  # cost, stop, bounds: everything configure builds but the model
        except (ValueError, TypeError, KeyError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def on_parameters_set(self, params: list[Parameter]) -> None:
        """Accepted changes: the live ones now (callbacks run between cycles), the rest at the next configure."""
        for param in params:
            if param.name in NOT_OURS:
                continue
            how = RUNTIME.get(param.name, "at the next configure")
            if how == "live" and self.core is not None:
                self.p[param.name] = param.value
                if param.name == "failure_tolerance":
                    self.core.failure_tolerance = param.value
            self.get_logger().info(f"parameter '{param.name}' set to {param.value!r}: "
                                   f"{'applied now' if how == 'live' else 'applied at the next configure'}")

    def start(self) -> None:
        """Autostart: configure and activate. A configure that fails at start ends the process (run_node: exit 1
        with the reason), as a bad parameter does, rather than leaving an unconfigured controller that commands
        nothing and says nothing more (a missing package once stalled a demo for 7 minutes that way)."""
        if self.autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ValueError(f"configure failed: {self.configure_error}")
            self.trigger_activate()

    # --- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.p = self.read_parameters()
            import torch

            torch.set_num_threads(self.p["threads"])
            self.state_dim = len(self.p["state_names"])
            self.action_dim = len(self.p["action_low"])
            # The cost is built now, so that a bad cost section fails configure, not the first cycle.
            self.core = self.build_core(self.p)
            self.blas_threads = limit_blas_threads(self.p["threads"])
            if self.e_stopped:
                self.core.engage_e_stop()
        except (ValueError, TypeError) as err:
            self.configure_error = str(err)
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        except Exception as err:  # noqa: BLE001 - rclpy's lifecycle swallows it without a word (its own TODO)
            self.configure_error = f"{type(err).__name__}: {err}"
            self.get_logger().error(f"configure failed: {self.configure_error}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        self.model_version = 0
        self.model_kind = ""
        self.model_checksum = ""
        self.policy_version, self.policy_checksum = 0, ""
        self.latest: StateVector | None = None
        self.latest_received = 0.0
        self.last_answered_ns = -1
        self.stats = LoopStats()
        # From a state's arrival to its command's publication (planning included): with the estimator's
        # latency (odometry stamp -> state published), where the path's time goes (`mbrl-ros bench latency`).
        self.state_to_command = LoopStats()
        self.modes = {"plan": 0, "policy": 0, "explore": 0, "fallback": 0, "fallback_policy": 0, "safe": 0}
        self.last_reason = ""
        self.last_rollouts = 0.0
        self.active = False
        for context in self.contexts:
            if context.topic in self.last_messages:
                self.on_context(context, self.last_messages[context.topic])
        if "dynamics/model" in self.last_messages:
            self.swap_model(self.last_messages["dynamics/model"])
        if "policy/model" in self.last_messages:
            self.swap_policy(self.last_messages["policy/model"])
        self.get_logger().info(f"configured: planner {self.p['planner']}, trigger {self.p['trigger']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.active = True
        period = 1.0 / self.p["rate_hz"]
        # The loop, watchdog and diagnostics run on the steady clock: under sim time a stalled
        # simulation stops the ROS clock, which is exactly when the watchdog must still fire.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.p["trigger"] == "timer":
            self.loop_timers.append(self.create_timer(period, self.on_timer, clock=steady))
        else:
            self.loop_timers.append(self.create_timer(min(period, self.p["state_timeout"] / 2), self.watchdog,
                                                      clock=steady))
            self.loop_timers.append(self.create_timer(period, self.on_pace, clock=steady))
        self.loop_timers.append(self.create_timer(self.p["diagnostics_period"], self.publish_diagnostics,
                                                  clock=steady))
        self.get_logger().info("active")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.active = False
        for timer in self.loop_timers:
            self.destroy_timer(timer)
        self.loop_timers = []
        self.send_stop()
        self.get_logger().info("inactive: stop sent")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.core = None
        self.get_logger().info("cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Before the process ends (SIGINT/SIGTERM, run_node): an active controller's last command is the stop."""
        if self.active and self.core is not None:
            self.active = False
            self.send_stop()
            # Delivered before the process goes: a reliable subscriber (the driver) has acknowledged it.
            self.command_pub.wait_for_all_acked(Duration(seconds=STOP_ACK_TIMEOUT))

    def send_stop(self) -> None:
        state, _problem = self.measured_state()
        self.send(self.core.stop_command(state), stamp=self.answered_stamp(), stop=True)

    # --- inputs ------------------------------------------------------------------------------
    def on_state(self, msg: StateVector) -> None:
        if self.core is None:
            return
        self.latest = msg
        self.latest_received = time.monotonic()
        if self.active and self.p["trigger"] == "state":
            self.cycle()

    def on_context(self, context: ContextInput, msg) -> None:
        """A goal or context message (latched): converted by the robot plug-in, handed to the controller."""
        self.last_messages[context.topic] = msg
        if self.core is None:
            return
        try:
            self.core.set_context(context.context, context.convert(msg), goal=context.goal)
        except (ValueError, TypeError) as err:
            self.stats.reject(f"{context.topic}: {err}")

    def on_e_stop(self, msg: Bool) -> None:
        """true latches the e-stop; false does not release it (only the release service does)."""
        if not msg.data:
            if self.e_stopped:
                self.get_logger().warn("e_stop false ignored: the e-stop stays engaged until "
                                       "the service controller/release_e_stop is called")
            return
        if not self.e_stopped:
            self.get_logger().warn("e-stop ENGAGED (latched; release with the service controller/release_e_stop)")
            self.keep_e_stop(True)
        self.e_stopped = True
        if self.core is not None:
            self.core.engage_e_stop()
            if self.active:
                self.send_stop()  # now, not at the next cycle

    def on_release_e_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was = self.e_stopped
        self.e_stopped = False
        self.keep_e_stop(False)
        if self.core is not None:
            self.core.release_e_stop()  # the planner's warm start is reset
        response.success = True
        response.message = "e-stop released" if was else "e-stop was not engaged"
        self.get_logger().warn(response.message)
        return response

    def keep_e_stop(self, engaged: bool) -> None:
        """Write (engaged) or remove the e_stop_file. A file that cannot be written leaves the e-stop engaged in
        this process only, said in the log; one that cannot be removed keeps the next start stopped (safe)."""
        if self.e_stop_file is None:
            return
        try:
            if engaged:
                from mbrl_ros.io.checkpoint import write_atomically

                write_atomically(self.e_stop_file, f"engaged at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
            else:
                self.e_stop_file.unlink(missing_ok=True)
        except OSError as err:
            self.get_logger().error(f"e_stop_file {self.e_stop_file}: cannot {'write' if engaged else 'remove'} "
                                    f"it ({err.strerror}): the e-stop is "
                                    f"{'not kept across a restart' if engaged else 'engaged again at the next start'}")

    def on_model(self, msg: ModelUpdate) -> None:
        self.last_messages["dynamics/model"] = msg
        if self.core is not None and self.model_throttle.offer(msg, time.monotonic()) is not None:
            self.swap_model(msg)

    def on_model_throttle(self) -> None:
        msg = self.model_throttle.due(time.monotonic())
        if msg is not None and self.core is not None:
            self.swap_model(msg)
        msg = self.policy_throttle.due(time.monotonic())
        if msg is not None and self.core is not None:
            self.swap_policy(msg)

    def on_policy(self, msg: ModelUpdate) -> None:
        self.last_messages["policy/model"] = msg
        if self.core is not None and self.policy_throttle.offer(msg, time.monotonic()) is not None:
            self.swap_policy(msg)

    def swap_policy(self, msg: ModelUpdate) -> None:
        """A learned policy, checked completely (model_update.validate, a policy of this robot's sizes) before
        it replaces the one in use between cycles; a refused one is counted and reported."""
        from mbrl_ros.io.model_update import POLICY_KIND, ModelUpdateError, validate

        if msg.checksum == self.policy_checksum:
            return
        try:
            checked = validate(msg, self.state_dim, self.action_dim, self.p["max_model_bytes"],
                               source=f"policy/model v{msg.version}", kinds=(POLICY_KIND,))
        except ModelUpdateError as err:
            self.stats.reject(str(err))
            self.get_logger().error(f"policy v{msg.version} refused, keeping v{self.policy_version}: {err}")
            return
        self.core.set_policy(checked.model)
        self.policy_version, self.policy_checksum = msg.version, msg.checksum
        self.get_logger().info(f"policy v{msg.version} received, checksum {msg.checksum[:12]}")

    def swap_model(self, msg: ModelUpdate) -> None:
        """Checked completely (model_update.validate) before it replaces the model; a refused one is
        counted and reported, and the controller keeps the model it has."""
        from mbrl_ros.io.model_update import DYNAMICS_KINDS, ModelUpdateError, validate

        if msg.checksum == self.model_checksum:  # a respawned dynamics_server serving the same model again
            self.get_logger().info(f"model v{msg.version}: the model in use already ({msg.checksum[:12]})")
            return
        try:
            checked = validate(msg, self.state_dim, self.action_dim, self.p["max_model_bytes"],
                               source=f"dynamics/model v{msg.version}", kinds=DYNAMICS_KINDS)
            self.core.set_model(checked.model)  # the first builds the planner; later ones swap in between cycles
        except (ModelUpdateError, ValueError) as err:  # ValueError: the planner's settings do not fit this model
            self.stats.reject(str(err))
            self.get_logger().error(f"model v{msg.version} refused, keeping v{self.model_version}: {err}")
            return
        self.model_version, self.model_kind, self.model_checksum = msg.version, msg.model_kind, msg.checksum
        self.settle_after_plan = True
        caps = "".join(f"; {name} speed cap {cap:.2f} m/s (fastest seen {self.core.fastest_seen or 0.0:.2f})"
                       for name, cap in self.core.speed_caps.items())
        self.get_logger().info(f"model v{msg.version} ({msg.model_kind}) received, checksum {msg.checksum[:12]}{caps}")

    # --- the loop ----------------------------------------------------------------------------
    def on_timer(self) -> None:
        if self.active:
            self.cycle()

    def on_pace(self) -> None:
        """State-triggered mode: answers the state held back while waiting for a model (``paced``)."""
        if self.active and self.paced_state is not None:
            self.paced_state = None
            self.cycle()  # answers the latest state unless it was answered already

    def paced(self) -> bool:
        """Hold the latest state's answer back (to ``on_pace``) when lockstep waits for a model and the
        last command went out less than dt of wall time ago (``pace_while_waiting``)."""
        if not (self.p["trigger"] == "state" and self.p["pace_while_waiting"] and self.core.waiting_for_model):
            return False
        if time.monotonic() - self.last_sent < 1.0 / self.p["rate_hz"]:
            self.paced_state = self.latest
            return True
        return False

    def watchdog(self) -> None:
        """State-triggered mode: nothing drives the loop when states stop, so this does."""
        if self.active and time.monotonic() - self.latest_received > self.p["state_timeout"]:
            self.cycle()

    def measured_state(self) -> tuple[np.ndarray | None, str]:
        """The latest state's values if it is fresh and usable, else None and why."""
        if self.latest is None:
            return None, "no state received yet"
        age = time.monotonic() - self.latest_received
        if age > self.p["state_timeout"]:
            return None, f"state is stale ({age:.2f} s old, timeout {self.p['state_timeout']} s)"
        if not self.latest.valid:
            return None, f"state invalid: {self.latest.reason}"
        if len(self.latest.values) != self.state_dim:
            return None, f"state has {len(self.latest.values)} values, expected {self.state_dim}"
        return np.asarray(self.latest.values, dtype=float), ""

    def cycle(self) -> None:
        state, problem = self.measured_state()
        stamp = self.answered_stamp()
        if not problem:
            stamp_ns = stamp_to_ns(self.latest.header.stamp)
            if stamp_ns <= self.last_answered_ns:
                # Answered already: a re-published duplicate. Lockstep re-publishes a state while its answer
                # has not arrived (lost before discovery matched the simulator's subscription): answer it
                # again with the same command, or the simulator and this loop wait on each other for ever.
                if self.p["trigger"] == "state" and stamp_ns == self.last_answered_ns and self.last_command is not None:
                    self.command_pub.publish(self.last_command)
                    self.resent += 1
                return
            if self.paced():
                return
            self.last_answered_ns = stamp_ns
            stamp = self.latest.header.stamp
        deadline_s = 1.0 / self.p["rate_hz"] if self.p["overrun_fallback"] else float("inf")
        out = self.core.step(state, problem, deadline_s=deadline_s)
        self.send(out.action, stamp, stop=out.mode == "safe")
        if not problem:
            self.state_to_command.record((self.last_sent - self.latest_received) * 1e3)
        self.modes[out.mode] += 1
        if out.reason and out.mode in FALLBACK_LOG and out.reason != self.last_reason:
            self.get_logger().warn(f"{FALLBACK_LOG[out.mode]}: {out.reason}")
        self.last_reason = out.reason
        deadline_ms = 1e3 / self.p["rate_hz"]
        self.stats.record(out.compute_ms, deadline_ms=deadline_ms)
        self.timing_pub.publish(CycleTiming(header=self.command_header(stamp), mode=out.mode,
                                            compute_ms=float(out.compute_ms), deadline_ms=deadline_ms,
                                            model_version=int(self.model_version)))
        if out.plan is not None:
            self.publish_plan(out.plan, stamp)
            if self.settle_after_plan:  # the command is out; what building the step left is frozen (gc_pauses)
                self.settle_after_plan = False
                if self.get_parameter(SETTLE_HEAP.name).value:
                    self.get_logger().info(f"model v{self.model_version}'s first plan: heap settled in "
                                           f"{settle_heap():.0f} ms")
                else:
                    PAUSES.reset()  # counted from the same point either way (bench latency --settle-heap compares)

    def answered_stamp(self):
        """The stamp a command carries: the latest state's, so a lockstep simulator never takes
        a watchdog's safe command as the answer to a state it has not sent yet."""
        return None if self.latest is None else self.latest.header.stamp

    def command_header(self, stamp) -> Header:
        return Header(stamp=stamp if stamp is not None else self.get_clock().now().to_msg())

    def send(self, action: np.ndarray, stamp, stop: bool = False) -> None:
        msg = CommandVector()
        msg.header = self.command_header(stamp)
        if stop:
            msg.header.frame_id = STOP_FRAME_ID
        msg.names = list(self.p["action_names"])
        msg.values = [float(a) for a in action]
        self.command_pub.publish(msg)
        self.last_command = msg
        self.last_sent = time.monotonic()

    def publish_plan(self, plan, stamp) -> None:
        states = plan.predicted_states.detach().cpu().numpy()
        path = Path()
        path.header.stamp = stamp
        path.header.frame_id = "map"
        for x in states:
            pose = PoseStamped()
            pose.header = path.header
            pose.pose.position.x, pose.pose.position.y = float(x[0]), float(x[1])
            pose.pose.orientation.w = 1.0
            path.poses.append(pose)
        self.plan_pub.publish(path)
        now = time.monotonic()
        rate = self.p["rollouts_rate_hz"]
        if plan.rollouts is None or rate <= 0 or now - self.last_rollouts < 1.0 / rate:
            return
        self.last_rollouts = now
        markers = MarkerArray()
        for i, rollout in enumerate(plan.rollouts.detach().cpu().numpy()):
            marker = Marker(type=Marker.LINE_STRIP, action=Marker.ADD, id=i, ns="rollouts")
            marker.header = path.header
            marker.scale.x = 0.05
            marker.color.r, marker.color.g, marker.color.b, marker.color.a = 0.2, 0.4, 1.0, 0.3
            marker.points = [_point(x) for x in rollout]
            markers.markers.append(marker)
        self.rollouts_pub.publish(markers)

    def compile_values(self) -> dict[str, str]:
        """Whether the planner plans compiled, how long the first plan took, and (compiled) the compile
        cache's hits and misses in this process: a start that compiles misses, a later one hits."""
        values = {"planner_compiled": str(bool(getattr(self.core.planner, "compiled", False))),
                  "first_plan_ms": "" if self.core.first_plan_ms is None else f"{self.core.first_plan_ms:.1f}"}
        if values["planner_compiled"] == "True":
            from mbrl_ros.core.compile_cache import compile_cache_counters

            values.update({f"compile_{name}": str(n) for name, n in compile_cache_counters().items()})
        return values

    def publish_diagnostics(self) -> None:
        from mbrl_ros.core.control import FAULTS

        values = self.stats.as_key_values()
        values.update(zip(("state_to_command_p50_ms", "state_to_command_p99_ms"),
                          (f"{v:.3f}" for v in self.state_to_command.percentiles())))
        values.update({f"cycles_{mode}": str(n) for mode, n in self.modes.items()})
        values["commands_resent"] = str(self.resent)
        values.update({f"faults_{cause}": str(self.core.faults[cause]) for cause in FAULTS})
        values.update({"planner": self.p["planner"], "blas_threads": str(self.blas_threads),
                       "model_version": str(self.model_version),
                       "model_kind": self.model_kind,
                       "last_reason": self.last_reason, "last_fault": self.core.last_fault,
                       "e_stop": str(self.e_stopped), "error": str(self.core.error)})
        values.update({"policy_version": str(self.policy_version), "policy_checksum": self.policy_checksum[:12]})
        values.update(self.compile_values())
        level = DiagnosticStatus.WARN if self.last_reason and (
            self.modes["safe"] or self.modes["fallback"] or self.modes["fallback_policy"]) \
            else DiagnosticStatus.OK
        message = self.last_reason or "ok"
        if self.core.error:
            level, message = DiagnosticStatus.ERROR, f"ERROR, stop held: {self.last_reason}"
        self.diag_pub.publish(diagnostic_array(self, f"{self.get_fully_qualified_name()}", values, level, message))


def _point(x):
    from geometry_msgs.msg import Point

    return Point(x=float(x[0]), y=float(x[1]), z=0.0)


def main(args: list[str] | None = None) -> int:
    keep_freed_memory()  # planning steps reuse their freed memory instead of faulting it in again
    return run_node(ControllerNode, "controller", args)


if __name__ == "__main__":
    sys.exit(main())
