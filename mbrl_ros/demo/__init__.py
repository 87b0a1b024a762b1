"""The main job: the simulated car collects data, learns its dynamics, and drives."""
