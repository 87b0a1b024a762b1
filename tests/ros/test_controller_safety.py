"""The controller as a real process over DDS: stop means stop, nothing kills the loop, and parameters
changed at run time are checked as at startup.

A stand-in (controller_peers.py) plays the estimator, the e-stop button, the dynamics_server and a
lifecycle client, and reports every hw/command and the controller's /diagnostics. The controller runs
on its timer (trigger: timer, 5 Hz) with the car's config, exploring at random until a model arrives.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mbrl_ros.ros_env import REPO_ROOT

PEERS = Path(__file__).with_name("controller_peers.py")
CRUISING = [0.0, 0.0, 0.0, 3.0, 0.0]  # x, y, yaw, v = 3 m/s, steer
BRAKE = -4.0 / 5.0  # config/car.yaml: stop_deceleration 4 m/s^2 of accel_per_unit 5 m/s^2


class Peer:
    """The stand-in's stdin (commands) and stdout (what it saw), read as it comes."""

    def __init__(self, proc: subprocess.Popen, controller: subprocess.Popen) -> None:
        self.proc, self.controller = proc, controller
        self.commands: list[dict] = []
        self.diagnostics: list[dict] = []
        self.lines: list[str] = []
        self.pending = b""

    def send(self, **command) -> None:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def read(self, seconds: float) -> None:
        """Whatever the stand-in printed within ``seconds``. Read from the pipe unbuffered: a buffered readline
        can hold complete lines the selector no longer reports (the last command, once nothing follows it)."""
        deadline = time.monotonic() + seconds
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    pytest.fail(f"the stand-in ended:\n{self.proc.stderr.read()}")
                self.pending += chunk
                *lines, self.pending = self.pending.split(b"\n")
                for line in lines:
                    self.take(line.decode())

    def take(self, line: str) -> None:
        kind, _, body = line.partition(" ")
        if kind == "command":
            self.commands.append(json.loads(body))
        elif kind == "diag":
            self.diagnostics.append(json.loads(body))
        else:
            self.lines.append(line.strip())

    def wait(self, condition, timeout: float, what: str, controller_up: bool = True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.read(0.2)
            if controller_up and self.controller.poll() is not None:
                pytest.fail(f"the controller exited ({self.controller.returncode}) waiting for {what}:\n"
                            f"{self.controller.stderr.read()}")
            result = condition()
            if result:
                return result
        pytest.fail(f"timed out after {timeout} s waiting for {what}; last commands {self.commands[-5:]}, "
                    f"diagnostics {self.diagnostics[-1:]}")

    def status(self) -> dict:
        return self.diagnostics[-1]["values"] if self.diagnostics else {}


def controller_argv(*params: str, task: str = "parking") -> list[str]:
    return ["-c", "import sys; from mbrl_ros.nodes.controller import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/car", "-r", "__node:=controller",
            "--params-file", str(REPO_ROOT / "config" / "car.yaml"),
            "--params-file", str(REPO_ROOT / "config" / f"car_{task}.yaml"),
            "-p", "trigger:=timer", "-p", "random_transitions:=0", "-p", "diagnostics_period:=0.2", *params]


def estimator_argv() -> list[str]:
    return ["-c", "import sys; from mbrl_ros.nodes.estimator import main; sys.exit(main())",
            "--ros-args", "-r", "__ns:=/car", "-r", "__node:=estimator",
            "--params-file", str(REPO_ROOT / "config" / "car.yaml"),
            "--params-file", str(REPO_ROOT / "config" / "car_parking.yaml")]


@pytest.fixture
def running(spawn):
    """Start the controller (``params``) and the stand-in; returns the Peer once both are up."""
    def start(*params: str, task: str = "parking") -> Peer:
        controller = spawn(*controller_argv(*params, task=task))
        peer_proc = spawn(str(PEERS), "/car", stdin=subprocess.PIPE)
        peer = Peer(peer_proc, controller)
        peer.wait(lambda: "ready" in peer.lines, 90, "the stand-in to discover the controller")
        return peer
    return start


def stop_commands_after(commands: list[dict], index: int) -> list[dict]:
    return [c for c in commands[index:] if c["frame_id"] == "stop"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_last_command_of_a_stopped_controller_is_the_stop(running, sig):
    peer = running()
    peer.send(state=CRUISING)
    peer.wait(lambda: len([c for c in peer.commands if c["frame_id"] != "stop"]) >= 5, 60, "exploring commands")
    peer.controller.send_signal(sig)
    assert peer.controller.wait(timeout=30) == 0, peer.controller.stderr.read()
    # The stand-in may take a moment to read what was delivered (a loaded machine): wait for a stop.
    peer.wait(lambda: peer.commands[-1]["frame_id"] == "stop", 20, "the stop after the signal", controller_up=False)
    peer.read(0.5)
    last = peer.commands[-1]
    assert last["frame_id"] == "stop" and last["values"] == pytest.approx([BRAKE, 0.0]), peer.commands[-3:]


def test_e_stop_is_latched_until_the_service_releases_it_and_deactivation_stops(running):
    peer = running()
    peer.send(state=CRUISING)
    peer.wait(lambda: len(peer.commands) >= 3, 60, "exploring commands")
    peer.send(e_stop=True)
    engaged = len(peer.commands)
    peer.wait(lambda: len(stop_commands_after(peer.commands, engaged)) >= 5, 30, "stop commands")
    first = next(i for i in range(engaged, len(peer.commands)) if peer.commands[i]["frame_id"] == "stop")
    # From then on only the stop, braking from the measured 3 m/s (not rate-limited, not zero acceleration).
    assert all(c["frame_id"] == "stop" and c["values"] == pytest.approx([BRAKE, 0.0]) for c in peer.commands[first:])
    peer.send(e_stop=False)  # not a release
    peer.read(1.5)
    assert all(c["frame_id"] == "stop" for c in peer.commands[first:])
    peer.wait(lambda: peer.status().get("e_stop") == "True", 10, "diagnostics saying e_stop True")
    peer.send(release=True)
    peer.wait(lambda: "release e-stop released" in peer.lines, 20, "the release service's answer")
    released = len(peer.commands)
    peer.wait(lambda: len([c for c in peer.commands[released:] if c["frame_id"] != "stop"]) >= 3, 30,
              "control to resume after the release")
    peer.send(transition="deactivate")
    peer.wait(lambda: "transition True" in peer.lines, 20, "the deactivation")
    peer.read(1.0)
    assert peer.commands[-1]["frame_id"] == "stop", peer.commands[-3:]


def test_an_engaged_e_stop_outlives_a_killed_controller_until_the_service_releases_it(running, spawn, tmp_path):
    e_stop_file = tmp_path / "run" / "e_stop"  # the launch files: <run_dir>/e_stop
    peer = running("-p", f"e_stop_file:={e_stop_file}")
    peer.send(state=CRUISING)
    peer.wait(lambda: len([c for c in peer.commands if c["frame_id"] != "stop"]) >= 3, 60, "exploring commands")
    peer.send(e_stop=True)
    peer.wait(lambda: e_stop_file.exists(), 20, "the e-stop kept in its file")
    peer.controller.kill()  # a crash: respawn starts a new process that never saw e_stop true
    peer.controller.wait()
    peer.read(1.0)
    restarted, diagnosed = len(peer.commands), len(peer.diagnostics)
    peer.controller = spawn(*controller_argv("-p", f"e_stop_file:={e_stop_file}"))
    peer.wait(lambda: len(peer.commands) - restarted >= 5, 90, "the restarted controller's commands")
    # Stopped from its first command on, instead of exploring: braking from the measured 3 m/s once a state has
    # come (a stop sent before the restarted process has any state has no speed to brake from: zero).
    after = peer.commands[restarted:]
    assert all(c["frame_id"] == "stop" for c in after), after[:5]
    values = [c["values"] for c in after]
    braking = next((k for k, v in enumerate(values) if v != [0.0, 0.0]), None)
    assert braking is not None and all(v == pytest.approx([BRAKE, 0.0]) for v in values[braking:]), values
    peer.wait(lambda: len(peer.diagnostics) > diagnosed and peer.status().get("e_stop") == "True", 20,
              "the restarted controller's diagnostics saying e_stop True")
    peer.send(release=True)
    peer.wait(lambda: "release e-stop released" in peer.lines, 20, "the release service's answer")
    assert not e_stop_file.exists()
    released = len(peer.commands)
    peer.wait(lambda: len([c for c in peer.commands[released:] if c["frame_id"] != "stop"]) >= 3, 30,
              "control to resume after the release")


def test_stale_then_invalid_state_stops_and_repeated_failure_is_an_error_until_valid_again(running):
    peer = running("-p", "state_timeout:=0.4", "-p", "failure_tolerance:=1.0")
    peer.send(state=CRUISING)
    peer.wait(lambda: len(peer.commands) >= 3, 60, "exploring commands")
    peer.send(pause=True)  # the estimator goes quiet
    paused = len(peer.commands)
    peer.wait(lambda: len(stop_commands_after(peer.commands, paused)) >= 6, 30, "stop commands on stale state")
    stops = [c["values"][0] for c in stop_commands_after(peer.commands, paused)]
    # Braking on its own estimate of the speed (3 -> 2.2 -> 1.4 -> 0.6 -> 0), then holding zero: never reversing.
    assert stops[:5] == pytest.approx([BRAKE, BRAKE, BRAKE, -0.6, 0.0]) and stops[5] == 0.0
    peer.wait(lambda: peer.diagnostics and peer.diagnostics[-1]["level"] == 2, 30, "an ERROR diagnostic")
    assert "ERROR" in peer.diagnostics[-1]["message"] and peer.status()["error"] == "True"
    peer.send(state=CRUISING, valid=False, reason="odometry lost")
    peer.read(1.0)
    assert peer.diagnostics[-1]["level"] == 2 and "odometry lost" in peer.status()["last_reason"]
    peer.send(state=CRUISING)
    peer.wait(lambda: peer.status().get("error") == "False" and int(peer.status()["cycles_explore"]) > 3, 30,
              "the error to clear once states are valid again")


def test_a_missing_path_on_the_race_task_is_counted_and_the_controller_stays_up(running):
    peer = running(task="race")  # hardware:=real task:=race with nothing publishing reference_path
    peer.send(state=CRUISING + [0.0, 0.0], names=["x", "y", "yaw", "v", "steer", "v_y", "yaw_rate"])
    peer.send(model="car_race")
    peer.wait(lambda: int(peer.status().get("faults_missing_context", "0")) >= 3, 60,
              "missing-context faults on /diagnostics")
    assert peer.commands[-1]["frame_id"] == "stop" and "path" in peer.status()["last_fault"]
    peer.read(1.0)
    assert peer.controller.poll() is None and int(peer.status()["cycles_safe"]) > 3
    # The race config's executor (events) is run_node's, declared once the node is built: not reported as a
    # controller parameter "set ... applied at the next configure" (it never is).
    peer.controller.send_signal(signal.SIGINT)
    _, err = peer.controller.communicate(timeout=30)
    assert peer.controller.returncode == 0, err
    assert "parameter 'executor'" not in err and "set to" not in err, err


def answer(peer: Peer, kind: str) -> dict:
    line = peer.wait(lambda: next((l for l in reversed(peer.lines) if l.startswith(kind + " ")), None), 20,
                     f"the stand-in's '{kind}' answer")
    peer.lines.remove(line)
    return json.loads(line[len(kind) + 1:])


def test_parameters_set_at_run_time_are_checked_as_at_startup_and_kept_across_reconfiguration(running):
    peer = running()
    peer.send(state=CRUISING)
    peer.wait(lambda: peer.status().get("planner") == "mppi", 60, "diagnostics of the running controller")
    refused = {"planner": "nope", "rate_hz": 10.0, "exploration_steps": 5, "dt": 0.1, "not_a_parameter": 1,
               "trigger": "sometimes", "stop_deceleration": 50.0, "cost.goal_pose.form": "no_such_form",
               "state_timeout": 1000.0}
    for name, value in refused.items():
        peer.send(set={name: value})
        ok, reason = answer(peer, "set")[name]
        assert not ok and reason, (name, reason)
    peer.send(set={"planner": "nope"})
    assert "unknown planner 'nope'" in answer(peer, "set")["planner"][1]
    peer.send(set={"rate_hz": 10.0})
    assert "follows from dt" in answer(peer, "set")["rate_hz"][1]
    peer.send(set={"stop_deceleration": 50.0})  # more than the car can brake (accel_per_unit 5)
    assert "more than the car can brake" in answer(peer, "set")["stop_deceleration"][1]
    accepted = {"planner": "cem", "cost.effort.weight": 0.01, "failure_tolerance": 2.0}
    for name, value in accepted.items():
        peer.send(set={name: value})
        assert answer(peer, "set")[name] == [True, ""], name
    peer.read(1.0)
    assert peer.status()["planner"] == "mppi"  # the planner changes at the next configure
    for transition in ("deactivate", "cleanup", "configure", "activate"):
        peer.send(transition=transition)
        peer.wait(lambda: "transition True" in peer.lines, 30, transition)
        peer.lines.remove("transition True")
    peer.wait(lambda: peer.status().get("planner") == "cem", 30, "the reconfigured controller on cem")
    peer.send(get=list(accepted))
    assert answer(peer, "get") == accepted  # not back to the launch values
    assert peer.controller.poll() is None


# What the estimator and the controller may be sent: NaN, inf, huge values, wrong sizes, missing or unknown
# names, stamps repeated, going back, or far in the future (a Time holds int32 seconds).
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 0.0]),
                   st.floats(-5, 5))
