"""``mbrl-ros replay`` as a process over DDS: bytes, timing, /clock and QoS as recorded; Ctrl-C; errors.

The test process listens with plain rclpy (standard message types only: it
cannot import mbrl_interfaces); a bag of the stack's own types checks that the
command re-executes itself in the workspace environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosgraph_msgs.msg import Clock
from std_msgs.msg import String

from car_bags import write_car_bag

from mbrl_ros.io.recording import BagRecorder, bag_qos
from mbrl_ros.ros_env import free_domain_id

T0 = 50 * 10**9  # the bag's first log time (ns)
STEP = 100_000_000  # 0.1 s between messages
COUNT = 20


def string_bag(path):
    """/chatter (best effort) every 0.1 s of bag time, and one latched /status message at the start."""
    with BagRecorder(path) as bag:
        bag.add_topic("/chatter", "std_msgs/msg/String", bag_qos(reliable=False, transient_local=False, depth=5))
        bag.add_topic("/robot/status", "std_msgs/msg/String", bag_qos(reliable=True, transient_local=True))
        bag.write("/robot/status", T0, serialize_message(String(data="ready")))
        for k in range(COUNT):
            bag.write("/chatter", T0 + k * STEP, serialize_message(String(data=f"message {k}")))
    return path


@pytest.fixture
def domain(request) -> int:
    return free_domain_id(request.node.nodeid)


@pytest.fixture
def listener(domain):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("replay_listener", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def start_replay(domain: int, *args: str) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    return subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "replay", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def spin_while(executor, proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    assert proc.poll() is not None, "replay did not finish"
    for _ in range(20):  # what is still on its way
        executor.spin_once(timeout_sec=0.05)
    return proc.communicate()


def test_replay_publishes_the_recorded_messages_in_time_with_clock_and_qos(tmp_path, domain, listener):
    node, executor = listener
    bag = string_bag(tmp_path / "bag")
    received, clock, qos = [], [], {}
    node.create_subscription(String, "/chatter", lambda m: received.append((time.monotonic(), m.data)),
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT))
    node.create_subscription(Clock, "/clock", lambda m: clock.append(m.clock.sec * 10**9 + m.clock.nanosec), 100)
    status = []
    node.create_subscription(String, "/robot/status", lambda m: status.append(m.data), 10)
    started = time.monotonic()
    proc = start_replay(domain, str(bag), "--rate", "2", "--wait-for-subscribers", "1", "--delay", "0.5")
    while proc.poll() is None and time.monotonic() - started < 60:
        executor.spin_once(timeout_sec=0.05)
        for topic in ("/chatter", "/robot/status"):
            infos = node.get_publishers_info_by_topic(topic)
            if infos:
                qos[topic] = infos[0].qos_profile
    out, err = spin_while(executor, proc, 60)
    assert proc.returncode == 0, out + err
    assert f"published {COUNT + 1} messages" in out, out

    assert [data for _, data in received] == [f"message {k}" for k in range(COUNT)]
    assert status == ["ready"]
    # At rate 2, 19 steps of 0.1 s take 0.95 s: the replay says so, and the messages came spread out
    # (by at least half of that: delivery on a loaded machine bunches them).
    assert float(out.split(" s of bag time in ")[1].split(" s")[0]) >= 0.95, out
    assert received[-1][0] - received[0][0] >= 0.95 / 2
    assert clock and clock[0] >= T0 and clock[-1] == T0 + (COUNT - 1) * STEP
    assert clock == sorted(clock), "/clock went backwards"
    assert qos["/chatter"].reliability == ReliabilityPolicy.BEST_EFFORT
    assert qos["/chatter"].durability == DurabilityPolicy.VOLATILE
    assert qos["/robot/status"].reliability == ReliabilityPolicy.RELIABLE
    assert qos["/robot/status"].durability == DurabilityPolicy.TRANSIENT_LOCAL


def test_a_latched_topic_reaches_a_late_subscriber(tmp_path, domain, listener):
    node, executor = listener
    bag = string_bag(tmp_path / "bag")
    # 'status' names /robot/status; chatter keeps the replay going for 1.9 s / 0.2 after it.
    proc = start_replay(domain, str(bag), "--rate", "0.2", "--topics", "status", "chatter")
    time.sleep(3.0)  # the one message is out before anyone listens
    status = []
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, "/robot/status", lambda m: status.append(m.data), latched)
    deadline = time.monotonic() + 20
    while not status and proc.poll() is None and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert status == ["ready"], out + err


def test_ctrl_c_stops_cleanly_and_says_where(tmp_path, domain):
    bag = string_bag(tmp_path / "bag")
    proc = start_replay(domain, str(bag), "--rate", "0.1", "--loop")
    assert proc.stdout.readline().startswith("[replay] 1 bag(s)")  # replaying now
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, out + err
    assert "[replay] stopped after" in err and "Traceback" not in err, err


def test_ctrl_c_stops_it_even_when_started_with_sigint_ignored(tmp_path, domain):
    # A non-interactive shell's background job (and a test runner's worker) starts children with SIGINT
    # ignored, and Python keeps that: the replay ran on past its SIGINT (a CI failure, SigIgn had SIGINT).
    bag = string_bag(tmp_path / "bag")
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.Popen([sys.executable, "-m", "mbrl_ros.cli", "replay", str(bag), "--rate", "0.1", "--loop"],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.stdout.readline().startswith("[replay] 1 bag(s)")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "[replay] stopped after" in err, err


def test_the_stacks_own_types_replay_in_the_workspace_environment(tmp_path, domain):
    bag = write_car_bag(tmp_path / "car", 30)
    assert "MBRL_ROS_IN_WORKSPACE" not in os.environ
    proc = start_replay(domain, str(bag), "--rate", "20")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "/car/state" in out and "published" in out, out + err


def test_bad_input_gives_clear_errors(tmp_path, domain):
    bag = string_bag(tmp_path / "bag")
    for args, message in (
        ([str(tmp_path / "nothing")], f"{tmp_path / 'nothing'}: does not exist"),
        ([str(bag), "--topics", "odom"], "no topic 'odom' in the bag (topics: ['/chatter', '/robot/status'])"),
        ([str(bag), "--rate", "0"], "--rate must be > 0"),
    ):
        proc = start_replay(domain, *args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and message in err, (args, out, err)


def test_by_stamp_orders_bunched_messages_by_their_header_stamps():
    from mbrl_ros.offline.replay import by_header_stamp, header_stamp_ns

    def stamped(stamp_ns: int) -> bytes:
        msg = Clock()  # any message whose first field is a time: serialised the same way as a header's stamp
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 10**9)
        return serialize_message(msg)

    # Logged bunched (three steps received at 2.0 s), one step logged before its predecessor.
    logged = [("/odom", 2_000_000_000, stamped(1_400_000_000)), ("/odom", 2_000_000_000, stamped(1_200_000_000)),
              ("/odom", 2_000_000_000, stamped(1_600_000_000)), ("/diag", 2_100_000_000, b"\0\1\0\0"),
              ("/odom", 3_000_000_000, stamped(2_900_000_000))]
    assert header_stamp_ns(logged[0][2]) == 1_400_000_000
    out = list(by_header_stamp(iter(logged), {"/odom"}, window_ns=1_000_000_000))  # 0.8 s late is within
    assert [(topic, t) for topic, t, _ in out] == [
        ("/odom", 1_200_000_000), ("/odom", 1_400_000_000), ("/odom", 1_600_000_000),
        ("/diag", 2_100_000_000), ("/odom", 2_900_000_000)]
    # One stamp: in the order of the topics given (a command answering a state goes after it).
    bunched = [("/command", 5, stamped(1_000)), ("/odom", 5, stamped(1_000))]
    assert [t for t, _, _ in by_header_stamp(iter(bunched), {"/odom", "/command"}, 0)] == ["/command", "/odom"]
    ordered = by_header_stamp(iter(bunched), {"/odom", "/command"}, 0, {"/odom": 0, "/command": 1})
    assert [t for t, _, _ in ordered] == ["/odom", "/command"]


@pytest.mark.parametrize("given", [True, False])
def test_by_stamp_replays_an_episodes_report_before_the_odometry_stamped_with_it(given):
    """The lockstep simulator sends an episode's report (latched, stamped with its end T) and the next goal,
    then the next episode's first odometry, stamped T too; the car estimator restarts the steering at the
    first sample at or after T, so the report must come first however --topics lists the topics (it once
    came last, after the odometry: the replay's first state of every episode differed from the live one)."""
    from mbrl_ros.offline.replay import TopicPlan, by_header_stamp, replay_tie_order

    def stamped(stamp_ns: int) -> bytes:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 10**9)
        return serialize_message(msg)

    plans = {"/car/hw/odom": TopicPlan("/car/hw/odom", "nav_msgs/msg/Odometry", False, False, 5),
             "/car/hw/command": TopicPlan("/car/hw/command", "mbrl_interfaces/msg/CommandVector", True, False, 10),
             "/car/goal_pose": TopicPlan("/car/goal_pose", "geometry_msgs/msg/PoseStamped", True, True, 1),
             "/car/sim/episodes": TopicPlan("/car/sim/episodes", "diagnostic_msgs/msg/DiagnosticArray",
                                            True, True, 1)}
    end = 7_400_000_000
    # A loaded logger, bunched: one log time, in the order of its subscriptions.
    logged = [("/car/hw/odom", end, stamped(end - 200_000_000)), ("/car/hw/command", end, stamped(end - 200_000_000)),
              ("/car/hw/odom", end, stamped(end)), ("/car/hw/command", end, stamped(end)),
              ("/car/goal_pose", end, stamped(end)), ("/car/sim/episodes", end, stamped(end))]
    order = replay_tie_order(plans, given)
    out = [(t.removeprefix("/car/"), s) for t, s, _ in by_header_stamp(iter(logged), set(plans), 0, order)]
    before = [("hw/odom", end - 200_000_000), ("hw/command", end - 200_000_000)]
    if given:  # in the order of --topics among the latched topics, and among the others
        assert out == before + [("goal_pose", end), ("sim/episodes", end), ("hw/odom", end), ("hw/command", end)]
    else:  # as logged within each
        assert out[:2] == before and out[2:4] == [("goal_pose", end), ("sim/episodes", end)], out
        assert out[4:] == [("hw/odom", end), ("hw/command", end)], out
