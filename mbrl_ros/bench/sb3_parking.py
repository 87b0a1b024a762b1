"""A model-free baseline from a library nobody here wrote: stable-baselines3 SAC + HER on ``parking-v0``.

Issue 12 §3: the same simulator and the same budget of real transitions as the stack's parking demo, and
for reference the budget at which the baseline reaches what the stack reaches.

The simulator: highway-env's ``parking-v0`` built by ``mbrl_ros_hardware.car.parking.make_parking_env``,
the function ``sim_car`` itself uses: highway-env's default config (walls on, the goal reward with its
weights, success when that reward exceeds ``-success_goal_reward``: the env's own ``is_success``), the
episode cut at sim_car's 100 steps (20 s at 5 Hz). An episode ends as sim_car ends one: on success or a
crash (the env terminates) or at the time limit, and it succeeded when the env's ``is_success`` says so at
its last step. Training episode ``k`` starts from ``reset(seed=train_seed + k)``, as sim_car's episode
``k`` does (its ``seed`` parameter, default 0).

The agent: SB3's ``SAC`` with ``MultiInputPolicy`` and ``HerReplayBuffer`` (``future`` goals, 4 per
transition). SB3's HER page (docs/modules/her.rst, "Results" and "How to replicate") tests HER on the
parking env with the RL Zoo's settings; the presets:

- ``zoo`` (default): rl-baselines3-zoo ``hyperparams/her.yml``, ``parking-v0`` "SAC hyperparams, her
  paper": 3 x 256 units, batch 256, gamma 0.95, learning rate 1e-3, 4 ``future`` goals, SB3's other
  defaults (tau 0.005, learning_starts 100, one gradient step per transition, automatic entropy).
- ``highway-env``: highway-env's own example, scripts/parking_her.ipynb: 3 x 512 units, batch 1024,
  gamma 0.95, learning rate 1e-3, tau 0.05, 4 ``future`` goals. The notebook trains without walls
  (``add_walls=False``); here the walls stay, as in the demo. About 9x the compute per step of ``zoo``.

Both keep the replay buffer at every transition of the run (the presets' 1e6, capped at the budget).

The budget counts real environment transitions only (HER's relabelled copies are not transitions): at
each checkpoint the training env has been stepped exactly that many times (counted by the env's own
wrapper here, beside SB3's ``num_timesteps``). At each checkpoint the deterministic policy
(``predict(deterministic=True)``) drives ``episodes`` evaluation episodes on a separate env with seeds
``first_seed ...``: by default seeds 44-63, the evaluated episodes of the stack's 95 % parking demo
(``mbrl-ros demo car --episodes 20``: parametric model, MPPI, 2,000 random transitions, 2,766 transitions
in all; those seeds are its summary.json ``episodes_detail``). The demo learns online during those
episodes; the baseline's evaluation episodes do not train it.

Numbers, not pass/fail; the load average is in the output: a loaded machine changes wall times, not
success (a run is deterministic for its seeds and thread count only up to torch's CPU kernels).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

# The stack's 95 % parking demo (see the module docstring): its transitions and success.
DEMO_TRANSITIONS, DEMO_SUCCESS, DEMO_FIRST_SEED = 2766, 0.95, 44
CHECKPOINTS = (1000, 2000, 2766, 5000, 10_000, 15_000, 20_000, 30_000, 40_000, 50_000, 75_000, 100_000)
HER = {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
PRESETS = {
    "zoo": {"learning_rate": 1e-3, "gamma": 0.95, "batch_size": 256, "net_arch": [256, 256, 256]},
    "highway-env": {"learning_rate": 1e-3, "gamma": 0.95, "batch_size": 1024, "tau": 0.05,
                    "net_arch": [512, 512, 512]},
}
PRESET_SOURCES = {
    "zoo": "rl-baselines3-zoo hyperparams/her.yml parking-v0 (SAC, her paper), as SB3's docs/modules/her.rst refers",
    "highway-env": "highway-env scripts/parking_her.ipynb (SB3 SAC + HerReplayBuffer), walls kept on",
}


def checkpoints_up_to(max_steps: int, extra: tuple[int, ...] = ()) -> list[int]:
    """The default checkpoints below ``max_steps``, the extra ones, and ``max_steps`` itself, sorted."""
    return sorted({c for c in (*CHECKPOINTS, *extra) if 0 < c < max_steps} | {max_steps})


def evaluate(model, env, seeds: list[int]) -> dict:
    """The deterministic policy on one episode per seed; each episode's outcome as sim_car reports it."""
    from mbrl_ros_hardware.car.parking import goal_from_observation, state_from_observation

    episodes = []
    success_goal_reward = float(env.unwrapped.config["success_goal_reward"])
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        goal = goal_from_observation(obs["desired_goal"])
        steps, done, info = 0, False, {}
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _reward, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
        final = state_from_observation(obs["observation"], steer=0.0)
        goal_reward = float(env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], {}))
        episodes.append({
            "seed": seed, "success": bool(info["is_success"]), "crashed": bool(info["crashed"]), "steps": steps,
            "final_distance_m": float(np.hypot(*(final[:2] - goal[:2]))),
            "final_goal_reward": goal_reward, "goal": [float(v) for v in goal[:3]],
        })
    return {"success_rate": float(np.mean([e["success"] for e in episodes])),
            "mean_final_distance_m": float(np.mean([e["final_distance_m"] for e in episodes])),
            "crashes": int(sum(e["crashed"] for e in episodes)),
            "mean_steps": float(np.mean([e["steps"] for e in episodes])),
            "success_goal_reward": success_goal_reward, "episodes": episodes}


