"""Model data generation (MBPO: Janner et al., "When to Trust Your Model", NeurIPS 2019)
with stable-baselines3's SAC, and the SAC actor converted into the controller's ``Actor``.

``ModelRolloutEnv`` is a stable-baselines3 ``VecEnv`` whose every step is one
batched model prediction: ``rollouts`` short rollouts of ``rollout_length``
steps, each branched from a real logged state (and paired with a logged
context), so the SAC learns from model data that stays near the data the model
was fitted on. The reward is minus the task cost of each step (``TaskCost.steps``),
divided by one scale fixed at the first step. All rollouts end together (a time
limit, which SAC bootstraps through: ``TimeLimit.truncated``) and restart from
new real states.

Why stable-baselines3: a maintained, tested SAC (entropy tuning, target
networks, replay buffer) used as a reference implementation, whose actor is a
plain MLP with a tanh-squashed mean, the same form as ``Actor``: its weights copy
over exactly (``actor_from_sac``), so the controller has one policy type and no
distillation error. The SAC starts from the given actor's weights (the deployed
policy keeps improving), and sees the actor's normalised features as its observation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.policies.actor import ACTIVATIONS, Actor
from mbrl_ros.core.policies.config import MbpoConfig
from mbrl_ros.core.policies.rollouts import StartSampler, TaskCost

__all__ = ["MbpoHistory", "MbpoLearner", "ModelRolloutEnv", "actor_from_sac", "actor_into_sac", "train_mbpo"]


class ModelRolloutEnv(VecEnv):
    """Short model rollouts from real states as a stable-baselines3 vector environment."""

    def __init__(self, actor: Actor, model: DynamicsModel, cost: TaskCost, sampler: StartSampler,
                 rollouts: int, rollout_length: int, contexts_per_batch: int = 1) -> None:
        self.actor, self.model, self.cost, self.sampler = actor, model, cost, sampler
        self.rollout_length = int(rollout_length)
        self.contexts_per_batch = int(contexts_per_batch)
        self.cost_scale: float | None = None
        self.steps_taken = 0
        self._actions: torch.Tensor | None = None
        observation = spaces.Box(-np.inf, np.inf, (actor.feature_dim,), np.float32)
        action = spaces.Box(actor.action_low.numpy().astype(np.float32),
                            actor.action_high.numpy().astype(np.float32), dtype=np.float32)
        super().__init__(rollouts, observation, action)

    def _observe(self) -> np.ndarray:
        return self.actor.features(self.states, self.contexts).numpy().astype(np.float32)

    @torch.no_grad()
    def reset(self) -> np.ndarray:
        self.states, self.contexts = self.sampler.sample(self.num_envs, self.contexts_per_batch)
        self.t = 0
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(actions, dtype=self.states.dtype)

    @torch.no_grad()
    def step_wait(self):
        before, actions = self.states, self._actions
        after = self.model(before, actions)
        if not bool(torch.isfinite(after).all()):
            raise FloatingPointError("MBPO: the model predicts non-finite states from the rollouts' states")
        costs = self.cost.steps(torch.stack((before, after), dim=1), actions.unsqueeze(1), self.contexts)[:, 0]
        if self.cost_scale is None:
            self.cost_scale = max(float(costs.mean()), 1e-6)
        rewards = (-costs / self.cost_scale).numpy().astype(np.float32)
        self.states, self.t = after, self.t + 1
        self.steps_taken += 1
        observations = self._observe()
        if self.t < self.rollout_length:
            return observations, rewards, np.zeros(self.num_envs, dtype=bool), [{} for _ in range(self.num_envs)]
        infos = [{"terminal_observation": row, "TimeLimit.truncated": True} for row in observations]
        return self.reset(), rewards, np.ones(self.num_envs, dtype=bool), infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        if attr_name == "render_mode":
            return [None] * len(list(self._get_indices(indices)))
        raise AttributeError(f"ModelRolloutEnv has no attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"ModelRolloutEnv: cannot set {attr_name!r}")

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        raise AttributeError(f"ModelRolloutEnv has no method {method_name!r}")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(list(self._get_indices(indices)))


def _sac_layers(sac: SAC) -> list[torch.nn.Linear]:
    return [m for m in sac.actor.latent_pi if isinstance(m, torch.nn.Linear)] + [sac.actor.mu]


def _actor_layers(actor: Actor) -> list[torch.nn.Linear]:
    return [m for m in actor.net if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def actor_into_sac(actor: Actor, sac: SAC) -> None:
    """Start the SAC's mean from ``actor`` (same hidden sizes and activation)."""
    for mine, theirs in zip(_actor_layers(actor), _sac_layers(sac), strict=True):
        theirs.weight.copy_(mine.weight)
        theirs.bias.copy_(mine.bias)


