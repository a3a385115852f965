#!/usr/bin/env python3
"""Load benchmarks for the securechat server (issue 6).

Usage::

    .venv/bin/python benchmarks/run.py [--scenario NAME ...] [--runs N] [--scale F] [--json OUT]

Strategy
--------
Every run of every scenario starts a *fresh* server subprocess
(``python -m securechat.server.cli``) on 127.0.0.1 with its own temporary
database and certificates made here (cached under ``benchmarks/.cache``), drives
it from this process and stops it with SIGTERM. The load generator is one
asyncio event loop in one thread; its clients are non-blocking
``ssl.SSLSocket`` objects served straight from the loop (``add_reader``), and
they speak the wire protocol through :mod:`securechat.wire.protocol` (``encode``
out, ``Decoder`` in).
Every password client shares one ``SSLContext``. The generator competes with
the server for the machine's cores, so every scenario reports both sides' CPU
time over its measured phase: the server's from ``/proc/PID/stat`` (utime +
stime, all threads) and the generator's from ``time.process_time()``, plus
what the rest of the machine used meanwhile (other people's work shows there).

Latencies are measured to the moment the bytes reached the recipient's
socket, from the kernel's receive timestamps: one generator process reading
99 copies one after the other would otherwise measure mostly itself. The
time until the generator had decoded every copy is reported too.

Every load loop is bounded twice, by a count and by a deadline, and stops by
itself; a server that dies or a client that stalls turns into an error in the
results, never a hang. The server subprocess is tied to this process
(``PR_SET_PDEATHSIG``), so it cannot outlive a killed benchmark.

``--scale`` multiplies every size (clients, messages, bytes, durations) for
smoke runs, with small floors so that each scenario still means something.
The figures, their definitions and the targets are in benchmarks/README.md.

Layout
------
This file is the command line and the runner; the rest lives in the
``bench`` package beside it, one job a module: ``common`` (shared names),
``pki`` (certificates), ``server`` (the server subprocess), ``measure`` (CPU
accounting), ``client`` (the generator's TLS clients), ``harness`` (what a
scenario gets and returns), ``scenarios_*`` (the scenarios), ``catalog``
(scenarios by name, with their figures and targets) and ``report`` (medians,
table, machine and code version).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results.json"
DEFAULT_CACHE = HERE / ".cache"

# The bench package sits beside this file; put it on the path also when this file is
# loaded by its path (tests/test_benchmarks.py) rather than run as a script.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench.catalog import GROUPS, SCENARIOS  # noqa: E402
from bench.common import percentile  # noqa: E402
from bench.harness import Bench, Figure, Figures  # noqa: E402
from bench.measure import wait_for_quiet  # noqa: E402
from bench.pki import prepare_pki  # noqa: E402
from bench.report import (  # noqa: E402
    code_version,
    format_value,
    machine,
    package_fingerprint,
    print_table,
    summarize,
    table_rows,
)

__all__ = ["SCENARIOS", "Figure", "build_parser", "main", "percentile", "run_all", "scenario_names"]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def scenario_names(chosen: list[str] | None) -> list[str]:
    """The scenarios to run, in order, for the ``--scenario`` values given (None: all);
    a group name (``stall``) stands for its scenarios."""
    names = chosen or list(SCENARIOS)
    return list(dict.fromkeys(n for choice in names for n in GROUPS.get(choice, (choice,))))


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Every chosen scenario, ``args.runs`` times each, with fresh servers."""
    names = scenario_names(args.scenario)
    certificates = max((round(SCENARIOS[n].certificates * args.scale) for n in names), default=0)
    pki = prepare_pki(Path(args.cache), clients=max(certificates, 20 if "connect" in names else 0))
    results: dict[str, Any] = {}
    for name in names:
        scenario = SCENARIOS[name]
        runs: list[Figures] = []
        for index in range(args.runs):
            busy_before = await wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else 0.0
            fingerprint = package_fingerprint()
            with tempfile.TemporaryDirectory(prefix=f"securechat-bench-{name}-") as tmp:
                bench = Bench(
                    args.scale,
                    pki,
                    Path(tmp),
                    profile=args.py_spy,
                    server_args=tuple(args.server_arg),
                )
                began = time.perf_counter()
                try:
                    async with asyncio.timeout(args.timeout):
                        figures = await scenario.run(bench)
                except Exception as exc:
                    figures = {"error": f"{type(exc).__name__}: {exc}"}
                figures["run_s"] = time.perf_counter() - began
                figures["busy_cores_before"] = busy_before
                figures["package_sha256"] = fingerprint
                if package_fingerprint() != fingerprint and "error" not in figures:
                    figures["error"] = "the securechat package changed during this run"
            runs.append(figures)
            shown = ", ".join(
                f"{f.key}={format_value(figures[f.key])}"
                for f in scenario.figures
                if f.key in figures
            )
            print(f"{name} run {index + 1}/{args.runs}: {shown}", flush=True)
            for problem in [*figures.get("problems", []), figures.get("error")]:
                if problem:
                    print(f"  problem: {problem}", file=sys.stderr, flush=True)
            gc.collect()
        results[name] = {
            "runs": runs,
            "median": summarize(runs),
            "targets": {
                f.key: f"{f.target[0]} {f.target[1]:g}" for f in scenario.figures if f.target
            },
        }
    return results


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description="securechat server benchmarks (issue 6)")
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, *GROUPS],
        help="run only this scenario, or 'stall' for every stall-* one (repeatable; default: all)",
    )
    p.add_argument("--runs", type=int, default=3, help="runs per scenario (default 3)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size, e.g. 0.01 for a smoke run"
    )
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    p.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where certificates are kept between runs (default {DEFAULT_CACHE})",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for the machine to be nearly idle "
        "(default 30; 0 skips the check)",
    )
    p.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy (if installed) during each measured phase and "
        "write collapsed stacks into DIR; figures from such runs are not comparable",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds one run of one scenario may take (default 60 + 600 x scale)",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to every server (repeatable), e.g. --server-arg=--io-threads=1",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 0 if every run produced its figures, 1 otherwise."""
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.scale <= 0:
        print("run.py: --runs must be >= 1 and --scale > 0", file=sys.stderr)
        return 2
    if args.timeout is None:
        args.timeout = 60 + 600 * args.scale
    _raise_fd_limit()
    code = code_version()
    started = time.time()
    results = asyncio.run(run_all(args))
    rows = table_rows(results)
    print_table(rows, args.runs)
    report = {
        "machine": machine(),
        "code": code,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "runs": args.runs,
        "scale": args.scale,
        "table": rows,
        "scenarios": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    failed = any("error" in run for r in results.values() for run in r["runs"])
    if report["code"]["package_sha256"] != package_fingerprint():
        print("warning: the securechat package changed during the benchmark", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
