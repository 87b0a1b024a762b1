"""The base's drivers.

``sim`` (executable ``sim_base``): the simulated base, ir-sim's differential-drive
robot plus motor lag and slip (``world``). ``real`` (executable ``real_base``)
maps the stack's ``hw/command`` to geometry_msgs/Twist on ``/cmd_vel`` and relays
``/odom`` to ``hw/odom``. ``emulator`` (executable ``base_emulator``) plays the
vendor driver for tests: it drives the same simulated base from ``/cmd_vel`` and
publishes ``/odom`` late, noisy, and with messages dropped. ``demo``: what
``mbrl-ros demo base`` plots.
"""
