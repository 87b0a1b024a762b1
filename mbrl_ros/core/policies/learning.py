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
   copy of it is the candidate; with ``policy.candidates: N``, N actors (each its
   own seed) are trained in turn and those better than the reference on every held-out
   set are decided on (4, 5), the lowest closed-loop cost on the held-out starts first,
   until one is accepted (every candidate's costs are in ``PolicyRound.candidates``); where
   none is, every actor trains on and is decided on again, up to ``policy.attempts`` times;
4. ``decide_policy`` scores candidate and deployed policy (for the first policy:
   ``first_reference``, the robot's stop in the trainer, else the constant action
   at the centre of the bounds) in closed loop on the same
   model from the held-out states; only a better, finite candidate is accepted;
5. with ``prior_planner`` (the controller's planner, where it samples around the policy) and
   ``validation.prior_starts`` > 0, ``decide_prior`` then drives that planner on the model for
   ``validation.prior_steps`` with the candidate as prior and with the deployed policy (or none): a candidate
   it does worse with is rejected (with ``success``, the task's criterion: it succeeds in fewer episodes, or in
   as many at a higher cost).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import torch

from mbrl_ros.core.costs import TrajectoryCost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.models.base import DynamicsModel
from mbrl_ros.core.policies.actor import Actor, ConstantPolicy
from mbrl_ros.core.policies.config import PolicyConfig
from mbrl_ros.core.policies.rollouts import PolicyFn, StartSampler, TaskCost
from mbrl_ros.core.policies.shac import ShacLearner
from mbrl_ros.core.policies.validation import (HeldOutStates, PolicyDecision, Success, closed_loop_costs,
                                                 decide_policy, decide_prior, worse_sets)
from mbrl_ros.core.retraining import validation_split

__all__ = ["CandidateScore", "PolicyData", "PolicyLearner", "PolicyRound", "best_candidate", "ranked_candidates", "continued_episodes", "final_state_goals",
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

        def began_in(part: TransitionDataset) -> torch.Tensor:
            began = torch.tensor([episode not in continued for episode, _, _ in part.episodes()], dtype=torch.bool)
            return began if bool(began.any()) else torch.ones_like(began)

        began, held_began = began_in(train), began_in(val)
        start_contexts = _episode_contexts(train, episode_contexts, rows=False)
        held_contexts = _episode_contexts(val, episode_contexts, rows=False)
        return cls(
            train_states=train.states,
            train_contexts=_episode_contexts(train, episode_contexts, rows=True),
            held_out=[
                # The held-out starts are where held-out episodes began too: a piece the log only cut starts
                # mid-drive (crossed with every held-out goal, a third of the demo's held-out tasks were such).
                HeldOutStates("starts", val.states[_first_rows(val)[held_began]],
                              None if held_contexts is None else held_contexts[held_began]),
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
class CandidateScore:
    """One candidate actor of a round: its seed and its mean closed-loop cost on each held-out set."""

    index: int
    seed: int
    cost: dict[str, float]


@dataclass
class PolicyRound:
    """A round's outcome: the candidate kept, the decision, what training did, every candidate's score."""

    actor: Actor
    decision: PolicyDecision
    method: str
    history: object  # ShacHistory or MbpoHistory of the kept candidate
    seconds: float
    candidates: list[CandidateScore] = field(default_factory=list)  # of the round's last attempt
    chosen: int = 0  # index of the kept candidate in ``candidates``
    attempts: int = 1  # times the lineages were trained this round (``policy.attempts``)

    def metrics(self) -> dict[str, float]:
        out = self.decision.metrics()
        out["train_seconds"] = self.seconds
        out["attempts"] = float(self.attempts)
        if len(self.candidates) > 1:
            out["candidates"] = float(len(self.candidates))
            out["chosen_candidate"] = float(self.chosen)
        return out


def ranked_candidates(scores: Sequence[CandidateScore], selection: str, reference: Mapping[str, float] | None = None,
                      min_improvement: float = 0.0) -> list[int]:
    """The indices of the candidates that beat ``reference`` (the reference policy's cost per held-out set) on every
    set, as the decision needs, cheapest on the held-out set ``selection`` first; where none does (or no reference
    is given), the cheapest of all alone. A non-finite cost is never preferred; a tie: the lower index."""
    def key(k: int) -> tuple[float, int]:
        value = scores[k].cost[selection]
        return (value if math.isfinite(value) else math.inf, k)
    passing = [k for k, s in enumerate(scores) if reference is not None and all(map(math.isfinite, s.cost.values()))
               and not worse_sets(s.cost, reference, min_improvement)]
    return sorted(passing, key=key) or [min(range(len(scores)), key=key)]


def best_candidate(scores: Sequence[CandidateScore], selection: str, reference: Mapping[str, float] | None = None,
                   min_improvement: float = 0.0) -> int:
    """The first of ``ranked_candidates``: the cheapest on ``selection`` of those that beat ``reference``."""
    return ranked_candidates(scores, selection, reference, min_improvement)[0]


class _Lineage:
    """One candidate's actor and learner (critic or SAC), carried over from round to round."""

    def __init__(self, index: int, seed: int) -> None:
        self.index, self.seed = index, seed
        self.actor: Actor | None = None
        self.learner = None


class PolicyLearner:
    """Learns one policy over many rounds (a trainer holds one).

    ``config.candidates`` lineages, lineage i seeded with the method's seed + i (exactly the learner
    ``candidates: 1`` with that seed would be). Each lineage's actor and its critic (SHAC) or SAC (MBPO) carry
    over from round to round whether or not a round's candidate was deployed: learning a policy takes
    more updates than one round, and a rejected candidate is not wasted work. Each round trains every lineage
    in turn (in the caller's thread: the round takes that many times as long, at the same CPU share), scores
    each one's actor in closed loop on every held-out set, and decides on those that beat the reference (the
    deployed policy, else the first reference) on every set, the lowest cost on the first set
    (``PolicyData.from_dataset``'s ``starts``: the task's start distribution) first, until one is accepted
    (``ranked_candidates``; the prior's check rejected a round's cheapest where another candidate may pass); none
    accepted, it trains every lineage on and decides again, up to ``policy.attempts`` times. The first round starts each lineage from the deployed actor if its
    settings match, else from a fresh one whose normaliser is fitted on that round's training states (and
    kept after). A lineage whose actor becomes non-finite starts afresh at the next round.
    """

    def __init__(self, config: PolicyConfig, action_low, action_high,
                 first_reference: tuple[PolicyFn, str] | None = None,
                 prior_planner: tuple[Callable[[DynamicsModel], object], str] | None = None,
                 success: Success | None = None) -> None:
        """``first_reference``: (policy, name) a first policy must beat where none is deployed: the robot's stop
        (``StopPolicy``) in the trainer; default, the constant action at the centre of the bounds.
        ``prior_planner``: (make_planner(model) -> a planner, its name) where the controller's planner samples
        around the policy: a candidate must not leave it worse off (``decide_prior``). ``success``: the task's
        success criterion that check counts (the robot's ``success_criteria()[validation.success]``)."""
        if config.validation.success and success is None and prior_planner is not None:
            raise ValueError(f"policy.validation.success is {config.validation.success!r} but no success criterion "
                             "was given to check the prior by")
        self.config = config
        self.success = success
        self.prior_planner = prior_planner
        self.action_low, self.action_high = action_low, action_high
        self.first_reference = first_reference
        seed = config.shac.seed if config.method == "shac" else config.mbpo.seed
        self.lineages = [_Lineage(i, seed + i) for i in range(config.candidates)]
        self.chosen = 0  # the lineage of the last round's kept candidate
        self.rounds = 0

    @property
    def actor(self) -> Actor | None:
        """The actor of the lineage whose candidate the last round kept."""
        return self.lineages[self.chosen].actor

    @property
    def learner(self):
        """That lineage's ShacLearner or MbpoLearner."""
        return self.lineages[self.chosen].learner

    def _start(self, lineage: _Lineage, model: DynamicsModel, data: PolicyData, deployed: Actor | None) -> None:
        # The actor's first weights from the lineage's seed: drawn from the process's RNG wherever it happened to
        # be, they changed with what other threads had drawn before (the trainer's callbacks validate models
        # with random probes), and so did the policy: a test's first round beat the stop in one run, not the next.
        torch.manual_seed(lineage.seed)
        actor = new_actor(self.config, model.state_dim, model.action_dim, self.action_low, self.action_high,
                          data.train_states, data.train_contexts)
        if deployed is not None and deployed.config == actor.config:
            actor = copy.deepcopy(deployed).train()
        if self.config.method == "shac":
            lineage.learner = ShacLearner(actor, replace(self.config.shac, seed=lineage.seed),
                                          self.config.actor.activation)
        else:
            from mbrl_ros.core.policies.mbpo import MbpoLearner  # stable-baselines3 only when asked for

            lineage.learner = MbpoLearner(actor, replace(self.config.mbpo, seed=lineage.seed))
        lineage.actor = actor

    def round(self, model: DynamicsModel, cost: TrajectoryCost, data: PolicyData,
              deployed: Actor | None = None, stop: Callable[[], bool] | None = None) -> PolicyRound:
        """Train every lineage on ``model`` from ``data``'s training states and decide on their candidates against
        ``deployed``, the cheapest on the held-out starts first, until one is accepted; where none is, train every
        lineage on and decide again, up to ``policy.attempts`` times in all. ``stop()`` true (a shutdown) cuts the
        training short; the caller then discards the round."""
        started = time.perf_counter()
        config = self.config
        if (config.context is None) != (data.train_contexts is None):
            raise ValueError(f"policy.context is {config.context!r} but the data "
                             f"{'has no' if data.train_contexts is None else 'has'} contexts")
        task = TaskCost(cost, config.context)
        v = config.validation
        # The first set (the held-out starts) selects among candidates and checks the prior: crossed with every
        # held-out context where the config says the task's starts and goals are independent.
        held_out = [(h.crossed() if v.cross_contexts and i == 0 else h).subset(v.max_starts)
                    for i, h in enumerate(data.held_out)]
        if not held_out or any(h.states.shape[0] == 0 for h in held_out):
            raise ValueError("policy validation needs at least one non-empty set of held-out states")
        reference, name = deployed, "deployed policy"
        if reference is None and self.first_reference is not None:
            reference, name = self.first_reference
        elif reference is None:
            reference = ConstantPolicy(((torch.as_tensor(self.action_low, dtype=torch.float32)
                                         + torch.as_tensor(self.action_high, dtype=torch.float32)) / 2).tolist())
            name = "constant action at the centre of the bounds"
        # Among several, those the decision would accept, the cheapest on the held-out starts first: the cheapest
        # there can still lose to the reference elsewhere (a stack run: 12.46 on the starts, 330.8 against the
        # stop's 300.4 on visited states, where the other two beat the stop on both).
        reference_costs = None if config.candidates == 1 else {
            h.name: float(closed_loop_costs(reference, model, task, h, v.steps).mean()) for h in held_out}
        baseline: dict = {}  # the prior's planner without the candidate: the same for every candidate of the round
        rejected: list[str] = []
        for attempt in range(1, config.attempts + 1):
            trained, scores, broken = self._train(model, task, data, held_out, deployed, stop)
            for chosen in ranked_candidates(scores, held_out[0].name, reference_costs, v.min_improvement):
                candidate, history = trained[chosen]
                if scores[chosen].cost[held_out[0].name] == math.inf and broken:
                    decision = PolicyDecision(False, "; ".join(broken))
                else:
                    self.chosen = scores[chosen].index
                    decision = self._decide(candidate, reference, name, deployed, model, task, held_out, baseline)
                    if len(scores) > 1:
                        decision.reason = (f"candidate {chosen} of {len(scores)} (seed {scores[chosen].seed}; "
                                           f"{held_out[0].name} costs {candidate_costs(scores, held_out[0].name)}) "
                                           f"{decision.reason}")
                if decision.accept:
                    break
                rejected.append(f"attempt {attempt}: {decision.reason}" if config.attempts > 1 else decision.reason)
            if decision.accept or attempt == config.attempts or (stop is not None and stop()):
                break
        # Every candidate decided on before the last decision, and why it was rejected.
        earlier = rejected if decision.accept else rejected[:-1]
        decision.reason = ((f"attempt {attempt} of at most {config.attempts}: " if config.attempts > 1 else "")
                           + decision.reason + (f" (rejected before: {'; '.join(earlier)})" if earlier else ""))
        return PolicyRound(candidate, decision, config.method, history, time.perf_counter() - started,
                           scores, chosen, attempt)

    def _train(self, model: DynamicsModel, task: TaskCost, data: PolicyData, held_out: list[HeldOutStates],
               deployed: Actor | None, stop: Callable[[], bool] | None) -> tuple[list[tuple[Actor, object]], list[CandidateScore], list[str]]:
        """Train every lineage once more (``stop()``: cut short after the first), each candidate scored in closed
        loop on every held-out set. -> (candidate actor and training history, its score, what broke) per lineage."""
        config, v = self.config, self.config.validation
        # SHAC's episodes start where the task's episodes start; MBPO branches from every logged state.
        starts, contexts = data.start_states(config.shac.starts if config.method == "shac" else "logged_states")
        trained: list[tuple[Actor, object]] = []
        scores: list[CandidateScore] = []
        broken: list[str] = []
        for lineage in self.lineages:
            if stop is not None and stop() and trained:
                break
            if lineage.learner is None:
                self._start(lineage, model, data, deployed)
            sampler = StartSampler(starts, contexts, seed=lineage.seed + self.rounds)
            history = lineage.learner.train(model, task, sampler, stop=stop)
            candidate = copy.deepcopy(lineage.actor).eval()
            bad = [n for n, t in candidate.state_dict().items()
                   if t.is_floating_point() and not bool(torch.isfinite(t).all())]
            if bad:
                broken.append(f"candidate {lineage.index} (seed {lineage.seed}) has non-finite weights {bad}; "
                              "its learner starts afresh")
                lineage.learner = lineage.actor = None
                cost_by_set = {h.name: math.inf for h in held_out}
            else:
                cost_by_set = {h.name: float(closed_loop_costs(candidate, model, task, h, v.steps).mean())
                               for h in held_out}
            trained.append((candidate, history))
            scores.append(CandidateScore(lineage.index, lineage.seed, cost_by_set))
        self.rounds += 1
        return trained, scores, broken

    def _decide(self, candidate: Actor, reference: PolicyFn, name: str, deployed: Actor | None,
                model: DynamicsModel, task: TaskCost, held_out: list[HeldOutStates], baseline: dict) -> PolicyDecision:
        """``decide_policy`` against ``reference``, then, where the controller's planner samples around the policy,
        ``decide_prior`` (``baseline``: its memo of the planner's episodes without the candidate)."""
        v = self.config.validation
        decision = decide_policy(candidate, reference, model, task, held_out, v.steps, v.min_improvement,
                                 reference_name=name)
        if not decision.accept or self.prior_planner is None or v.prior_starts <= 0:
            return decision
        make_planner, planner_name = self.prior_planner
        as_prior = decide_prior(candidate, deployed, make_planner, model, task, held_out[0].subset(v.prior_starts),
                                v.prior_steps or v.steps, planner_name, alone_ratio=v.prior_alone_ratio,
                                success=self.success, alone_success=v.prior_alone_success, baseline=baseline)
        return PolicyDecision(as_prior.accept, f"{decision.reason}; {as_prior.reason}",
                              {**decision.candidate, **as_prior.candidate}, {**decision.reference, **as_prior.reference})


def candidate_costs(scores: Sequence[CandidateScore], selection: str) -> str:
    """``"14.18, 15.73, ..."``: each candidate's cost on ``selection``, in candidate order."""
    return ", ".join(f"{s.cost[selection]:.4g}" for s in scores)


def train_policy(config: PolicyConfig, model: DynamicsModel, cost: TrajectoryCost, data: PolicyData,
                 action_low, action_high, deployed: Actor | None = None) -> PolicyRound:
    """One round of a new learner: train a candidate by ``config.method``, decide whether it beats ``deployed``."""
    return PolicyLearner(config, action_low, action_high).round(model, cost, data, deployed)