STAMPS = st.one_of(st.integers(0, 2 * 10**10), st.sampled_from([0, 10**9, (2**31 - 1) * 10**9]))
NAMES = st.one_of(st.just(["x", "y", "yaw", "v", "steer"]), st.just(["u_accel", "u_steer"]),
                  st.lists(st.sampled_from(["x", "y", "yaw", "v", "steer", "u_steer", "u_accel", "", "bogus"]),
                           max_size=6))
FUZZED = st.one_of(
    st.fixed_dictionaries({"odom": st.fixed_dictionaries({"stamp_ns": STAMPS,
                                                          "values": st.lists(FLOATS, min_size=7, max_size=7)})}),
    st.fixed_dictionaries({"hw_command": st.fixed_dictionaries({"stamp_ns": STAMPS, "names": NAMES,
                                                                "values": st.lists(FLOATS, max_size=4)})}),
    st.fixed_dictionaries({"once": st.fixed_dictionaries({"stamp_ns": STAMPS, "names": NAMES, "valid": st.booleans(),
                                                          "state": st.lists(FLOATS, max_size=7)})}),
)


@pytest.fixture
def fuzzed_stack(spawn):
    estimator = spawn(*estimator_argv())
    controller = spawn(*controller_argv("-p", "state_timeout:=0.4"))
    peer = Peer(spawn(str(PEERS), "/car", stdin=subprocess.PIPE), controller)
    peer.wait(lambda: "ready" in peer.lines, 90, "the stand-in to discover the controller")
    return peer, estimator


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(FUZZED, min_size=1, max_size=25))
def test_fuzzed_messages_through_dds_give_only_finite_commands_within_limits(fuzzed_stack, messages):
    """One estimator and one controller for every example (the fixture): they must outlive all of them."""
    peer, estimator = fuzzed_stack
    first = len(peer.commands)
    for message in messages:
        peer.send(**message)
    peer.read(0.6)  # three control periods
    assert estimator.poll() is None and peer.controller.poll() is None
    for command in peer.commands[first:]:
        if command["frame_id"] == "fuzz":
            continue  # the stand-in's own
        values = command["values"]
        assert len(values) == 2 and all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in values), command
    assert any(c["frame_id"] != "fuzz" for c in peer.commands[first:]), "the controller stopped commanding"


