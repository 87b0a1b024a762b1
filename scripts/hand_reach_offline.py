"""Where HandReach fails, ROS-free: random data -> ensemble -> MPPI closed loop on the simulated hand.

Diagnostic, not a test (issue 10 section 1, "make it reach"). Collects ``random`` transitions with the
controller's exploration policy, trains the trainer's ensemble, then plans with MPPI through it on
``evals`` episodes (seeds 100..) and prints, per episode, the distance every 10 steps, each fingertip's
final distance, and the model's own view (the plan's predicted end, the one-step prediction), so a
planner failure (the model knows a better plan) and a model failure (it does not) can be told apart.

    .venv/bin/python scripts/hand_reach_offline.py random=1000 horizon=10 samples=300 temp=0.05 sigma=0.15 beta=0.98

(the defaults: config/hand_reach.yaml's MPPI).

More: ``rounds=N`` alternates ``evals`` control episodes with retraining on all data so far (``gate=1``: through
the trainer's own round, core.retraining.train_candidate with config/hand.yaml's settings, printing the gate's
verdict and both models' errors per state group); ``held=N`` measures the model on N held targets (see
``held_targets``); ``planner=cem`` and ``p_KEY=VALUE`` set any planner key; ``first=N`` the first evaluated
seed (100); ``verbose=0`` prints rounds only; ``model=parametric`` plans on the hand's physics prior identified on the
random data; ``model=semiparametric`` on that prior plus a residual ensemble trained on the data
(config/hand.yaml; iLQR on it runs on the torch path: minutes per episode); ``model=oracle`` plans on the simulator itself
(``SimulatorModel``: what the planner reaches with a perfect model; one mujoco.rollout call per plan, about 2 s
a step with horizon=10 samples=300); ``tips=kinematics`` costs the fingertips that the simulator's kinematics
give for the predicted joints instead of the model's fingertip outputs.
"""

import os
import sys
import time

from pathlib import Path

import numpy as np
import torch
import yaml

from mbrl_ros.core.control import ExplorationPolicy
from mbrl_ros.core.costs import TERM_KINDS, build_cost
from mbrl_ros.core.data import TransitionDataset
from mbrl_ros.core.fitting import fit_model
from mbrl_ros.core.models import build_model
from mbrl_ros.core.models.base import DynamicsModel, TimeMajorDynamics
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.retraining import train_candidate
from mbrl_ros.core.training import train_ensemble
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.hand.costs import FingertipTargetTerm
from mbrl_ros_hardware.hand.shadow_hand import HandSim


HAND_CONFIG = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "config" / "hand.yaml"))
ERROR_SCALE = HAND_CONFIG["/**"]["ros__parameters"]["error_scale"]
GROUPS = {"joints": slice(0, 24), "velocities": slice(24, 48), "tips": slice(48, 63)}  # scaled RMSE per group


def state_of(st) -> np.ndarray:
    return np.concatenate([st.positions, st.velocities, st.fingertips.ravel()])


def episodes(sim: HandSim, policy: ExplorationPolicy, seeds) -> TransitionDataset:
    data = TransitionDataset(63, 20)
    for seed in seeds:
        st, rows = sim.reset(seed=seed), []
        policy.reset()
        for _ in range(sim.max_episode_steps):
            action = policy()
            nxt = sim.step(action).state
            rows.append((state_of(st), action, state_of(nxt)))
            st = nxt
        data.append(*(torch.tensor(np.array(column), dtype=torch.float32) for column in zip(*rows)))
    return data


