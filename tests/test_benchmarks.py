"""The benchmark harness (benchmarks/run.py) runs end to end at a tiny scale.

One smoke run of every scenario, through the same command line as a real
run, so that the harness cannot silently rot as the server changes: each
scenario must produce all of its figures, lose no message and leave no server
behind. The run is a subprocess with its own deadline; its server
subprocesses die with it (``PR_SET_PDEATHSIG``) if it has to be killed.

The cluster scenarios need PostgreSQL and Redis: without them the smoke run
leaves them out and their tests skip, unless ``SECURECHAT_CLUSTER_TESTS`` is
``required`` (CI), as for the cluster tests (tests/services.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "benchmarks" / "run.py"
SMOKE_DEADLINE = 90.0
"""Seconds the whole smoke run may take; it normally takes about 25 (15 without the cluster
scenarios)."""

pytestmark = pytest.mark.timeout(SMOKE_DEADLINE + 30)


def _load_harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("securechat_benchmarks_run", RUN_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


harness = _load_harness()

from bench.engines import REQUIRED_ENV, missing_engines  # noqa: E402  (path set by run.py)

CLUSTER_MISSING = missing_engines()
"""Why the cluster scenarios cannot run here (None: they can)."""
CLUSTER = set(harness.scenario_names(["cluster"]))


def _scenario_params() -> list[Any]:
    """Every scenario as a test parameter, the cluster ones marked ``cluster``."""
    return [
        pytest.param(name, marks=pytest.mark.cluster) if name in CLUSTER else name
        for name in harness.SCENARIOS
    ]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON report of ``run.py --scale 0.01 --runs 1`` over every scenario."""
    out = tmp_path_factory.mktemp("bench")
    report = out / "results.json"
    chosen: list[str] = []
    if CLUSTER_MISSING is not None:
        if os.environ.get(REQUIRED_ENV) == "required":
            pytest.fail(f"the cluster scenarios need {CLUSTER_MISSING} ({REQUIRED_ENV}=required)")
        chosen = [f"--scenario={name}" for name in harness.SCENARIOS if name not in CLUSTER]
    argv = [
        sys.executable,
        str(RUN_PY),
        "--scale",
        "0.01",
        "--runs",
        "1",
        "--quiet-wait",
        "0",
        "--timeout",
        "45",
        "--cache",
        str(out / "cache"),
        "--json",
        str(report),
        *chosen,
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=SMOKE_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"smoke run overran {SMOKE_DEADLINE} s:\n{output.decode()[-4000:]}")
    text = output.decode("utf-8", "replace")
    assert proc.returncode == 0, text[-4000:]
    data: dict[str, Any] = json.loads(report.read_text())
    data["output"] = text
    return data


def _only_run(smoke: dict[str, Any], scenario: str) -> dict[str, Any]:
    if scenario not in smoke["scenarios"]:
        pytest.skip(f"the cluster scenarios need {CLUSTER_MISSING}")
    runs = smoke["scenarios"][scenario]["runs"]
    assert len(runs) == 1
    run: dict[str, Any] = runs[0]
    assert "error" not in run, run["error"]
    return run


@pytest.mark.parametrize("scenario", _scenario_params())
def test_scenario_reports_every_figure_as_a_finite_number(
    smoke: dict[str, Any], scenario: str
) -> None:
    run = _only_run(smoke, scenario)
    for figure in harness.SCENARIOS[scenario].figures:
        value = run.get(figure.key)
        assert isinstance(value, int | float), (figure.key, value)
        assert math.isfinite(value), (figure.key, value)


@pytest.mark.parametrize("scenario", _scenario_params())
def test_scenario_loses_no_message(smoke: dict[str, Any], scenario: str) -> None:
    assert _only_run(smoke, scenario)["lost"] == 0


@pytest.mark.parametrize("scenario", _scenario_params())
def test_scenario_measures_cpu_of_server_and_generator(
    smoke: dict[str, Any], scenario: str
) -> None:
    run = _only_run(smoke, scenario)
    server = [v for k, v in run.items() if k.startswith("server_cpu_s")]
    generator = [v for k, v in run.items() if k.startswith("gen_cpu_s")]
    assert server and generator
    assert all(v >= 0 for v in server + generator)
    assert sum(generator) > 0  # the generator always does some TLS work


@pytest.mark.parametrize("scenario", _scenario_params())
def test_scenario_servers_stop_cleanly_and_log_no_errors(
    smoke: dict[str, Any], scenario: str
) -> None:
    assert _only_run(smoke, scenario)["problems"] == []


def test_table_has_a_verdict_for_every_target(smoke: dict[str, Any]) -> None:
    rows = smoke["table"]
    expected = [
        (s, f.key)
        for s, sc in harness.SCENARIOS.items()
        if s in smoke["scenarios"]
        for f in sc.figures
    ]
    assert [(r["scenario"], r["key"]) for r in rows] == expected
    for row in rows:
        assert row["result"] in (("met", "not met") if row["target"] else ("",)), row
    assert "medians of 1 run(s)" in smoke["output"]