def goal_policy_file(tmp_path: Path) -> tuple[Path, object]:
    """A goal-reading actor (untrained, fixed seed, biased off zero) as pickled policy/model fields, and the actor."""
    import pickle

    import torch

    from mbrl_ros.core.policies import Actor
    from mbrl_ros.io.model_update import pack_policy

    torch.manual_seed(0)
    actor = Actor(5, 2, [-1.0, -1.0], [1.0, 1.0], context_dim=5, hidden_sizes=[8], angle_dims=[2])
    with torch.no_grad():
        actor.net[-1].bias.copy_(torch.tensor([0.3, -0.2]))
    path = tmp_path / "policy.pkl"
    path.write_bytes(pickle.dumps(pack_policy(actor.eval(), {"candidate_cost_starts": 1.0}, version=1)))
    return path, actor


def test_on_a_forced_overrun_the_controller_sends_the_policys_action_not_the_stop(running, tmp_path):
    """Issue 12 §2: every plan overruns (a 1 ms period): without a policy the shifted previous plan, then, once a
    policy arrives on policy/model, its action for the measured state and the goal, within limits, no stop."""
    import torch

    policy_file, actor = goal_policy_file(tmp_path)
    peer = running("-p", "dt:=0.001", "-p", "trigger:=state", "-p", "state_timeout:=2.0",
                   "-p", "mppi.num_samples:=64")  # still far over 1 ms, and cycles often on a loaded machine
    peer.send(goal=[10.0, 0.0, 0.0])
    peer.send(model="car")
    peer.send(state=CRUISING)
    peer.wait(lambda: int(peer.status().get("faults_overrun", 0)) >= 3, 90, "planning overruns")
    assert int(peer.status()["cycles_fallback"]) >= 1 and peer.status()["policy_version"] == "0"
    peer.send(policy=str(policy_file))
    peer.wait(lambda: int(peer.status().get("cycles_fallback_policy", 0)) >= 5, 60, "cycles on the policy")
    assert peer.status()["policy_version"] == "1"
    with torch.no_grad():
        expected = actor(torch.tensor([CRUISING]), torch.tensor([[10.0, 0.0, 0.0, 0.0, 0.0]]))[0].tolist()
    taken = len(peer.commands)
    peer.read(2.0)
    recent = peer.commands[taken:]
    assert len(recent) >= 3 and all(c["frame_id"] != "stop" for c in recent), recent[:3]
    for command in recent:
        assert command["values"] == pytest.approx(expected, abs=1e-5)
    assert "overran" in peer.status()["last_reason"] and peer.status()["error"] == "False"


