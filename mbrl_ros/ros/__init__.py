"""The rclpy toolkit every node and driver shares: parameters, QoS, the node runner, diagnostics,
header stamps; and the launch-and-watch harness of the whole stack (``stack_run``).

Node processes live in ``mbrl_ros.nodes``, drivers in ``mbrl_ros_hardware``; both build on this.
"""
