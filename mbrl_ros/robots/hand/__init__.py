"""The hand: the Shadow dexterous hand (24 joints, 20 position actuators), as HandReach models it.

State: the joints' positions (rad), their velocities (rad/s) and the five
fingertip positions (m, world frame, thumb last), from joint states and
fingertip poses of one stamp (``estimator``); per task (the config's ``state_names``
and the estimator's ``fingertips`` and ``block``) without the fingertips and with a held
block's pose and twist (``estimator.BLOCK_STATE_NAMES``; rotate); physics prior: each joint a linear second-order lag
toward its actuator's target, fingertips by the hand's kinematics (``joint_lag``, ``kinematics``;
identified by ``sysid``); cost terms: fingertip targets, the block's orientation and
its place in the palm (``costs``); stop: hold the measured joint positions (``stop``); ROS side: joint states and fingertip poses (``messages``).
Drivers: ``sim_hand``, ``real_hand``, ``hand_emulator`` (``mbrl_ros_hardware.hand``);
config: ``config/hand.yaml`` and ``hand_<task>.yaml``.
"""

from __future__ import annotations

from typing import Any, Mapping

from mbrl_ros.robots.robot import Robot

__all__ = ["ACTUATORS", "FINGERTIPS", "JOINTS", "ROBOT", "Hand", "fingertip_state_names"]

JOINTS = ("WRJ1", "WRJ0", "FFJ3", "FFJ2", "FFJ1", "FFJ0", "MFJ3", "MFJ2", "MFJ1", "MFJ0", "RFJ3", "RFJ2", "RFJ1",
          "RFJ0", "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0", "THJ4", "THJ3", "THJ2", "THJ1", "THJ0")
ACTUATORS = ("A_WRJ1", "A_WRJ0", "A_FFJ3", "A_FFJ2", "A_FFJ1", "A_MFJ3", "A_MFJ2", "A_MFJ1", "A_RFJ3", "A_RFJ2",
             "A_RFJ1", "A_LFJ4", "A_LFJ3", "A_LFJ2", "A_LFJ1", "A_THJ4", "A_THJ3", "A_THJ2", "A_THJ1", "A_THJ0")
FINGERTIPS = ("ff", "mf", "rf", "lf", "th")  # HandReach's order of fingertip sites


def fingertip_state_names() -> list[str]:
    return [f"{tip}_tip_{axis}" for tip in FINGERTIPS for axis in "xyz"]


class Hand(Robot):
    name = "hand"
    state_names = (*JOINTS, *(f"{j}_vel" for j in JOINTS), *fingertip_state_names())
    state_units = ("rad",) * len(JOINTS) + ("rad/s",) * len(JOINTS) + ("m",) * 3 * len(FINGERTIPS)
    action_names = ACTUATORS
    action_units = ("1",) * len(ACTUATORS)

    def physics_prior(self, options: dict, where: str):
        """The lagged joints and kinematics: ``params`` (JointLagParams: per name a number or 24), ``dt``,
        ``fingertip_lag`` (s the fingertips are measured before the joints: HandReach 0.002), ``distal_tendon``
        (true: the distal joints move only where their tendon pushes them, ``joint_lag.TENDON_SLACK``), ``learnable``."""
        from mbrl_ros.core.models import check_keys
        from mbrl_ros.robots.hand.joint_lag import JointLagParams, LaggedJoints

        options = dict(options)
        check_keys(options, {"params", "dt", "fingertip_lag", "distal_tendon", "learnable"}, where)
        params = JointLagParams.from_dict(options.pop("params", {}) or {}, source=f"{where}.params",
                                          dt=float(options.get("dt", 0.04)))
        try:
            return LaggedJoints(params, **options)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None

    def model_kinds(self, state_names=None) -> tuple[str, ...]:
        """The prior knows the joints and the fingertips (the state ``state_names`` of this class, reach's):
        a task whose state holds anything else (rotate: the block) runs the ensemble only."""
        if state_names is not None and list(state_names) != list(self.state_names):
            return ("ensemble",)
        return super().model_kinds()

    def identify(self, model, states, actions, next_states):
        """Each joint's six parameters by linear least squares (``sysid.identify_joint_lag``), at ``model``'s
        ``dt`` and ``fingertip_lag``."""
        from mbrl_ros.robots.hand.sysid import identify_joint_lag

        return identify_joint_lag(states, actions, next_states, dt=model.dt, fingertip_lag=model.fingertip_lag,
                                  initial=model.params, distal_tendon=model.distal_tendon)

    def cost_terms(self) -> dict:
        from mbrl_ros.robots.hand.costs import BlockOrientationTerm, BlockPositionTerm, FingertipTargetTerm

        return {term.kind: term for term in (FingertipTargetTerm, BlockOrientationTerm, BlockPositionTerm)}

    def planner_proposal(self, section, source: str = "config: proposal"):
        """``type: reach``: the held targets whose steady state through the prior is the goal (``proposal``)."""
        if not section:
            return None
        if section.get("type") != "reach":
            raise ValueError(f"{source}: type: the hand's proposal is 'reach', got {section.get('type')!r}")
        from mbrl_ros.robots.hand.proposal import ReachProposal

        return ReachProposal.from_config(section, source)

    def stop(self, params: Mapping[str, Any], source: str):
        """Hold the joints at their last measured positions (``stop.HoldJoints``)."""
        from mbrl_ros.robots.hand.stop import CTRL_RANGE, HoldJoints

        state_names, action_names = list(params["state_names"]), list(params["action_names"])
        missing = [a for a in action_names if a not in CTRL_RANGE or a[2:] not in state_names]
        if missing:
            raise ValueError(f"{source}: the hand's stop holds each actuator A_<joint> at its joint's position, "
                             f"but parameter 'action_names' has {missing} with no known range or no joint in "
                             "'state_names'")
        return HoldJoints([state_names.index(a[2:]) for a in action_names], [CTRL_RANGE[a] for a in action_names],
                          params["safe_action"])

    def estimator(self, params: Mapping[str, Any], source: str):
        from mbrl_ros.robots.hand.estimator import HandStateEstimator

        from mbrl_ros.robots.hand.estimator import BLOCK_STATE_NAMES

        joints = [n for n in params["joint_names"] if n]
        block = bool(params.get("block", False))
        estimator = HandStateEstimator(joints, params["fingertips"], params["resync_after"], block)
        names = list(params["state_names"])
        if len(names) != estimator.state_dim:
            raise ValueError(f"{source}: parameter 'state_names' has {len(names)} names, but "
                             f"{len(joints)} joints (positions, velocities), {params['fingertips']} fingertips"
                             f"{' and the block' if block else ''} make {estimator.state_dim}")
        if block and tuple(names[-len(BLOCK_STATE_NAMES):]) != BLOCK_STATE_NAMES:
            raise ValueError(f"{source}: parameter 'block' is true, so 'state_names' must end with the block's "
                             f"{list(BLOCK_STATE_NAMES)}, not {names[-len(BLOCK_STATE_NAMES):]}")
        return estimator


ROBOT = Hand()