def test_controller_policy_answers_each_state_with_the_policys_action_and_stops_without_a_goal(running, tmp_path):
    """Issue 12 §2 (controller:=policy, lockstep: one cycle per state): nothing but the stop until a policy and a
    goal arrive, then each command is the policy's action for the state it answers; no planner, no model."""
    import torch

    policy_file, actor = goal_policy_file(tmp_path)
    # The car's files set the controller's planner in its own section, which a -p (for every node) does not
    # override: a third file does, as the launch file's `planner` (from controller:=policy) does.
    (planner_file := tmp_path / "policy_planner.yaml").write_text(
        json.dumps({"/**/controller": {"ros__parameters": {"planner": "policy"}}}))
    peer = running("-p", "trigger:=state", "-p", "explore_without_model:=false", "--params-file", str(planner_file))
    peer.send(state=CRUISING)
    peer.wait(lambda: len(peer.commands) >= 3 and peer.status(), 60, "commands and diagnostics before any policy")
    assert all(c["frame_id"] == "stop" for c in peer.commands) and peer.status()["planner"] == "policy"
    peer.send(policy=str(policy_file))
    # The reason is the last cycle's: the first cycle after the policy arrived says what it lacks now.
    peer.wait(lambda: peer.status().get("policy_version") == "1"
              and peer.status().get("last_reason") == "no goal received yet", 30, "the policy taken")
    assert peer.commands[-1]["frame_id"] == "stop"
    peer.send(goal=[-5.0, 3.0, 1.0])
    peer.wait(lambda: int(peer.status().get("cycles_policy", 0)) >= 3, 30, "cycles on the policy")
    moving = [0.0, 1.0, 0.5, 2.0, 0.1]
    peer.send(state=moving)
    peer.read(1.5)
    taken = len(peer.commands)
    peer.read(1.0)
    with torch.no_grad():
        expected = actor(torch.tensor([moving]), torch.tensor([[-5.0, 3.0, 1.0, 0.0, 0.0]]))[0].tolist()
    recent = peer.commands[taken:]
    assert len(recent) >= 3 and all(c["frame_id"] != "stop" for c in recent)
    for command in recent:
        assert command["values"] == pytest.approx(expected, abs=1e-5)
    assert peer.status()["model_version"] == "0" and int(peer.status()["cycles_plan"]) == 0


