"""Receding-horizon planners, chosen by name: ``build_planner('mppi', model, cost, settings)``.

Each planner module imports only ``base``; this package imports the planners
and holds the one table of them, so there is no import cycle.
"""

from __future__ import annotations

from typing import Any

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.planners.base import Planner, PlannerConfig, PlanResult
from mbrl_ros.core.planners.cem import CemPlanner
from mbrl_ros.core.planners.ilqr import IlqrPlanner
from mbrl_ros.core.planners.mppi import MppiPlanner
from mbrl_ros.core.planners.random_shooting import RandomShootingPlanner

__all__ = ["PLANNERS", "Planner", "PlannerConfig", "PlanResult", "build_planner"]

PLANNERS: dict[str, type[Planner]] = {cls.name: cls for cls in (MppiPlanner, CemPlanner, IlqrPlanner, RandomShootingPlanner)}


def build_planner(
    name: str,
    model: DynamicsModel,
    cost: TrajectoryCost,
    config: dict[str, Any] | None = None,
    source: str = "planner",
) -> Planner:
    """Build a planner by name ('mppi', 'cem', 'ilqr', 'rs') from a YAML mapping of its settings."""
    if name not in PLANNERS:
        raise ValueError(f"{source}: unknown planner {name!r}; valid planners: {sorted(PLANNERS)}")
    cls = PLANNERS[name]
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"{source}: expected a mapping of {name} settings, got {config!r}")
    return cls(model, cost, cls.config_class.from_dict(config, source=f"{source}: {name}"))
