"""The kinds of dynamics model, by the names config and command lines use: the one list.

Light on purpose (no torch): command lines import it for their choices.
``parametric`` is the robot's physics prior (its plug-in supplies it),
``ensemble`` probabilistic MLPs, ``semiparametric`` the prior plus a learned residual.
"""

MODEL_KINDS = ("parametric", "ensemble", "semiparametric")
