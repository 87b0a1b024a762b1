"""Files in and out: configs, checkpoints, bags. No rclpy import here either."""
