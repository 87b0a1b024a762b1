"""Hardware drivers: the only code that talks to a robot's hardware or simulator.

One subpackage per robot (``car``, ``hand``, ``base``), each with its simulator driver
(``sim``), its bridge to the vendor driver (``real``) and an emulator of that
vendor driver for tests (``emulator``). Simulator wrappers are ROS-free; the
driver nodes around them are thin rclpy adapters that build their messages
with the robot plug-in's ``mbrl_ros.robots.<robot>.messages``. Shared:
``sim_driver`` (lockstep or real-time stepping, episodes), ``vendor_bridge`` (the
real drivers' command watchdog and odometry relay) and ``emulation``.
"""
