"""Hardware drivers: the only code that knows a robot. Imported as ``mbrl_ros_hardware``.

One subpackage per robot and kind (``sim_car``, ``real_car``, ``sim_hand``,
``real_hand``). Simulator wrappers are ROS-free; the driver nodes around them
are thin rclpy adapters.
"""