def test_in_lockstep_a_re_published_state_gets_the_same_command_again(running):
    """Lockstep (trigger: state): the simulator re-publishes a state until a command answers it, since the first
    command can be lost before discovery matches its subscription. The controller answers a re-sent state with
    the command it sent for it (counted as commands_resent), not a new plan and not silence (a deadlock: the hand
    stack once waited for ever on its first state); a new state gets a new command."""
    peer = running("-p", "trigger:=state", "-p", "random_transitions:=1000")
    first = {"state": CRUISING, "stamp_ns": 5_000_000_000}
    peer.send(once=first)
    peer.wait(lambda: len(peer.commands) >= 1, 60, "the answer to the first state")
    answer = peer.commands[0]
    assert answer["frame_id"] != "stop", answer  # exploring: a random command
    for count in (2, 3):
        peer.send(once=first)
        peer.wait(lambda: len(peer.commands) >= count, 30, "the answer to the re-sent state")
        assert (peer.commands[-1]["frame_id"], peer.commands[-1]["values"]) == (answer["frame_id"], answer["values"])
    peer.send(once={"state": CRUISING, "stamp_ns": 5_200_000_000})
    peer.wait(lambda: len(peer.commands) >= 4, 30, "the answer to the next state")
    assert peer.commands[-1]["values"] != answer["values"]
    peer.wait(lambda: peer.status().get("commands_resent") == "2", 30, "the re-sends counted")
    assert peer.status()["cycles_explore"] == "2", peer.status()
    # The time from a state's arrival to its command (what `mbrl-ros bench latency` splits the path with): both
    # answered states are in it, and a re-send, answered without a cycle, is not (a resend's ~0 would pull p50 down).
    p50, p99 = (float(peer.status()[f"state_to_command_{q}_ms"]) for q in ("p50", "p99"))
    assert 0 < p50 <= p99, peer.status()
    # numpy's and scipy's OpenBLAS held to the controller's `threads` (1 by default), as torch is: left alone,
    # OpenBLAS starts one thread per core (2 here) and iLQR's numpy solves took 3.5x as long on 2 busy cores.
    assert peer.status()["blas_threads"] == "1", peer.status()


