"""The real car: a bridge to an F1TENTH-style vendor driver, and an emulator of that driver.

``node`` (executable ``real_car``) maps the stack's ``hw/command`` to
ackermann_msgs/AckermannDriveStamped on ``/drive`` and relays ``/odom`` to
``hw/odom``. ``emulator`` (executable ``car_emulator``) plays the vendor
driver for tests: it drives a simulated car from ``/drive`` and publishes
``/odom`` late, noisy, and with messages dropped.
"""
