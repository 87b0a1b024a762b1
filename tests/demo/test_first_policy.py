"""When the demo starts evaluating under a learned policy (issue 12): the policy alone waits for one; a planner
with the policy as prior also starts when the trainer's first round deployed none (it plans without a prior until
one passes the trainer's checks, decide_prior)."""

from __future__ import annotations

from mbrl_ros.demo.run import first_policy_settled


class Seen:
    """What StackWatcher reports: the controller's policy version, the trainer's diagnostics."""

    def __init__(self, policy_version: int, trainer: dict[str, str]) -> None:
        self.version, self.trainer = policy_version, trainer

    def policy_version(self) -> int:
        return self.version

    def node_status(self, node: str) -> dict[str, str]:
        return self.trainer if node == "trainer" else {}


def test_a_planner_with_a_prior_starts_without_one_once_the_first_round_rejected_it():
    assert not first_policy_settled(Seen(0, {}), "mppi")  # no round yet
    assert not first_policy_settled(Seen(0, {"policy_rounds": "0"}), "mppi")
    # accepted: on its way to the controller (the dynamics_server checks and latches it): wait for it
    assert not first_policy_settled(Seen(0, {"policy_rounds": "1", "policy_last_decision": "accepted"}), "mppi")
    assert first_policy_settled(Seen(1, {"policy_rounds": "1", "policy_last_decision": "accepted"}), "mppi")
    for decision in ("rejected", "failed"):
        assert first_policy_settled(Seen(0, {"policy_rounds": "1", "policy_last_decision": decision}), "cem")
        # the policy alone has nothing to drive with until a policy arrives
        assert not first_policy_settled(Seen(0, {"policy_rounds": "1", "policy_last_decision": decision}), "policy")
    assert first_policy_settled(Seen(1, {}), "policy")
