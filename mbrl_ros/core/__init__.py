"""The ROS-free, robot-free core: models, planners, costs, estimation results, data and training.

Only torch, numpy and casadi are imported under this package, never rclpy, so
everything here can be tested and benchmarked without DDS; and no robot is named:
what one robot adds (its physics prior, cost terms, estimator) comes from its
plug-in under ``mbrl_ros/robots``, passed in.
"""