def test_the_controller_settles_its_heap_at_start_and_after_a_new_models_first_plan(running):
    """Issue 11 §4's p99: the cyclic collector's full passes (80-95 ms over what a torch process holds) kept out of
    the loop (mbrl_ros/ros/gc_pauses.py). What the imports left is frozen before the first cycle; what the first
    plan with the model built is frozen after it; the diagnostics count every pass and its longest pause.
    settle_heap is off by default (README, "The garbage collector")."""
    peer = running("-p", "settle_heap:=true")
    peer.wait(lambda: peer.status().get("gc_frozen_objects"), 30, "diagnostics with the collector's numbers")
    at_start = int(peer.status()["gc_frozen_objects"])
    assert at_start > 50_000, peer.status()  # torch, rclpy and the stack's modules
    peer.send(model="car")
    peer.send(goal=[5.0, 0.0, 0.0])
    peer.send(state=CRUISING)
    peer.wait(lambda: peer.status().get("first_plan_ms"), 60, "the first plan with the model")
    peer.wait(lambda: int(peer.status()["gc_frozen_objects"]) > at_start, 10, "the heap settled again")
    status = peer.status()
    assert {f"gc_gen{g}_{key}" for g in range(3) for key in ("passes", "longest_ms")} <= status.keys(), status
