"""The trainer as a real process over DDS when things go wrong (issue 9, "Also found").

- A bag with a few malformed messages: they are dropped alone, and the drops are in the
  trainer's log and /diagnostics (``dropped_messages``, ``dropped_by_topic``).
- ``decisions.jsonl`` cannot be written: the round's decision is still logged and counted
  (the trainer called an undefined ``log`` there, and the round was lost).
- A training round that diverges (FloatingPointError from ``train_ensemble``) is a failed
  round with its reason, not an error that escapes the round.
"""

from __future__ import annotations

from mbrl_ros.io.config import node_parameters
from mbrl_ros.ros_env import REPO_ROOT
from test_dynamics_trainer import DT, drive_bicycle, robot_params, stack, write_driving_bag  # noqa: F401 (fixture)


def trainer_params(tmp_path, **changes) -> dict:
    trainer = node_parameters(REPO_ROOT / "config" / "car.yaml", "trainer")
    trainer.pop("state_names", None)
    trainer.pop("action_names", None)
    trainer.update(bag_dir=str(tmp_path / "bags"), checkpoint_dir=str(tmp_path / "checkpoints"),
                   random_transitions=10**8, poll_period=0.3, horizons=[1, 5], dt=DT, diagnostics_period=0.2)
    trainer.update(changes)
    return trainer


def test_dropped_messages_are_reported_and_an_unwritable_decision_log_loses_no_round(stack, tmp_path):
    states, actions = drive_bicycle(episodes=6, steps=30)
    write_driving_bag(tmp_path / "bags" / "run_0000", states, actions, malformed={3, 40, 100})
    (tmp_path / "checkpoints" / "decisions.jsonl").mkdir(parents=True)  # a directory: appending fails
    stack.node("trainer", robot_params(trainer=trainer_params(tmp_path)))
    peer = stack.peer()
    read = peer.do("wait_diagnostics", node="trainer", key="dropped_messages", value="3", timeout=60)
    assert read["found"], (read, stack.logs())
    values = read["values"]
    assert values["bags_skipped"] == "0" and int(values["transitions"]) == 6 * 30 - 2 * 3
    assert values["dropped_by_topic"].startswith("/car/state: 3 (field 'values[x]': 'values' has 4 entries"), values

    assert peer.do("trigger", service="trainer/train")["success"]
    done = peer.do("wait_diagnostics", node="trainer", key="rounds", value="1", timeout=60)
    assert done["found"], (done, stack.logs())
    assert done["values"]["last_decision"] == "accepted", done["values"]
    logs = stack.logs()
    assert "dropped 3 malformed message(s), kept the rest: /car/state: 3" in logs, logs
    assert f"cannot append to {tmp_path / 'checkpoints' / 'decisions.jsonl'}" in logs, logs
    assert "NameError" not in logs


def test_a_diverging_training_round_is_a_failed_round(stack, tmp_path):
    states, actions = drive_bicycle(episodes=6, steps=30)
    write_driving_bag(tmp_path / "bags" / "run_0000", states, actions)
    trainer = trainer_params(tmp_path, model_kind="ensemble")
    trainer["ensemble"] = {**trainer["ensemble"], "hidden_sizes": [16], "ensemble_size": 2, "num_elites": 2}
    trainer["training"] = {**trainer["training"], "epochs": 5, "lr": 1e12}  # diverges in the first epoch
    stack.node("trainer", robot_params(trainer=trainer))
    peer = stack.peer()
    assert peer.do("wait_diagnostics", node="trainer", key="transitions", value=str(6 * 30), timeout=60)["found"]
    assert peer.do("trigger", service="trainer/train")["success"]
    done = peer.do("wait_diagnostics", node="trainer", key="rounds", value="1", timeout=60)
    assert done["found"], (done, stack.logs())
    values = done["values"]
    assert (values["last_decision"], values["failed"]) == ("failed", "1"), values
    assert values["last_reason"].startswith("FloatingPointError: train_ensemble: held-out MSE became non-finite")
