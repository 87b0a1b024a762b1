"""Offline work on recorded bags: ``mbrl-ros fit`` (models from bags) and ``mbrl-ros replay``."""