def _seeded_episodes(env, first_seed: int):
    """``env`` whose episode k starts from ``reset(seed=first_seed + k)`` whatever seed the caller passes
    (SB3 passes its own once), counting the transitions it was stepped."""
    import gymnasium as gym

    class SeededEpisodes(gym.Wrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self.next_seed, self.episodes, self.transitions = first_seed, 0, 0

        def reset(self, *, seed=None, options=None):
            seed, self.next_seed = self.next_seed, self.next_seed + 1
            self.episodes += 1
            return self.env.reset(seed=seed, options=options)

        def step(self, action):
            self.transitions += 1
            return self.env.step(action)

    return SeededEpisodes(env)


def build_model(env, preset: str, buffer_size: int, seed: int):
    from stable_baselines3 import SAC, HerReplayBuffer

    settings = dict(PRESETS[preset])
    net_arch = settings.pop("net_arch")
    return SAC("MultiInputPolicy", env, replay_buffer_class=HerReplayBuffer, replay_buffer_kwargs=dict(HER),
               buffer_size=buffer_size, policy_kwargs={"net_arch": net_arch}, seed=seed, device="cpu", verbose=0,
               **settings)


def run(max_steps: int = 50_000, checkpoints: list[int] | None = None, episodes: int = 20,
        first_seed: int = DEMO_FIRST_SEED, train_seed: int = 0, seed: int = 0, preset: str = "zoo",
        threads: int = 1, budget: int = DEMO_TRANSITIONS, target: float = DEMO_SUCCESS,
        reference: str | None = None, out: str = "runs/sb3_parking", json_path: str | None = None) -> dict:
    import gymnasium
    import highway_env
    import stable_baselines3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    from mbrl_ros.plots import plot_learning_curve
    from mbrl_ros.stack_run import progress_options
    from mbrl_ros_hardware.car.parking import EPISODE_STEPS, make_parking_env

    if reference:
        demo = json.loads(Path(reference).read_text())
        try:
            budget, target = int(demo["transitions"]), float(demo["success_rate"])
        except KeyError as missing:
            raise SystemExit(f"sb3-parking: --reference {reference} has no {missing} (a `mbrl-ros demo car "
                             "--json` file has 'transitions' and 'success_rate')") from None
    points = sorted(set(checkpoints) | {max_steps}) if checkpoints else checkpoints_up_to(max_steps, (budget,))
    if points[0] <= 0 or points[-1] > max_steps:
        raise SystemExit(f"sb3-parking: checkpoints must lie in 1..--max-steps ({max_steps}), got {points}")
    torch.set_num_threads(threads)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    seeds = list(range(first_seed, first_seed + episodes))
    train_env = _seeded_episodes(make_parking_env(EPISODE_STEPS), train_seed)
    eval_env = make_parking_env(EPISODE_STEPS)
    model = build_model(train_env, preset, buffer_size=min(1_000_000, max_steps), seed=seed)
    conditions = {
        "library": "stable-baselines3", "versions": {"stable_baselines3": stable_baselines3.__version__,
                                                      "gymnasium": gymnasium.__version__,
                                                      "highway_env": highway_env.__version__,
                                                      "torch": torch.__version__},
        "algorithm": "SAC + HerReplayBuffer", "preset": preset, "preset_source": PRESET_SOURCES[preset],
        "hyperparameters": {**PRESETS[preset], "her": HER, "buffer_size": model.buffer_size, "tau": model.tau,
                            "learning_starts": model.learning_starts, "train_freq": model.train_freq.frequency,
                            "gradient_steps": model.gradient_steps, "ent_coef": model.ent_coef},
        "env": {"id": "parking-v0", "max_episode_steps": EPISODE_STEPS,
                **{k: eval_env.unwrapped.config[k] for k in ("duration", "add_walls", "reward_weights",
                                                             "success_goal_reward", "collision_reward")}},
        "threads": torch.get_num_threads(), "seed": seed, "train_seed": train_seed, "eval_seeds": seeds,
        "deterministic_eval": True, "load_average_start": list(os.getloadavg()),
    }
    print(f"[sb3-parking] SAC+HER ({preset}) on parking-v0, {max_steps} transitions, {threads} torch thread(s); "
          f"{episodes} deterministic episodes (seeds {seeds[0]}-{seeds[-1]}) at {points}; reference: "
          f"{target:.0%} at {budget} transitions", flush=True)

    bar = tqdm(total=max_steps, desc="sb3-parking", unit="transition", **progress_options())

    class Progress(BaseCallback):
        def _on_step(self) -> bool:
            bar.update(1)
            return True

    results, train_s = [], 0.0

    def result_so_far() -> dict:
        return {"task": "parking", "baseline": "sb3 SAC+HER", "complete": len(results) == len(points),
                "reference": {"transitions": budget, "success_rate": target,
                              "source": reference or "mbrl-ros demo car --episodes 20 (parametric, mppi, 2000 random)"},
                **summarise(results, budget, target), "checkpoints": results,
                "conditions": {**conditions, "load_average_end": list(os.getloadavg())}}

    try:
        for point in points:
            started = time.monotonic()
            model.learn(point - model.num_timesteps, reset_num_timesteps=False, callback=Progress())
            train_s += time.monotonic() - started
            started = time.monotonic()
            scores = evaluate(model, eval_env, seeds)
            results.append({"transitions": int(model.num_timesteps), "env_transitions": train_env.transitions,
                            "train_episodes": train_env.episodes, "train_wall_s": train_s,
                            "eval_wall_s": time.monotonic() - started, **scores})
            bar.set_postfix_str(f"{point}: {scores['success_rate']:.0%} parked", refresh=False)
            bar.write(f"[sb3-parking] {point} transitions: {scores['success_rate']:.0%} parked, mean final distance "
                      f"{scores['mean_final_distance_m']:.2f} m, {scores['crashes']} crashed; {train_s:.0f} s training")
            # After each checkpoint: a run stopped early keeps what it measured ("complete": false).
            (folder / "sb3_parking.json").write_text(json.dumps(result_so_far(), indent=2) + "\n")
    finally:
        bar.close()
        train_env.close()
        eval_env.close()
    result = result_so_far()
    print_table(result)
    plot = plot_learning_curve(folder / "sb3_parking.png", [{"transitions": r["transitions"], "success_rate":
                               r["success_rate"]} for r in results], episodes, target, budget,
                               title=f"SB3 SAC+HER ({preset}) on parking-v0, {episodes} deterministic episodes",
                               label=f"success over {episodes} episodes (seeds {seeds[0]}-{seeds[-1]})")
    print(f"[sb3-parking] plot {plot}", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def summarise(results: list[dict], budget: int, target: float) -> dict:
    """Success at the reference budget (the last checkpoint within it), the first checkpoint that reaches the
    reference's success, and the best checkpoint."""
    within = [r for r in results if r["transitions"] <= budget]
    reached = next((r["transitions"] for r in results if r["success_rate"] >= target), None)
    best = max(results, key=lambda r: (r["success_rate"], -r["transitions"]))
    return {"success_at_reference_budget": within[-1]["success_rate"] if within else None,
            "transitions_to_reference_success": reached,
            "best": {"transitions": best["transitions"], "success_rate": best["success_rate"]}}


def print_table(result: dict) -> None:
    print(f"{'transitions':>11} {'success':>8} {'final dist m':>12} {'crashes':>7} {'train s':>8} {'eval s':>6}")
    for r in result["checkpoints"]:
        print(f"{r['transitions']:>11} {r['success_rate']:>8.0%} {r['mean_final_distance_m']:>12.2f} "
              f"{r['crashes']:>7} {r['train_wall_s']:>8.0f} {r['eval_wall_s']:>6.1f}")
    ref, reached = result["reference"], result["transitions_to_reference_success"]
    at = result["success_at_reference_budget"]
    print(f"[sb3-parking] at the reference budget ({ref['transitions']} transitions): "
          f"{'no checkpoint' if at is None else f'{at:.0%}'}; reaches {ref['success_rate']:.0%} at "
          f"{reached if reached is not None else 'no checkpoint'}; best {result['best']['success_rate']:.0%} "
          f"at {result['best']['transitions']}", flush=True)
