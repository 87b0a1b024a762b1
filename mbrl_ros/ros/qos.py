"""The QoS profiles of the stack, chosen once here so every node agrees."""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Sensor streams (odometry, joint states, estimated state): best effort, a short queue
# (so an estimator or a logger that falls behind a little loses nothing).
SENSOR = qos_profile_sensor_data
# The controller's state input: best effort, newest only. A queue here would make a
# controller that is slower than the state stream plan from ever older states (measured:
# sensor-data depth 5 at 20 Hz added ~230 ms between a state's stamp and its command).
LATEST_STATE = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT
)
# Commands and plans: reliable, a short queue; a late command is useless anyway.
COMMAND = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE
)
# Goals, paths and models: latched, so a late joiner gets the current one.
LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Episode reports (the simulators' sim/episodes): latched with their whole history, so a node that joins late
# (the demo's watcher starts after the stack; discovery under load takes seconds) gets every episode, not
# only the last: short episodes (a random car leaving the race track) end seconds apart, and the demo that
# missed episode 0 evaluated the wrong one.
EPISODE_REPORTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1000,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
