"""The open-loop study's queue simulation: its queue obeys queueing theory where theory has an
answer, and it reads the serve report the serve benchmark writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.studies.open_loop import (
    RunCost,
    committed_serve,
    every_waiting_text,
    fit_run_cost,
    policies,
    simulate,
)
from gist_onnx.batcher import RunStats
from gist_onnx.planning import Waiting

pytestmark = pytest.mark.core
REPO = Path(__file__).resolve().parents[1]


def test_one_at_a_time_waits_as_pollaczek_khinchine_says() -> None:
    """M/D/1 at 50% utilization: mean time in the system = D + rho D / (2 (1 - rho)) = 1.5 D."""
    service = RunCost(fixed_s=0.010, per_token_s=0.0)
    alone = policies(512, 64)["one_at_a_time"]
    figures = simulate(alone, [10], rate=50.0, cost=service, seconds=1000, seed=0)
    assert figures["mean_s"] == pytest.approx(0.015, rel=0.03)
    assert figures["busy_share"] == pytest.approx(0.5, rel=0.02)
    assert figures["texts_per_run"] == 1


def test_at_a_light_load_a_text_waits_only_for_its_own_run() -> None:
    cost = RunCost(fixed_s=0.020, per_token_s=0.001)
    for name, policy in policies(512, 64).items():
        figures = simulate(policy, [12], rate=0.01, cost=cost, seconds=200_000, seed=1)
        assert figures["p50_s"] == pytest.approx(0.032), name  # 20 ms + 12 tokens


def test_batching_keeps_up_where_one_at_a_time_cannot() -> None:
    """Offered 1.2x what runs of one text can serve, one at a time falls behind for good, and the
    planner's runs grow until the worker keeps up."""
    cost = RunCost(fixed_s=0.020, per_token_s=0.001)  # 32 ms a text alone: 31 texts/s
    alone, batched = (
        simulate(policies(512, 64)[name], [12], rate=37.5, cost=cost, seconds=60, seed=2)
        for name in ("one_at_a_time", "planner")
    )
    assert alone["p99_s"] > 10 * batched["p99_s"]
    assert batched["texts_per_run"] > 1.2 and batched["busy_share"] < 1


def test_every_waiting_text_takes_the_oldest_that_fit_the_budget() -> None:
    waiting = [Waiting([n]) for n in (10, 30, 20, 40)]
    assert every_waiting_text(waiting, budget=90) == [0, 1, 2]  # 3 x 30; a fourth would be 4 x 40
    assert every_waiting_text(waiting, budget=50) == [0]  # 2 x 30 > 50
    assert every_waiting_text([Waiting([600])], budget=512) == [0]  # one text always runs


def test_it_reads_the_serve_report_the_serve_benchmark_commits() -> None:
    report = REPO / "benchmarks/results/epyc-2core/serve.json"
    figures = committed_serve(report)
    assert set(figures) == set(json.loads(report.read_text())["precisions"])
    for row in figures.values():
        assert row["peak_texts_per_s"] > 0 and row["idle_p50_ms"] > 0
        assert row["server_50%_p99_ms"] > 0 and row["in_process_50%_p99_ms"] > 0


def test_the_run_cost_is_fitted_on_the_batchers_own_runs() -> None:
    runs = [RunStats(n, n * width, [], 0.013 + 0.001 * n * width) for n in (1, 2, 3) for width in (9, 17, 40)]
    cost = fit_run_cost(runs)
    assert cost.fixed_s == pytest.approx(0.013) and cost.per_token_s == pytest.approx(0.001)
    assert cost(100) == pytest.approx(0.113)
