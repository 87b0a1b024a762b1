"""The main job: a simulated robot collects data, learns its dynamics, and does its task."""
