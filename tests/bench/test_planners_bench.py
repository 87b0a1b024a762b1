"""``mbrl-ros bench planners`` compares fairly and records its conditions (no timings asserted)."""

import pytest
import torch

from mbrl_ros.bench import planners as bench
from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.models.base import TimeMajorDynamics
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots.car.bicycle import KinematicBicycle


class GradModeRecorder(KinematicBicycle):
    """The car's bicycle, noting whether autograd was on at each call."""

    def __init__(self):
        super().__init__(dt=0.1, substeps=1)
        self.grad_modes = set()

    def forward(self, states, actions):
        self.grad_modes.add(torch.is_grad_enabled())
        return super().forward(states, actions)

    def time_major(self):
        return TimeMajorDynamics(self)  # our MPPI plans through forward too (not the bicycle's fast path)


def small_mppi(model):
    cost = build_cost({"goal_pose": {"form": "quadratic"}, "effort": {"weight": 0.01}}, 5, 2)
    cost.set_context("goal", torch.tensor([2.0, 1.0, 0.0, 0.0, 0.0]))
    return build_planner("mppi", model, cost, {"num_samples": 32, "horizon": 5, "compile": False})


def test_pytorch_mppi_runs_under_the_same_grad_mode_as_ours():
    pytest.importorskip("pytorch_mppi")  # the 'bench' extra
    model = GradModeRecorder()
    planner = small_mppi(model)
    planner.plan(torch.zeros(5))
    assert model.grad_modes == {False}
    model.grad_modes.clear()
    step = bench.pytorch_mppi_baseline(planner, compiled=False)
    action = step(torch.zeros(5))
    assert model.grad_modes == {False} and action.shape == (2,)


def test_a_case_records_its_conditions_beside_the_old_fields():
    def tiny_ilqr():
        model = KinematicBicycle(dt=0.1, substeps=1)
        cost = build_cost({"goal_pose": {"form": "quadratic"}, "effort": {"weight": 0.1}}, 5, 2)
        cost.set_context("goal", torch.tensor([2.0, 1.0, 0.3, 0.0, 0.0]))
        return build_planner("ilqr", model, cost, {"horizon": 10}), torch.zeros(5)

    for name in ("tiny_ilqr_cold", "tiny_ilqr_receding"):
        result = bench.run_case(bench.Case(name, tiny_ilqr, None, False, "none"), repeats=3, warmup=1,
                                with_baseline=False, threads=1)
        old_fields = {"name", "median_ms", "p99_ms", "gflops", "baseline_median_ms", "speedup_vs_pytorch_mppi",
                      "repeats", "target"}
        assert old_fields <= set(result)
        assert result["conditions"] == {
            "planner": "ilqr", "grad_mode": "no_grad", "threads": 1, "dtype": "float32",
            "dynamics": "KinematicBicycle", "propagation": None, "cost_terms": ["goal_pose", "effort"],
            "samples": None, "horizon": 10, "compiled": False, "ilqr_ensemble": "mean", "solve_threads": 1,
            "ilqr_numpy_form": True, "ilqr_native": "backward pass, closed-loop rollouts, linearisation",
        }
        assert result["iterations_median"] >= 1 and result["median_ms"] > 0


def test_a_paired_case_times_both_paths_in_turns_on_the_same_problem():
    """The iLQR bicycle cases time the numpy path solve by solve in turns with the compiled one: both solve the
    same problem (the same iterations, float64 costs to rounding), and the JSON carries both and their ratio."""
    names = []

    def tiny_ilqr(native=True):
        model = KinematicBicycle(dt=0.1, substeps=1).double()
        cost = build_cost({"goal_pose": {"form": "quadratic"}, "effort": {"weight": 0.1}}, 5, 2)
        cost.set_context("goal", torch.tensor([2.0, 1.0, 0.3, 0.0, 0.0]))
        planner = build_planner("ilqr", model, cost, {"horizon": 10, "native": native})
        original = planner.plan
        planner.plan = lambda state: names.append(native) or original(state)  # who solved, in which order
        return planner, torch.zeros(5, dtype=torch.float64)

    for mode in ("cold", "warm", "receding"):
        names.clear()
        case = bench.Case(f"tiny_ilqr_{mode}", tiny_ilqr, None, False, "none",
                          paired=("the numpy path", lambda: tiny_ilqr(native=False)))
        result = bench.run_case(case, repeats=4, warmup=1, with_baseline=False, threads=1)
        assert result["paired"] == "the numpy path" and result["conditions"]["ilqr_native"].startswith("backward")
        assert result["speedup_vs_paired"] == pytest.approx(result["paired_median_ms"] / result["median_ms"])
        assert result["paired_iterations_median"] == result["iterations_median"] >= 1
        assert names.count(True) >= 5 and names.count(False) >= 5
        if mode != "receding":  # in turns (receding adds an untimed cold solve per episode to each)
            assert names == [True, False] * 5, names


def test_nav2_cases_are_there_with_their_published_times():
    cases = {case.name: case for case in bench.CASES}
    assert cases["mppi_bicycle_K1024_H100"].reference["median_ms"] == 3.4
    assert "8-12 ms" in cases["mppi_bicycle_K2000_H56_obstacles"].reference["note"]
    assert {"ilqr_ensemble_H30", "ilqr_bicycle_H50_warm", "ilqr_bicycle_H50_cold"} <= set(cases)
    # The older (numpy, torch) paths of the iLQR bicycle cases, for ratios measured in the same run.
    for mode in ("cold", "warm", "receding"):
        assert cases[f"ilqr_bicycle_torch_H50_{mode}"].build()[0].numpy_form is False
        numpy_path = cases[f"ilqr_bicycle_numpy_H50_{mode}"].build()[0]
        assert numpy_path.numpy_form is True and numpy_path.native_status == "off"
        compiled = cases[f"ilqr_bicycle_H50_{mode}"].build()[0]
        assert compiled.numpy_form is True and compiled.config.native
    planner, _ = bench.nav2_bicycle(64, 5, obstacles=True)
    assert planner.cost.names == ["path_tracking", "effort", "obstacles"]
    assert (planner.config.num_samples, planner.horizon) == (64, 5)