@torch.no_grad()
def actor_from_sac(sac: SAC, actor: Actor) -> Actor:
    """``actor`` with the SAC's deterministic action: tanh of its mean, rescaled to the bounds, exactly."""
    for mine, theirs in zip(_actor_layers(actor), _sac_layers(sac), strict=True):
        mine.weight.copy_(theirs.weight)
        mine.bias.copy_(theirs.bias)
    return actor


@dataclass
class MbpoHistory:
    model_steps: int = 0            # batched model steps taken
    transitions: int = 0            # model transitions generated
    gradient_steps: int = 0
    cost_scale: float = 1.0
    seconds: float = 0.0


class MbpoLearner:
    """MBPO's state across training rounds: the SAC (actor, critics, entropy weight, replay buffer).

    Each ``train`` call points the SAC at a new model-backed environment (this round's
    model and real states) and runs ``config.total_steps`` more model steps; the replay
    buffer keeps the latest ``buffer_size`` model transitions, older rounds' included, as
    MBPO's model buffer does. The reward scale is fixed at the first round.
    """

    def __init__(self, actor: Actor, config: MbpoConfig) -> None:
        self.actor, self.config = actor, config
        self.sac: SAC | None = None
        self.cost_scale: float | None = None

    def train(self, model: DynamicsModel, cost: TaskCost, sampler: StartSampler,
              stop: Callable[[], bool] | None = None) -> MbpoHistory:
        """Improve the actor in place (the SAC's deterministic action); returns what was done.
        ``stop()`` true ends it at the next model step."""
        started = time.perf_counter()
        config, actor = self.config, self.actor
        env = ModelRolloutEnv(actor, model, cost, sampler, config.rollouts, config.rollout_length,
                              config.contexts_per_batch)
        env.cost_scale = self.cost_scale
        if self.sac is None:
            self.sac = SAC(
                "MlpPolicy", env, learning_rate=config.learning_rate, buffer_size=config.buffer_size,
                learning_starts=config.learning_starts, batch_size=config.batch_size, tau=config.tau,
                gamma=config.gamma, ent_coef=f"auto_{config.initial_entropy_coef}", train_freq=1,
                gradient_steps=config.gradient_steps, seed=config.seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": {"pi": list(actor.config["hidden_sizes"]),
                                            "qf": list(config.critic_hidden_sizes)},
                               "activation_fn": ACTIVATIONS[actor.config["activation"]]},
            )
            actor_into_sac(actor, self.sac)
        else:
            self.sac.set_env(env)
        updates_before = int(self.sac._n_updates)
        was_training = model.training
        model.eval()
        try:
            self.sac.learn(total_timesteps=config.total_steps * config.rollouts, reset_num_timesteps=False,
                           callback=None if stop is None else _StopWhen(stop))
        finally:
            model.train(was_training)
        self.cost_scale = env.cost_scale
        actor_from_sac(self.sac, actor)
        return MbpoHistory(model_steps=env.steps_taken, transitions=env.steps_taken * env.num_envs,
                           gradient_steps=int(self.sac._n_updates) - updates_before,
                           cost_scale=env.cost_scale or 1.0, seconds=time.perf_counter() - started)


class _StopWhen(BaseCallback):
    """Ends SAC's learn() (its step callback returns False) once ``stop()`` is true."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        return not self.stop()


def train_mbpo(actor: Actor, model: DynamicsModel, cost: TaskCost, sampler: StartSampler,
               config: MbpoConfig) -> MbpoHistory:
    """One round from scratch (a new SAC started from ``actor``): improve ``actor`` in place."""
    return MbpoLearner(actor, config).train(model, cost, sampler)
