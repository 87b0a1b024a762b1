"""``mbrl-ros bench sb3-parking``: the model-free baseline trains on the budget it says, on sim_car's parking-v0,
and scores the episodes it says with the env's own success (issue 12 §3, "same simulator and the same budget of
real transitions"). A tiny budget: no claim on how well SAC+HER parks."""

import json
import math
import os
import subprocess
import sys

import numpy as np

from mbrl_ros.bench.sb3_baseline import summarise

SEEDS = [5, 6, 7]


def test_the_command_trains_on_its_budget_and_scores_the_given_seeds_by_the_envs_success(tmp_path):
    out = tmp_path / "run.json"
    done = subprocess.run(
        [sys.executable, "-m", "mbrl_ros.cli", "bench", "sb3-parking", "--max-steps", "300", "--checkpoints", "150",
         "--episodes", str(len(SEEDS)), "--first-seed", str(SEEDS[0]), "--train-seed", "1000",
         "--out", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (tmp_path / "sb3_parking.png").stat().st_size > 0
    assert result["complete"] is True

    # The budget is real env transitions: SB3's count and the env's own step count agree at each checkpoint.
    assert [c["transitions"] for c in result["checkpoints"]] == [150, 300]
    assert [c["env_transitions"] for c in result["checkpoints"]] == [150, 300]
    for checkpoint in result["checkpoints"]:
        for key in ("success_rate", "mean_final_distance_m", "train_wall_s", "eval_wall_s", "mean_steps"):
            assert isinstance(checkpoint[key], float) and math.isfinite(checkpoint[key]), key
        assert 0.0 <= checkpoint["success_rate"] <= 1.0
    conditions = result["conditions"]
    import stable_baselines3

    assert conditions["threads"] == 1 and conditions["eval_seeds"] == SEEDS
    assert conditions["versions"]["stable_baselines3"] == stable_baselines3.__version__
    assert conditions["hyperparameters"]["her"]["goal_selection_strategy"] == "future"
    assert isinstance(result["success_at_reference_budget"], float)

    # The evaluation episodes are the given seeds' (their goals as highway-env itself draws them), they end as
    # sim_car ends them (100 steps, or earlier on success or a crash), and success is the env's is_success:
    # its goal reward above -success_goal_reward at the last step.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym
    import highway_env  # noqa: F401
    from highway_env.envs.parking_env import ParkingEnv

    threshold = ParkingEnv.default_config()["success_goal_reward"]
    env = gym.make("parking-v0")
    for checkpoint in result["checkpoints"]:
        assert [e["seed"] for e in checkpoint["episodes"]] == SEEDS
        for episode in checkpoint["episodes"]:
            obs, _ = env.reset(seed=episode["seed"])
            x, y = obs["desired_goal"][:2] * 100.0
            assert np.allclose(episode["goal"][:2], [x, y]), episode
            assert episode["success"] == (episode["final_goal_reward"] > -threshold), episode
            if episode["success"] or episode["crashed"]:
                assert episode["steps"] <= 100, episode
            else:
                assert episode["steps"] == 100, episode  # highway-env's duration alone would give 101


def test_the_summary_reads_the_reference_budget_and_the_first_checkpoint_at_the_reference_success():
    results = [{"transitions": t, "success_rate": s}
               for t, s in [(1000, 0.5), (2766, 0.9), (5000, 0.95), (10_000, 1.0), (20_000, 0.9)]]
    assert summarise(results, budget=2766, target=0.95) == {
        "success_at_reference_budget": 0.9, "transitions_to_reference_success": 5000,
        "best": {"transitions": 10_000, "success_rate": 1.0}}
    assert summarise(results, budget=3000, target=1.01)["transitions_to_reference_success"] is None
    assert summarise(results, budget=500, target=0.95)["success_at_reference_budget"] is None


def test_the_hand_reach_baseline_trains_on_its_budget_and_scores_the_hand_demos_seeds_by_the_envs_success(tmp_path):
    """`--task hand-reach`: HandReach-v3 as sim_hand builds it (50-step episodes), the demo's evaluation seeds by
    default (1000, ...), success the env's is_success: the fingertips within its 1 cm threshold at the end."""
    out = tmp_path / "hand.json"
    done = subprocess.run(
        [sys.executable, "-m", "mbrl_ros.cli", "bench", "sb3-baseline", "--task", "hand-reach", "--max-steps", "120",
         "--checkpoints", "60", "--episodes", "2", "--out", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (tmp_path / "sb3_hand_reach.png").stat().st_size > 0 and result["task"] == "hand-reach"
    assert [c["transitions"] for c in result["checkpoints"]] == [60, 120]
    assert [c["env_transitions"] for c in result["checkpoints"]] == [60, 120]
    assert result["reference"]["transitions"] == 20_000 and result["reference"]["success_rate"] == 0.9
    conditions = result["conditions"]
    assert conditions["eval_seeds"] == [1000, 1001] and conditions["env"]["id"] == "HandReach-v3"
    assert conditions["env"]["max_episode_steps"] == 50 and "mujoco" in conditions["versions"]
    threshold = conditions["env"]["distance_threshold"]
    for checkpoint in result["checkpoints"]:
        assert [e["seed"] for e in checkpoint["episodes"]] == [1000, 1001]
        for episode in checkpoint["episodes"]:
            assert episode["steps"] == 50
            assert episode["success"] == (episode["final_distance_m"] < threshold), episode
