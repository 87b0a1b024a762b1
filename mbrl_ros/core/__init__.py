"""The ROS-free core: models, planners, costs, data and training.

Only torch, numpy and casadi are imported under this package, never rclpy, so
everything here can be tested and benchmarked without DDS.
"""
