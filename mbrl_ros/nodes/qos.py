"""The QoS profiles of the stack, chosen once here so every node agrees."""

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# Sensor streams (odometry, joint states, estimated state): best effort, newest only.
SENSOR = qos_profile_sensor_data
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