@torch.no_grad()
def held_targets(sim: HandSim, model, count: int, steps: int = 15) -> None:
    """The model's error where planning needs it: targets held for ``steps`` steps from the start pose.

    HandReach's actions are joint position targets, so a reaching plan is nearly a held target; compares
    the model's open-loop fingertips (the mean of its members) with the simulator's, and the fingertips that
    the simulator's kinematics give for the model's predicted joints (is the error in the joints or in the
    fingertip outputs?).
    """
    rng, propagation = np.random.default_rng(0), model.propagation
    model.propagation = "mean"
    tips, from_joints = [], []
    for k in range(count):
        st, target = sim.reset(seed=200 + k), rng.uniform(-0.7, 0.7, 20)
        x = torch.tensor(state_of(st), dtype=torch.float32)[None]
        for _ in range(steps):
            st = sim.step(target).state
            x = model(x, torch.tensor(target, dtype=torch.float32)[None])
        tips.append(np.linalg.norm(x[0, 48:].numpy() - st.fingertips.ravel()))
        from_joints.append(np.linalg.norm(sim.fingertips_at(x[0, :24].double().numpy()) - st.fingertips))
    model.propagation = propagation
    print(f"held targets ({count} x {steps} steps): fingertip error (norm over 15) {100 * np.mean(tips):.2f} cm "
          f"predicted, {100 * np.mean(from_joints):.2f} cm by kinematics of the predicted joints", flush=True)


class KinematicTips(FingertipTargetTerm):
    """``tips=kinematics``: the fingertips by the simulator's kinematics of the predicted joints, not the model's
    fingertip outputs (slow, a Python loop over MuJoCo: a check of what kinematics would give, not a planner)."""

    sim: HandSim

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        joints = states[..., :24].reshape(-1, 24).double().numpy()
        tips = torch.tensor(np.array([self.sim.fingertips_at(q).ravel() for q in joints]), dtype=states.dtype)
        return super().forward(torch.cat([states[..., :48], tips.reshape(*states.shape[:-1], 15)], -1), actions)


class SimulatorModel(DynamicsModel):
    """``model=oracle``: the simulator itself as the planner's model. The 63 entries are the hand's whole physics
    state (24 joint positions and velocities: nq = nv = 24, no activations; the fingertips follow by kinematics),
    so a step from any state is exact (the joints; HandReach's fingertips are its site positions from before the
    step's last substep, up to ~1 mm away while moving fast). A plan's K x H rollouts are one mujoco.rollout call
    (``time_major``)."""

    def __init__(self, sim: HandSim) -> None:
        import mujoco
        import mujoco.rollout

        super().__init__(63, 20)
        sim.reset(seed=0)
        self.sim, self.mujoco = sim, mujoco
        m = self.model_ = sim.unwrapped.model
        if (m.nq, m.nv, m.na) != (24, 24, 0):
            raise ValueError(f"oracle: expected 24 joints and no activations, got nq={m.nq} nv={m.nv} na={m.na}")
        ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"robot0:{n}") for n in sim.joint_names]
        self.spec = mujoco.mjtState.mjSTATE_FULLPHYSICS  # [time, qpos, qvel]
        self.qpos = 1 + m.jnt_qposadr[ids]
        self.qvel = 1 + m.nq + m.jnt_dofadr[ids]
        self.substeps = int(round(sim.dt / m.opt.timestep))
        self.data = mujoco.MjData(m)

    def __deepcopy__(self, memo):  # no state of its own between calls (time_major_dynamics' check copies it)
        return self

    def time_major(self) -> TimeMajorDynamics:
        return SimulatorRollout(self)

    def simulate(self, states: np.ndarray, controls: np.ndarray) -> np.ndarray:
        """``states[B, 63]``, normalised actions ``controls[B, H, 20]`` -> ``states[B, H, 63]`` after each step."""
        count, horizon = controls.shape[:2]
        initial = np.zeros((count, self.mujoco.mj_stateSize(self.model_, self.spec)))
        initial[:, self.qpos], initial[:, self.qvel] = states[:, :24], states[:, 24:48]
        targets = self.sim.actuator_targets(controls)
        out, _ = self.mujoco.rollout.rollout(self.model_, self.data, initial, np.repeat(targets, self.substeps, 1))
        out = out[:, self.substeps - 1::self.substeps]  # [B, H, state]
        q, v = out[..., self.qpos], out[..., self.qvel]
        tips = np.array([self.sim.fingertips_at(row).ravel() for row in q.reshape(-1, 24)])
        return np.concatenate([q, v, tips.reshape(count, horizon, 15)], -1)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        out = self.simulate(states.double().numpy(), actions.double().numpy()[:, None])
        return torch.tensor(out[:, 0], dtype=states.dtype)


