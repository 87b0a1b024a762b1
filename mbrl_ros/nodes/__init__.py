"""Thin rclpy adapters around the core: messages in, tensors through the core, messages out."""
