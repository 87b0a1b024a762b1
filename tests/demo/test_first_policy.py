"""When the demo starts evaluating under a learned policy (issue 12): the policy alone waits for one; a planner
with the policy as prior also starts when the trainer's first round deployed none (it plans without a prior until
one passes the trainer's checks, decide_prior)."""

from __future__ import annotations

from mbrl_ros.demo.run import policy_settled


class Seen:
    """What StackWatcher reports: the controller's policy version, the trainer's diagnostics."""

    def __init__(self, policy_version: int, trainer: dict[str, str]) -> None:
        self.version, self.trainer = policy_version, trainer

    def policy_version(self) -> int:
        return self.version

    def node_status(self, node: str) -> dict[str, str]:
        return self.trainer if node == "trainer" else {}


def test_a_planner_with_a_prior_starts_without_one_once_the_first_round_rejected_it():
    assert not policy_settled(Seen(0, {}), "mppi")  # no round yet
    assert not policy_settled(Seen(0, {"policy_rounds": "0"}), "mppi")
    # accepted: on its way to the controller (the dynamics_server checks and latches it): wait for it
    assert not policy_settled(Seen(0, {"policy_rounds": "1", "policy_last_decision": "accepted"}), "mppi")
    assert policy_settled(Seen(1, {"policy_rounds": "1", "policy_last_decision": "accepted"}), "mppi")
    for decision in ("rejected", "failed"):
        assert policy_settled(Seen(0, {"policy_rounds": "1", "policy_last_decision": decision}), "cem")
        # the policy alone has nothing to drive with until a policy arrives
        assert not policy_settled(Seen(0, {"policy_rounds": "1", "policy_last_decision": decision}), "policy")
    assert policy_settled(Seen(1, {}), "policy")


def test_after_n_policy_rounds_the_demo_waits_for_the_last_rounds_policy_to_reach_the_controller():
    """--policy-rounds N: evaluation starts after the trainer's N-th policy round (learned on the controller's
    episodes too), once what it deployed has reached the controller."""
    assert not policy_settled(Seen(1, {"policy_rounds": "1", "policy_last_decision": "accepted",
                                       "policy_last_candidate_version": "1"}), "mppi", 2)  # v1 came: not enough
    second = {"policy_rounds": "2", "policy_last_decision": "accepted", "policy_last_candidate_version": "2"}
    assert not policy_settled(Seen(1, second), "mppi", 2)  # v2 on its way
    assert policy_settled(Seen(2, second), "mppi", 2)
    for decision in ("rejected", "failed"):  # the planner goes on with v1 (or none)
        assert policy_settled(Seen(1, {"policy_rounds": "2", "policy_last_decision": decision}), "mppi", 2)
        assert policy_settled(Seen(0, {"policy_rounds": "2", "policy_last_decision": decision}), "mppi", 2)
        assert not policy_settled(Seen(0, {"policy_rounds": "2", "policy_last_decision": decision}), "policy", 2)
        assert policy_settled(Seen(1, {"policy_rounds": "3", "policy_last_decision": decision}), "policy", 2)


def test_more_policy_rounds_than_the_trainer_runs_on_its_own_is_refused_before_the_stack_starts(tmp_path):
    """Without trainer.policy_retrain_every the trainer learns the policy again only on a new model: a demo
    waiting for a second round could wait for ever; it says what to set instead, before starting anything."""
    import pytest

    from mbrl_ros.demo.run import run_demo

    with pytest.raises(ValueError, match=r"2 policy rounds: .* set trainer.policy_retrain_every .*car_race.yaml"):
        run_demo("car", "race", controller="policy", policy_rounds=2, out_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run" / "stack.log").exists()
