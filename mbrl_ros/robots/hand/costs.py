"""The hand's cost terms: fingertip positions to their targets (HandReach's goal)."""

from __future__ import annotations

from typing import Any

import torch

from mbrl_ros.core.costs import (REQUIRED, SQRT_EPS, CostTerm, as_tensor, parse_choice, parse_indices, parse_number,
                                 stage_and_terminal)
from mbrl_ros.core.validation import check_tensor

__all__ = ["FingertipTargetTerm"]


class FingertipTargetTerm(CostTerm):
    """Distance of fingertip positions (3 state entries each) to targets set at run time.

    ``form: norm`` is HandReach's goal distance, the Euclidean norm of the whole
    difference vector; ``form: squared`` is its square (smoother, better for iLQR).
    """

    kind = "fingertip_target"
    defaults = {"indices": REQUIRED, "form": "norm", "stage_weight": 1.0, "terminal_weight": 1.0}
    context = ("fingertip_target",)

    def configure(self, c: dict[str, Any]) -> None:
        indices = parse_indices("indices", c["indices"], self.state_dim, multiple_of=3)
        self.register_buffer("indices", torch.tensor(indices))
        self.register_buffer("target", torch.zeros(len(indices)))
        self.form = parse_choice("form", c["form"], ("norm", "squared"))
        self.stage_weight = parse_number("stage_weight", c["stage_weight"], low=0)
        self.terminal_weight = parse_number("terminal_weight", c["terminal_weight"], low=0)

    def set_fingertip_target(self, target: torch.Tensor) -> None:
        target = as_tensor("fingertip_target", target, self.target)
        self.target.copy_(check_tensor("fingertip_target", target, (self.target.shape[0],)))
        self._context_set.add("fingertip_target")

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        error = states.index_select(-1, self.indices) - self.target
        squared = (error * error).sum(-1)
        per_state = squared if self.form == "squared" else torch.sqrt(torch.clamp(squared, min=SQRT_EPS))
        return stage_and_terminal(per_state, self.stage_weight, self.terminal_weight)
