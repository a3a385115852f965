"""The report: medians, the table of verdicts, and what and where was measured."""

from __future__ import annotations

import hashlib
import os
import platform
import ssl
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .catalog import SCENARIOS
from .harness import Figures

__all__ = [
    "ROOT",
    "code_version",
    "format_value",
    "machine",
    "package_fingerprint",
    "print_table",
    "summarize",
    "table_rows",
]

ROOT = Path(__file__).resolve().parents[2]
"""The repository: the commit and the package measured are looked up here."""


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = _status_meminfo("MemTotal")
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "kernel": platform.release(),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the package files that differed from it (git, read-only)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        # Only the end: porcelain status lines start with a meaningful space (" M path").
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--", "securechat")
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_package_files": [line[3:] for line in changed.splitlines()],
        "package_sha256": package_fingerprint(),
    }


def package_fingerprint() -> str:
    """A hash of the server package's source, to notice edits made during a benchmark."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "securechat").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _status_meminfo(name: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def summarize(runs: list[Figures]) -> dict[str, float]:
    """Median of every numeric figure over the runs that produced it."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(k for k, v in run.items() if _numeric(v)))
    return {
        key: statistics.median(run[key] for run in runs if _numeric(run.get(key))) for key in keys
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per shown figure: scenario, figure, median, target, verdict."""
    rows = []
    for name, result in results.items():
        for fig in SCENARIOS[name].figures:
            value = result["median"].get(fig.key)
            target = f"{fig.target[0]} {fig.target[1]:g}" if fig.target else ""
            verdict = fig.verdict(value) if value is not None else ("no data" if target else "")
            rows.append(
                {
                    "scenario": name,
                    "figure": fig.label,
                    "key": fig.key,
                    "median": value,
                    "target": target,
                    "result": verdict,
                }
            )
    return rows


def format_value(value: float | None) -> str:
    """A figure with sensible precision."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(rows: list[dict[str, Any]], runs: int) -> None:
    """The medians, as a plain-text table."""
    print(f"\nmedians of {runs} run(s)")
    width = max([9, *(len(row["scenario"]) for row in rows)])
    header = f"{'scenario':<{width}} {'figure':<44} {'median':>12} {'target':>10}  result"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['scenario']:<{width}} {row['figure']:<44} {format_value(row['median']):>12} "
            f"{row['target']:>10}  {row['result']}"
        )
