"""Policies learned from the model: an actor a controller calls in microseconds, and how it is trained.

- ``actor``: ``Actor`` (the one policy type a controller runs) and ``build_actor``;
  no training code, so a checkpoint loads without it.
- ``config``: the ``policy:`` YAML section.
- ``rollouts``: closed-loop rollouts through a model, the task cost per sample and context.
- ``shac``: analytic gradients through the model with a learned value (SHAC).
- ``mbpo``: SAC (stable-baselines3) on short model rollouts branched from real states (MBPO).
- ``validation``: closed-loop scores on held-out states, and the deploy decision.
"""

from mbrl_ros.core.policies.actor import Actor, ConstantPolicy, StopPolicy, build_actor

__all__ = ["Actor", "ConstantPolicy", "StopPolicy", "build_actor"]
