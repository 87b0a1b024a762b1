"""The car's drivers.

``sim`` (executable ``sim_car``): the simulated car, on highway-env's parking
lot (``parking``) or a single-track race car with tyre slip (``race``).
``real`` (executable ``real_car``) maps the stack's ``hw/command`` to
ackermann_msgs/AckermannDriveStamped on ``/drive`` (``drive``) and relays
``/odom`` to ``hw/odom``. ``emulator`` (executable ``car_emulator``) plays the
vendor driver for tests: it drives a simulated car (``emulated_car``) from
``/drive`` and publishes ``/odom`` late, noisy, and with messages dropped.
"""
