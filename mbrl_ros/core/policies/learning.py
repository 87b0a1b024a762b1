"""One policy training round, without ROS: data, method, validation, decision.

``PolicyLearner.round`` is what a trainer calls each round with the deployed
model, the task cost (``build_cost`` of the controller's ``cost:`` section), the
logged data and the deployed policy (``train_policy``: one round of a new learner):

1. ``PolicyData.from_dataset`` splits the logged episodes as the model trainer
   does (``validation_split``: whole episodes, by a hash of each one's first transition), so the
   held-out episodes are ones neither the model nor the policy was fitted on;
2. the learner's actor (the deployed one at the first round, or a fresh one whose
   feature normaliser is fitted on the training states) and its critic or SAC
   carry over between rounds;
3. ``shac`` or ``mbpo`` improves it on rollouts from the training states, and a
   copy of it is the candidate;
4. ``decide_policy`` scores candidate and deployed policy (for the first policy:
   ``first_reference``, the robot's stop in the trainer, else the constant action
   at the centre of the bounds) in closed loop on the same
   model from the held-out states; only a better, finite candidate is accepted.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.policies.actor import Actor, ConstantPolicy
from mbrl_ros.core.policies.config import PolicyConfig
from mbrl_ros.core.policies.rollouts import PolicyFn, StartSampler, TaskCost
from mbrl_ros.core.policies.shac import ShacLearner
from mbrl_ros.core.policies.validation import HeldOutStates, PolicyDecision, decide_policy
from mbrl_ros.core.retraining import validation_split

__all__ = ["PolicyData", "PolicyLearner", "PolicyRound", "continued_episodes", "final_state_goals",
           "logged_or_final_goals", "new_actor", "train_policy"]


def final_state_goals(dataset: TransitionDataset) -> dict[int, list[float]]:
    """Each episode's last logged state as its goal (hindsight relabelling, HER's 'final' strategy).

    Logged episodes record where the robot went, not always the goal it was given;
    every reached state is a goal the episode achieved, so a goal-conditioned policy can
    learn from any logged driving. For a cost whose ``goal`` context is a state vector.
    """
    return {episode: dataset.next_states[end - 1].tolist() for episode, _, end in dataset.episodes()}


def logged_or_final_goals(dataset: TransitionDataset, logged: Mapping[int, Sequence[float] | None]
                          ) -> tuple[dict[int, list[float]], dict[str, int]]:
    """Each episode's logged goal (``logged``: episode id -> the goal it was given, None or absent where
    none was logged), else its last state (``final_state_goals``). -> (goals, how many episodes took
    each: ``{"logged": n, "final_state": m}``).

    The task's goals where the log has them: random exploration ends near where it started, so
    final states alone teach a policy goals unlike the task's (parking spots 10-20 m away).
    """
    final = final_state_goals(dataset)
    goals, counts = {}, {"logged": 0, "final_state": 0}
    for episode, goal in final.items():
        given = logged.get(episode)
        if given is not None:
            if len(given) != len(goal):
                raise ValueError(f"policy data: episode {episode}'s logged goal has {len(given)} values, a state "
                                 f"(the final-state goal) {len(goal)}")
            goal = [float(v) for v in given]
        goals[episode] = goal
        counts["logged" if given is not None else "final_state"] += 1
    return goals, counts


def continued_episodes(dataset: TransitionDataset, contexts: Mapping[int, Sequence[float]] | None) -> set[int]:
    """Episodes (ids) whose context (logged goal) is the one of the episode stored just before them: the log
    cut one episode of the task there (the data_logger's bag splits, a dropped transition), it did not begin
    one. Without contexts (or with final-state goals, each its own) every episode began where it starts."""
    if contexts is None:
        return set()
    continued, previous = set(), None
    for episode, _, _ in dataset.episodes():
        context = None if contexts.get(episode) is None else [float(v) for v in contexts[episode]]
        if context is not None and context == previous:
            continued.add(episode)
        previous = context
    return continued


def _episode_contexts(dataset: TransitionDataset, contexts: Mapping[int, Sequence[float]] | None,
                      rows: bool) -> torch.Tensor | None:
    """Per row (``rows``) or per episode: the context of each row's or episode's id."""
    if contexts is None:
        return None
    out = []
    for episode, first, end in dataset.episodes():
        if episode not in contexts:
            raise ValueError(f"policy data: no context (goal) for episode {episode}")
        value = torch.as_tensor(contexts[episode], dtype=dataset.dtype).reshape(1, -1)
        out.append(value.expand(end - first if rows else 1, -1))
    return torch.cat(out)


def _first_rows(dataset: TransitionDataset) -> torch.Tensor:
    """The row of each episode's first state."""
    return torch.tensor([first for _, first, _ in dataset.episodes()], dtype=torch.long)


@dataclass
class PolicyData:
    """States (and contexts) to train from, and held-out sets to validate on.

    ``train_states``: every logged state of the training episodes, each with its episode's context
    (the actor's normaliser is fitted on them; MBPO branches its model rollouts from them).
    ``episode_starts``: the first states of the training episodes that began there (not of those the log
    only cut: ``continued_episodes``), each with its episode's context (where SHAC's episodes start: the
    task's own start distribution, see ``ShacConfig.starts``).
    """

    train_states: torch.Tensor
    train_contexts: torch.Tensor | None
    held_out: list[HeldOutStates]
    episode_starts: torch.Tensor | None = None
    episode_start_contexts: torch.Tensor | None = None

    @classmethod
    def from_dataset(cls, dataset: TransitionDataset, val_fraction: float = 0.2, seed: int = 0,
                     episode_contexts: Mapping[int, Sequence[float]] | None = None) -> "PolicyData":
        """Whole episodes split as the model trainer splits them; ``episode_contexts``: episode id -> goal."""
        train, val = validation_split(dataset, val_fraction, seed)
        # Where the task's episodes began: not where the log merely cut one (a bag split, a dropped
        # transition), which goes on under the goal of the episode before it.
        continued = continued_episodes(dataset, episode_contexts)
        began = torch.tensor([episode not in continued for episode, _, _ in train.episodes()])
        if not bool(began.any()):
            began[:] = True
        start_contexts = _episode_contexts(train, episode_contexts, rows=False)
        return cls(
            train_states=train.states,
            train_contexts=_episode_contexts(train, episode_contexts, rows=True),
            held_out=[
                HeldOutStates("starts", val.states[_first_rows(val)], _episode_contexts(val, episode_contexts, rows=False)),
                HeldOutStates("visited", val.states, _episode_contexts(val, episode_contexts, rows=True)),
            ],
            episode_starts=train.states[_first_rows(train)[began]],
            episode_start_contexts=None if start_contexts is None else start_contexts[began],
        )

    def start_states(self, starts: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Where training rollouts start: ``episode_starts`` or every logged state (``logged_states``)."""
        if starts == "logged_states":
            return self.train_states, self.train_contexts
        if self.episode_starts is None:
            raise ValueError("policy.shac.starts is 'episode_starts' but the policy data has no episode starts "
                             "(build it with PolicyData.from_dataset)")
        return self.episode_starts, self.episode_start_contexts


def new_actor(config: PolicyConfig, state_dim: int, action_dim: int, action_low, action_high,
              states: torch.Tensor, contexts: torch.Tensor | None = None, where: str = "policy.actor") -> Actor:
    """A fresh actor for ``config.actor``, its normaliser fitted on ``states`` (and ``contexts``)."""
    context_dim = 0 if contexts is None else contexts.shape[1]
    try:
        actor = Actor(state_dim, action_dim, action_low, action_high, context_dim=context_dim,
                      **config.actor.as_dict())
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    actor.fit_normaliser(states, contexts)
    return actor


@dataclass
class PolicyRound:
    """A round's outcome: the candidate, the decision, what training did."""

    actor: Actor
    decision: PolicyDecision
    method: str
    history: object  # ShacHistory or MbpoHistory
    seconds: float

    def metrics(self) -> dict[str, float]:
        out = self.decision.metrics()
        out["train_seconds"] = self.seconds
        return out


class PolicyLearner:
    """Learns one policy over many rounds (a trainer holds one).

    The learner's own actor and its critic (SHAC) or SAC (MBPO) carry over from round
    to round whether or not a round's candidate was deployed: learning a policy takes
    more updates than one round, and a rejected candidate is not wasted work. The first
    round starts from the deployed actor if its settings match, else from a fresh one
    whose normaliser is fitted on that round's training states (and kept after).
    A learner whose actor becomes non-finite starts afresh at the next round.
    """

    def __init__(self, config: PolicyConfig, action_low, action_high,
                 first_reference: tuple[PolicyFn, str] | None = None) -> None:
        """``first_reference``: (policy, name) a first policy must beat where none is deployed: the robot's stop
        (``StopPolicy``) in the trainer; default, the constant action at the centre of the bounds."""
        self.config = config
        self.action_low, self.action_high = action_low, action_high
        self.first_reference = first_reference
        self.actor: Actor | None = None
        self.learner = None
        self.rounds = 0

    def _start(self, model: DynamicsModel, data: PolicyData, deployed: Actor | None) -> None:
        # The actor's first weights from the method's seed: drawn from the process's RNG wherever it happened to
        # be, they changed with what other threads had drawn before (the trainer's callbacks validate models
        # with random probes), and so did the policy: a test's first round beat the stop in one run, not the next.
        torch.manual_seed(self.config.shac.seed if self.config.method == "shac" else self.config.mbpo.seed)
        actor = new_actor(self.config, model.state_dim, model.action_dim, self.action_low, self.action_high,
                          data.train_states, data.train_contexts)
        if deployed is not None and deployed.config == actor.config:
            actor = copy.deepcopy(deployed).train()
        if self.config.method == "shac":
            self.learner = ShacLearner(actor, self.config.shac, self.config.actor.activation)
        else:
            from mbrl_ros.core.policies.mbpo import MbpoLearner  # stable-baselines3 only when asked for

            self.learner = MbpoLearner(actor, self.config.mbpo)
        self.actor = actor

    def round(self, model: DynamicsModel, cost: TrajectoryCost, data: PolicyData,
              deployed: Actor | None = None, stop: Callable[[], bool] | None = None) -> PolicyRound:
        """Train on ``model`` from ``data``'s training states; validate a copy against ``deployed``.
        ``stop()`` true (a shutdown) cuts the training short; the caller then discards the round."""
        started = time.perf_counter()
        config = self.config
        if (config.context is None) != (data.train_contexts is None):
            raise ValueError(f"policy.context is {config.context!r} but the data "
                             f"{'has no' if data.train_contexts is None else 'has'} contexts")
        if self.learner is None:
            self._start(model, data, deployed)
        task = TaskCost(cost, config.context)
        seed = (config.shac.seed if config.method == "shac" else config.mbpo.seed) + self.rounds
        # SHAC's episodes start where the task's episodes start; MBPO branches from every logged state.
        starts, contexts = data.start_states(config.shac.starts if config.method == "shac" else "logged_states")
        history = self.learner.train(model, task, StartSampler(starts, contexts, seed=seed), stop=stop)
        self.rounds += 1
        candidate = copy.deepcopy(self.actor).eval()
        bad = [n for n, t in candidate.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            self.learner = self.actor = None
            decision = PolicyDecision(False, f"candidate has non-finite weights {bad}; the learner starts afresh")
        else:
            reference, name = deployed, "deployed policy"
            if reference is None and self.first_reference is not None:
                reference, name = self.first_reference
            elif reference is None:
                reference = ConstantPolicy(((candidate.action_low + candidate.action_high) / 2).tolist())
                name = "constant action at the centre of the bounds"
            v = config.validation
            decision = decide_policy(candidate, reference, model, task, [h.subset(v.max_starts) for h in data.held_out],
                                     v.steps, v.min_improvement, reference_name=name)
        return PolicyRound(candidate, decision, config.method, history, time.perf_counter() - started)


def train_policy(config: PolicyConfig, model: DynamicsModel, cost: TrajectoryCost, data: PolicyData,
                 action_low, action_high, deployed: Actor | None = None) -> PolicyRound:
    """One round of a new learner: train a candidate by ``config.method``, decide whether it beats ``deployed``."""
    return PolicyLearner(config, action_low, action_high).round(model, cost, data, deployed)