class SimulatorRollout(TimeMajorDynamics):
    def rollout(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        count = actions.shape[2]
        x = (state[:, None].expand(-1, count) if state.dim() == 1 else state).T
        out = self.model.simulate(x.double().numpy(), actions.permute(2, 0, 1).double().numpy())
        return torch.cat([x[None], torch.tensor(out, dtype=state.dtype).permute(1, 0, 2)]).permute(0, 2, 1)


def main() -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    a = dict(arg.split("=", 1) for arg in sys.argv[1:])
    sim = HandSim("reach")
    verbose = a.get("verbose", "1") == "1"
    policy = ExplorationPolicy(-np.ones(20), np.ones(20), float(a.get("smooth", 0.8)), 0)
    train = episodes(sim, policy, range(1000, 1000 + int(a.get("random", 1000)) // sim.max_episode_steps))
    val = episodes(sim, policy, range(5000, 5003))
    members, hidden = int(a.get("members", 5)), int(a.get("hidden", 200))

    def fit(train):
        model = build_model({"type": "ensemble", "state_dim": 63, "action_dim": 20, "ensemble_size": members,
                         "hidden_sizes": [hidden, hidden], "num_elites": members,
                         "propagation": a.get("prop", "ts1")})
        started = time.time()
        train_ensemble(model, train, val, epochs=int(a.get("epochs", 100)), patience=int(a.get("patience", 10)))
        print(f"trained on {len(train)} transitions in {time.time() - started:.0f} s", flush=True)
        return model.eval()

    def gated(data, current):
        """The trainer's round (core.retraining.train_candidate, config/hand.yaml's trainer settings): the
        candidate replaces ``current`` only if the gate accepts it; prints why, per state group."""
        trainer = HAND_CONFIG["/**/trainer"]["ros__parameters"]
        result = train_candidate(data, trainer["ensemble"], current, val_fraction=trainer["val_fraction"],
                                 gate_fraction=trainer["gate_fraction"], training=trainer["training"],
                                 horizons=trainer["horizons"], error_scale=ERROR_SCALE,
                                 min_improvement=trainer["min_improvement"])
        for name, error in (("candidate", result.fit.val_error), ("current", result.current_error)):
            print(f"  {name}: " + "; ".join(f"h={h} " + " ".join(
                f"{group} {float(error.rmse_per_dim[h][part].pow(2).mean().sqrt()):.3g}"
                for group, part in GROUPS.items()) for h in error.rmse), flush=True)
        print(f"  gate: {'deployed' if result.decision.accept else 'rejected'}: {result.decision.reason}", flush=True)
        return result.fit.model.eval() if result.decision.accept else current

    def prior(train):
        """``model=parametric``: the hand's physics prior identified on the data (config/hand.yaml's trainer section)."""
        config = {**HAND_CONFIG["/**/trainer"]["ros__parameters"]["parametric"], "dt": sim.dt}
        return fit_model(config, train, physics=get_robot("hand")).model.eval()

    def semiparametric(train):
        """``model=semiparametric``: the prior plus a learned residual ensemble (config/hand.yaml's trainer section)."""
        trainer = HAND_CONFIG["/**/trainer"]["ros__parameters"]
        semi = trainer["semiparametric"]
        config = {**semi, "prior": {**semi["prior"], "dt": sim.dt}}
        started = time.time()
        model = fit_model(config, train, val, physics=get_robot("hand"), training=trainer["training"]).model.eval()
        print(f"trained on {len(train)} transitions in {time.time() - started:.0f} s", flush=True)
        return model

    builders = {"oracle": lambda _: SimulatorModel(HandSim("reach")), "parametric": prior,
                "semiparametric": semiparametric}
    model = builders.get(a.get("model"), fit)(train)
    tips_term = FingertipTargetTerm
    if a.get("tips") == "kinematics":
        KinematicTips.sim = HandSim("reach")  # its own data: fingertips_at does not touch the episode's
        tips_term = KinematicTips
    if int(a.get("held", 0)):
        held_targets(sim, model, int(a["held"]))
    cost = build_cost({"fingertips": {"type": "fingertip_target", "indices": list(range(48, 63)),
                                      "form": a.get("form", "norm"), "stage_weight": float(a.get("stage", 1.0)),
                                      "terminal_weight": float(a.get("terminal", 5.0))},
                       "effort": {"weight": float(a.get("effort", 0.001))}}, 63, 20,
                      kinds={**TERM_KINDS, "fingertip_target": tips_term})
    if a.get("planner", "mppi") == "mppi":
        planner_config = {"horizon": int(a.get("horizon", 10)), "num_samples": int(a.get("samples", 300)),
                          "temperature": float(a.get("temp", 0.05)), "sigma": [float(a.get("sigma", 0.15))] * 20,
                          "noise_smoothing": "beta", "beta": float(a.get("beta", 0.98)), "compile": False}
    else:
        planner_config = {"horizon": int(a.get("horizon", 10)), "compile": False}
    # p_KEY=VALUE: any other planner setting (a number, or true/false)
    for key, value in a.items():
        if key.startswith("p_"):
            planner_config[key[2:]] = {"true": True, "false": False}.get(value) if value in ("true", "false") else (
                int(value) if value.lstrip("-").isdigit() else float(value))
    finals, plan_s, seed = [], [], int(a.get("first", 100))
    for round_ in range(int(a.get("rounds", 1))):
        planner = build_planner(a.get("planner", "mppi"), model, cost, planner_config)
        round_finals = []
        for _ in range(int(a.get("evals", 5))):
            st, rows = sim.reset(seed=seed), []
            seed += 1
            planner.reset()
            cost.set_context("fingertip_target", torch.tensor(sim.goal.ravel(), dtype=torch.float32))
            for t in range(sim.max_episode_steps):
                x = torch.tensor(state_of(st), dtype=torch.float32)
                tick = time.perf_counter()
                plan = planner.plan(x)
                plan_s.append(time.perf_counter() - tick)
                with torch.no_grad():
                    predicted = model(x[None], plan.action[None])[0]
                nxt = sim.step(plan.action.numpy()).state
                rows.append((state_of(st), plan.action.numpy(), state_of(nxt)))
                st = nxt
                if t % 10 == 9 and verbose:
                    print(f"  t={t + 1} {100 * sim.goal_distance(st):.2f} cm", end="", flush=True)
            train.append(*(torch.tensor(np.array(column), dtype=torch.float32) for column in zip(*rows)))
            goal = sim.goal.ravel()
            round_finals.append(sim.goal_distance(st))
            if verbose:
                print(f"\nepisode {seed - 1}: {100 * round_finals[-1]:.2f} cm; per tip (ff mf rf lf th) "
                      f"{np.round(100 * np.linalg.norm(st.fingertips - sim.goal, axis=1), 2)} cm; the model's view: "
                      f"plan's end {100 * np.linalg.norm(plan.predicted_states[-1][48:].numpy() - goal):.2f} cm, "
                      f"last step {100 * np.linalg.norm(predicted[48:].numpy() - goal):.2f} cm", flush=True)
        finals += round_finals
        print(f"round {round_}: mean final distance {100 * np.mean(round_finals):.2f} cm, success "
              f"{np.mean(np.array(round_finals) < 0.01):.0%}, planning p50 {1000 * np.median(plan_s):.0f} ms, "
              f"{len(train)} transitions", flush=True)
        if round_ + 1 < int(a.get("rounds", 1)):
            model = gated(train, model) if a.get("gate") == "1" else builders.get(a.get("model"), fit)(train)
    print(f"mean final distance {100 * np.mean(finals):.2f} cm, success {np.mean(np.array(finals) < 0.01):.0%}, "
          f"planning p50 {1000 * np.median(plan_s):.0f} ms")

if __name__ == "__main__":
    main()
