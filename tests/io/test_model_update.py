"""ModelUpdate fields <-> models, and the dynamics_server's registry (versions, checks, rollback), without ROS."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from mbrl_ros.io import checkpoint
from mbrl_ros.io.model_registry import (
    ModelRegistry,
    NoPreviousModel,
    PredictRequestError,
    check_model_finite,
    predict_flat,
)
from mbrl_ros.io.model_update import (
    FIELDS,
    ModelUpdateError,
    UpdateThrottle,
    as_fields,
    pack,
    summary,
    unpack,
    validate,
)
from mbrl_ros.robots import get_robot

build_model = get_robot("car").build_model  # the car's physics prior is the 'parametric' kind

BICYCLE = {"type": "parametric", "dt": 0.2, "substeps": 2, "speed_input": "acceleration",
           "params": {"wheelbase": 2.5, "rear_axle_to_cg": 1.2, "speed_gain": 4.0, "steer_gain": 0.6, "lag": 0.0}}
ENSEMBLE = {"type": "ensemble", "state_dim": 5, "action_dim": 2, "ensemble_size": 2, "hidden_sizes": [8],
            "angle_dims": [2]}


def bicycle(wheelbase: float = 2.5):
    config = {**BICYCLE, "params": {**BICYCLE["params"], "wheelbase": wheelbase}}
    return build_model(config), config


def candidate(wheelbase: float = 2.5, version: int = 1, metrics=None) -> dict:
    model, config = bicycle(wheelbase)
    return pack(model, config, metrics or {"val_rmse_h1": 0.01, "val_rmse_h10": 0.2}, version, "parametric")


def test_pack_fills_every_field_and_unpack_rebuilds_the_model():
    model, config = bicycle()
    fields = pack(model, config, {"val_rmse_h1": np.float32(0.5)}, version=7, kind="parametric")
    assert set(fields) == set(FIELDS)
    assert fields["checksum"] == hashlib.sha256(fields["weights"]).hexdigest()
    assert (fields["version"], fields["model_kind"]) == (7, "parametric")
    assert fields["metric_names"] == ["val_rmse_h1"] and fields["metric_values"] == [0.5]
    assert yaml.safe_load(fields["config_yaml"]) == config
    rebuilt, rebuilt_config, metrics = unpack(fields)
    assert rebuilt_config == config and metrics == {"val_rmse_h1": 0.5}
    s, a = torch.randn(4, 5), torch.rand(4, 2)
    torch.testing.assert_close(rebuilt(s, a), model(s, a))
    assert summary(fields).startswith(f"v7 parametric {fields['checksum'][:12]} val_rmse_h1=0.5")


def test_pack_makes_numpy_and_tuples_plain_so_the_checkpoint_loads():
    model, config = bicycle()
    config = {**config, "params": {k: np.float64(v) for k, v in config["params"].items()}, "dt": np.float32(0.2)}
    _, rebuilt_config, _ = unpack(pack(model, config, None, 1, "parametric"))
    assert type(rebuilt_config["params"]["wheelbase"]) is float


def test_unpack_reads_a_message_object_with_array_weights():
    import array

    fields = candidate()
    message = SimpleNamespace(**{**fields, "weights": array.array("B", fields["weights"]),
                                 "metric_values": array.array("d", fields["metric_values"])})
    model, _, metrics = unpack(message)
    assert metrics == {"val_rmse_h1": 0.01, "val_rmse_h10": 0.2}
    assert as_fields(message)["weights"] == fields["weights"]


def test_unpack_refuses_a_wrong_checksum_and_non_finite_weights():
    fields = candidate()
    with pytest.raises(ModelUpdateError, match="checksum mismatch"):
        unpack({**fields, "checksum": "0" * 64}, source="dynamics/candidate")
    model, config = bicycle()
    model.theta[0] = float("nan")
    weights = checkpoint.to_bytes(model, config)
    broken = {**fields, "weights": weights, "checksum": checkpoint.checksum(weights)}
    with pytest.raises(checkpoint.CheckpointError, match="non-finite values in \\['theta'\\]"):
        unpack(broken)
    with pytest.raises(ModelUpdateError, match="model_kind 'ensemble' differs"):
        unpack({**fields, "model_kind": "ensemble"})
    with pytest.raises(ModelUpdateError, match="no weights"):
        unpack({**fields, "weights": b""})


def test_pack_rejects_a_kind_that_is_not_the_config_type():
    model, config = bicycle()
    with pytest.raises(ValueError, match="differs from the config's type"):
        pack(model, config, None, 1, "ensemble")
    with pytest.raises(ValueError, match="version"):
        pack(model, config, None, -1, "parametric")


def with_payload(fields: dict, **payload) -> dict:
    """``fields`` whose weights are a checkpoint payload with ``payload`` replacing its entries (checksum fixed)."""
    import io

    blob = torch.load(io.BytesIO(fields["weights"]), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**blob, **payload}, buffer)
    weights = buffer.getvalue()
    return {**fields, "weights": weights, "checksum": checkpoint.checksum(weights)}


@pytest.mark.parametrize("payload, why", [
    ({"config": ["not", "a", "mapping"]}, "'config' must be a dict, got list"),
    ({"config": {**BICYCLE, "params": {"wheelbase": "long"}}}, "could not convert"),  # ValueError in build_model
    ({"config": {**BICYCLE, "substeps": "three"}}, "config does not build a model (TypeError"),
    ({"config": {**ENSEMBLE, "ensemble_size": None}}, "config does not build a model (TypeError"),
    ({"state_dict": [1, 2, 3]}, "'state_dict' must be a dict, got list"),
    ({"state_dict": {"theta": torch.zeros(99)}}, "weights do not fit"),
    ({"robot": 7}, "'robot' must be a str, got int"),
    ({"robot": "boat"}, "boat"),
    ({"format": "something/else"}, "expected format"),
])
def test_validate_refuses_a_malformed_model_with_a_diagnostic_never_another_exception(payload, why):
    bad = with_payload(candidate(), **payload)
    with pytest.raises(ModelUpdateError) as refused:
        validate(bad, 5, 2, source="dynamics/model v9")
    assert "dynamics/model v9" in str(refused.value) and why in str(refused.value)


def test_validate_checks_fields_size_dims_and_predictions():
    good = candidate()
    checked = validate(good, 5, 2, max_bytes=len(good["weights"]))
    assert checked.fields["checksum"] == good["checksum"] and checked.model.state_dim == 5
    assert checked.metrics == {"val_rmse_h1": 0.01, "val_rmse_h10": 0.2}
    with pytest.raises(ModelUpdateError, match=f"{len(good['weights'])} bytes of weights, over the limit of 100"):
        validate(good, 5, 2, max_bytes=100)
    with pytest.raises(ModelUpdateError, match="expected \\(6, 2\\)"):
        validate(good, 6, 2)
    with pytest.raises(ModelUpdateError, match="malformed ModelUpdate fields"):
        validate({**good, "version": "seven"}, 5, 2)
    with pytest.raises(ModelUpdateError, match="malformed ModelUpdate fields"):
        validate({**good, "metric_values": [None]}, 5, 2)
    with pytest.raises(ModelUpdateError, match="missing \\['weights'\\]"):
        validate({k: v for k, v in good.items() if k != "weights"}, 5, 2)
    model = build_model(ENSEMBLE)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)
    with pytest.raises(ModelUpdateError, match="test prediction gives non-finite"):
        validate(pack(model, ENSEMBLE, None, 1, "ensemble"), 5, 2)


def test_update_throttle_takes_one_per_interval_and_keeps_the_newest():
    throttle = UpdateThrottle(1.0)
    assert throttle.offer("a", now=10.0) == "a"
    assert throttle.offer("b", now=10.2) is None and throttle.offer("c", now=10.5) is None
    assert throttle.due(10.9) is None
    assert throttle.due(11.0) == "c" and throttle.due(20.0) is None  # b was replaced by the newer c
    assert throttle.deferred == 2
    assert throttle.offer("d", now=11.5) is None
    assert throttle.offer("e", now=12.0) == "e" and throttle.due(13.0) is None  # e is newer than the waiting d


# ---- the registry --------------------------------------------------------------------------

def test_registry_versions_accepted_models_and_keeps_the_candidate_checksum():
    registry = ModelRegistry(state_dim=5, action_dim=2)
    first, second = candidate(2.5, version=40), candidate(3.0, version=41)
    v1 = registry.offer(first)
    assert v1.accepted and v1.deployed.version == 1 and v1.deployed.checksum == first["checksum"]
    v2 = registry.offer(second)
    assert v2.accepted and v2.deployed.version == 2 and v2.deployed.fields["weights"] == second["weights"]
    assert [m.version for m in registry.previous] == [1]
    assert (registry.accepted, registry.rejected) == (2, 0)


def test_registry_rejects_broken_candidates_and_keeps_the_current_model():
    registry = ModelRegistry(state_dim=5, action_dim=2)
    good = registry.offer(candidate()).deployed
    model, config = bicycle()
    model.theta[2] = float("inf")
    weights = checkpoint.to_bytes(model, config)
    nan_weights = {**candidate(), "weights": weights, "checksum": checkpoint.checksum(weights)}
    verdict = registry.offer(nan_weights)
    assert verdict.status == "rejected" and "non-finite" in verdict.reason
    assert verdict.candidate.startswith("v1 parametric") and "val_rmse_h1=0.01" in verdict.candidate
    assert registry.offer({**candidate(3.0), "checksum": "ab" * 32}).status == "rejected"
    assert registry.current is good and (registry.accepted, registry.rejected) == (1, 2)
    assert "checksum mismatch" in registry.last_reason
    same = registry.offer(candidate())
    assert same.status == "ignored" and registry.rejected == 2


def test_registry_rejects_a_model_of_other_dims_or_too_large():
    registry = ModelRegistry(state_dim=4, action_dim=2)
    verdict = registry.offer(candidate())
    assert verdict.status == "rejected" and "(5, 2)" in verdict.reason and "(4, 2)" in verdict.reason
    verdict = ModelRegistry(max_bytes=1000).offer(candidate())
    assert verdict.status == "rejected" and "over the limit of 1000" in verdict.reason
    verdict = ModelRegistry().offer(with_payload(candidate(), config={**BICYCLE, "substeps": "three"}))
    assert verdict.status == "rejected" and "config" in verdict.reason


def test_registry_rejects_finite_weights_with_non_finite_predictions():
    model = build_model(ENSEMBLE)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e30)  # finite weights, but every output overflows
    with pytest.raises(checkpoint.CheckpointError, match="test prediction gives non-finite"):
        check_model_finite(model)
    verdict = ModelRegistry().offer(pack(model, ENSEMBLE, None, 1, "ensemble"))
    assert verdict.status == "rejected" and "non-finite" in verdict.reason


def test_rollback_redeploys_the_previous_model_as_a_new_version():
    registry = ModelRegistry(history_size=2)  # keeps b and a behind c
    with pytest.raises(NoPreviousModel, match="no model deployed yet"):
        registry.rollback()
    a, b, c = candidate(2.0), candidate(2.5), candidate(3.0)
    for update in (a, b, c):
        assert registry.offer(update).accepted
    back = registry.rollback()
    assert (back.version, back.checksum) == (4, b["checksum"])
    back = registry.rollback()
    assert (back.version, back.checksum) == (5, a["checksum"])
    with pytest.raises(NoPreviousModel, match="no previous model"):
        registry.rollback()
    # A model a rollback replaced is not deployed again by offering it again: the trainer's latched candidate,
    # delivered anew to a restarted server, would undo the rollback.
    again = registry.offer(c)
    assert again.status == "ignored" and "a rollback replaced this model (v3)" in again.reason
    assert registry.offer(candidate(3.5)).accepted and registry.current.version == 6


def test_a_saved_registry_is_restored_with_its_versions_history_and_rollbacks(tmp_path):
    """What a respawned dynamics_server starts from (its state_dir): the same model under the same version,
    the history rollback needs, the next version number, and the models rollbacks replaced."""
    registry = ModelRegistry(state_dim=5, action_dim=2, history_size=3)
    a, b, c = candidate(2.0), candidate(2.5), candidate(3.0)
    for update in (a, b, c):
        registry.offer(update)
    registry.rollback()  # b as v4; c was replaced
    path = tmp_path / "server" / "dynamics.json"
    car = {"robot": "car", "state_names": ["x", "y", "yaw", "v", "steer"], "action_names": ["u_accel", "u_steer"]}
    registry.save(path, car)
    assert not list(path.parent.glob(".*.tmp"))
    # Another robot in the same run folder, with models of the same sizes: not its models.
    base = {"robot": "base", "state_names": ["x", "y", "yaw", "v", "w"], "action_names": ["v", "w"]}
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}: saved for .*'car'.*not for .*'base'"):
        ModelRegistry(state_dim=5, action_dim=2).restore(path, base)
    restored = ModelRegistry(state_dim=5, action_dim=2, history_size=3)
    assert restored.restore(path, car)
    assert (restored.current.version, restored.current.checksum) == (4, b["checksum"])
    assert [(m.version, m.checksum) for m in restored.previous] == [(1, a["checksum"])]
    assert torch.equal(restored.current.model.theta, registry.current.model.theta)
    assert restored.offer(c).status == "ignored"
    assert restored.offer(candidate(3.5)).deployed.version == 5
    back = restored.rollback()
    assert (back.version, back.checksum) == (6, b["checksum"])
    assert not ModelRegistry().restore(tmp_path / "none.json")


def test_a_saved_registry_that_fails_its_checks_is_refused_naming_the_file(tmp_path):
    registry = ModelRegistry(state_dim=5, action_dim=2)
    registry.offer(candidate())
    path = tmp_path / "dynamics.json"
    registry.save(path)
    with pytest.raises(checkpoint.CheckpointError, match=r"\(5, 2\).*\(4, 2\)|\(4, 2\).*\(5, 2\)"):
        ModelRegistry(state_dim=4, action_dim=2).restore(path)  # another robot's models
    text = path.read_text()
    path.write_text(text.replace(registry.current.checksum, "ab" * 32))
    with pytest.raises(checkpoint.CheckpointError, match=f"{path} v1.*checksum mismatch"):
        ModelRegistry().restore(path)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}: not a saved model registry"):
        ModelRegistry().restore(path)


# ---- predict -------------------------------------------------------------------------------

def test_predict_flat_matches_the_model_and_names_bad_fields():
    model, _ = bicycle()
    states = np.random.default_rng(0).normal(size=(3, 5))
    actions = np.full((3, 2), 0.5)
    next_states, spread = predict_flat(model, 5, 2, states.ravel(), actions.ravel())
    expected = model(torch.as_tensor(states, dtype=torch.float32), torch.as_tensor(actions, dtype=torch.float32))
    np.testing.assert_allclose(next_states.reshape(3, 5), expected.double().numpy())
    assert spread is None and next_states.dtype == np.float64
    with pytest.raises(PredictRequestError, match="bad dimensions: request has state_dim=4"):
        predict_flat(model, 4, 2, states.ravel()[:12], actions.ravel())
    with pytest.raises(PredictRequestError, match="bad dimensions: 14 state values"):
        predict_flat(model, 5, 2, states.ravel()[:14], actions.ravel())
    with pytest.raises(PredictRequestError, match="bad dimensions"):
        predict_flat(model, 5, 2, states.ravel(), actions.ravel()[:5])
    with pytest.raises(PredictRequestError, match="bad dimensions"):
        predict_flat(model, 5, 2, [], [])
    bad = actions.copy()
    bad[1, 1] = np.nan
    with pytest.raises(PredictRequestError, match="actions: non-finite value nan at row 1, column 1"):
        predict_flat(model, 5, 2, states.ravel(), bad.ravel())
    with pytest.raises(PredictRequestError, match="over the limit of 2"):
        predict_flat(model, 5, 2, states.ravel(), actions.ravel(), max_batch=2)


def test_predict_flat_returns_the_ensemble_spread():
    model = build_model(ENSEMBLE)
    next_states, spread = predict_flat(model, 5, 2, np.zeros(10), np.zeros(4))
    assert next_states.shape == spread.shape == (10,) and np.all(spread >= 0)


# ---- policies: the same message, checks and registry ------------------------------------------

def actor(seed: int = 0):
    from mbrl_ros.core.policies import Actor

    torch.manual_seed(seed)
    policy = Actor(5, 2, [-1.0, -0.5], [1.0, 0.5], context_dim=5, hidden_sizes=[8], angle_dims=[2])
    policy.fit_normaliser(torch.randn(50, 5), torch.randn(50, 5))
    return policy.eval()


def test_a_policy_travels_as_a_model_update_and_unpacks_to_the_same_actor():
    from mbrl_ros.io.model_update import POLICY_KIND, pack_policy

    policy = actor()
    fields = pack_policy(policy, {"candidate_cost_starts": np.float32(1.5)}, version=4)
    assert set(fields) == set(FIELDS) and (fields["model_kind"], fields["version"]) == (POLICY_KIND, 4)
    assert fields["checksum"] == hashlib.sha256(fields["weights"]).hexdigest()
    assert yaml.safe_load(fields["config_yaml"])["hidden_sizes"] == [8]
    checked = validate(fields, state_dim=5, action_dim=2)
    states, goals = torch.randn(7, 5), torch.randn(7, 5)
    with torch.no_grad():
        torch.testing.assert_close(checked.model(states, goals), policy(states, goals))
    assert checked.metrics == {"candidate_cost_starts": 1.5}
    with pytest.raises(ModelUpdateError, match=r"\(state_dim, action_dim\) = \(5, 2\), expected \(6, 2\)"):
        validate(fields, state_dim=6, action_dim=2, source="policy/candidate v4")


def test_the_policy_registry_takes_only_sound_policies_and_rolls_back():
    from mbrl_ros.io.model_update import pack_policy

    registry = ModelRegistry(state_dim=5, action_dim=2, kinds=("policy",))
    first, second = pack_policy(actor(0), None, 1), pack_policy(actor(1), None, 2)
    assert registry.offer(first).accepted
    verdict = registry.offer(candidate(), source="policy/candidate v9")
    assert verdict.status == "rejected" and "model_kind 'parametric': expected one of ['policy']" in verdict.reason
    broken = actor(2)
    with torch.no_grad():
        broken.net[0].weight[0, 0] = float("nan")
    verdict = registry.offer(pack_policy(broken, None, 3), source="policy/candidate v3")
    assert verdict.status == "rejected" and "non-finite" in verdict.reason and registry.current.version == 1
    assert registry.offer(second).accepted and registry.current.checksum == second["checksum"]
    restored = registry.rollback()
    assert (restored.version, restored.checksum) == (3, first["checksum"])
    models = ModelRegistry(state_dim=5, action_dim=2, kinds=("parametric",))
    assert "expected one of ['parametric']" in models.offer(first).reason
