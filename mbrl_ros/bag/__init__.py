"""Command-line tools for bags: ``mbrl-ros bag info|repair``."""
