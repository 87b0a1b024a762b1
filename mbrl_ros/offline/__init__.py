"""Offline work on recorded bags: ``mbrl-ros fit`` (models from bags) and ``mbrl-ros replay``."""

# Light on purpose (the command line imports these for its choices without torch).
MODEL_KINDS = ("parametric", "ensemble", "semiparametric")
ROBOTS = ("car", "hand")