def test_report_describes_the_machine(smoke: dict[str, Any]) -> None:
    machine = smoke["machine"]
    assert machine["cpus"] >= 1
    assert machine["python"] and machine["openssl"]
    assert smoke["scale"] == 0.01 and smoke["runs"] == 1


def test_verdicts_follow_the_target_direction() -> None:
    at_most = harness.Figure("x", "x", ("<=", 1.7))
    at_least = harness.Figure("y", "y", (">=", 700))
    exactly = harness.Figure("z", "z", ("==", 0))
    assert at_most.verdict(1.7) == "met" and at_most.verdict(1.71) == "not met"
    assert at_least.verdict(700) == "met" and at_least.verdict(699.9) == "not met"
    assert exactly.verdict(0) == "met" and exactly.verdict(1) == "not met"
    assert harness.Figure("w", "w").verdict(5) == ""


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert harness.percentile(values, 50) == 50
    assert harness.percentile(values, 99) == 99
    assert harness.percentile(values, 100) == 100
    assert harness.percentile([], 99) == 0.0


def test_stall_names_every_stall_scenario_once() -> None:
    stall = [name for name in harness.SCENARIOS if name.startswith("stall-")]
    assert len(stall) == 4
    assert harness.scenario_names(["stall"]) == stall
    assert harness.scenario_names(["fanout", "stall", "stall-flood"]) == ["fanout", *stall]
    assert harness.scenario_names(None) == list(harness.SCENARIOS)


def test_stall_scenarios_judge_the_other_users_round_trip(smoke: dict[str, Any]) -> None:
    for name in harness.scenario_names(["stall"]):
        run = _only_run(smoke, name)
        assert run["probes"] > 0 and run["idle_probes"] > 0
        assert 0 < run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
        targets = smoke["scenarios"][name]["targets"]
        assert targets["p99_ms"] == "<= 50" and targets["max_ms"] == "<= 200"


def test_message_flood_accounts_for_every_message(smoke: dict[str, Any]) -> None:
    run = _only_run(smoke, "stall-flood")
    assert run["messages"] > 0
    answered = run["acked"] + run["rate_limited"] + run["refused_other"] + run["unanswered"]
    assert answered == run["messages"]


def test_login_flood_accounts_for_every_attempt(smoke: dict[str, Any]) -> None:
    run = _only_run(smoke, "stall-logins")
    assert run["attempts"] > 0
    assert sum(run["outcomes"].values()) == run["attempts"]
    parts = run["bad_password"] + run["refused"] + run["throttled"] + run["timeouts"]
    assert parts == run["attempts"]


def test_cluster_names_every_cluster_scenario_once() -> None:
    assert harness.scenario_names(["cluster"]) == [
        "cluster-fanout",
        "cluster-latency",
        "cluster-durable",
        "cluster-failover",
    ]


@pytest.mark.cluster
@pytest.mark.parametrize("scenario", sorted(CLUSTER))
def test_cluster_scenarios_count_postgres_and_redis_as_server_cpu(
    smoke: dict[str, Any], scenario: str
) -> None:
    run = _only_run(smoke, scenario)
    parts = run["server_cpu_s"] + run["postgres_cpu_s"] + run["redis_cpu_s"]
    assert run["cluster_cpu_s"] == pytest.approx(parts)
    assert run["cluster_cpu_s"] > 0
    assert run["pg_commits"] > 0  # the database measured is the one the servers used


@pytest.mark.cluster
def test_cluster_scenarios_have_the_issue_targets(smoke: dict[str, Any]) -> None:
    _only_run(smoke, "cluster-fanout")
    targets = {name: smoke["scenarios"][name]["targets"] for name in CLUSTER}
    assert targets["cluster-latency"]["p99_ms"] == "<= 20"
    assert targets["cluster-durable"]["msgs_per_s"] == ">= 5000"
    assert targets["cluster-failover"]["p99_s"] == "<= 5"


@pytest.mark.cluster
def test_cluster_fanout_shows_every_copy_in_number_order(smoke: dict[str, Any]) -> None:
    run = _only_run(smoke, "cluster-fanout")
    assert run["deliveries"] == run["messages"] * run["clients"]
    assert run["misordered"] == 0


@pytest.mark.cluster
def test_failover_brings_back_every_client_of_the_killed_server(smoke: dict[str, Any]) -> None:
    run = _only_run(smoke, "cluster-failover")
    assert run["failed_over"] > 0 and run["not_back"] == 0
    assert 0 < run["p50_s"] <= run["p99_s"] <= run["max_s"]
    assert run["acked_missing"] == run["stored_twice"] == run["views_with_holes"] == 0
    assert run["misordered"] == 0
