"""Docs as tests: the README's commands, the /command docs and the public API stay true."""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib import import_module
from pathlib import Path

import pytest

import securechat
from securechat.client.commands import COMMANDS, Command, help_lines

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\|", "|")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _code_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"```sh\n(.*?)```", text, re.S)]


def test_readme_starts_with_install_and_run_then_test_command() -> None:
    first, second = _code_blocks(README)[:2]
    assert first.startswith("python3 -m venv .venv && ")
    assert "securechat-certs --out certs" in first
    assert "securechat-server --cert certs/server.pem --key certs/server.key" in first
    assert second == ".venv/bin/pytest"


def test_ci_runs_exactly_the_readme_commands() -> None:
    first, second = _code_blocks(README)[:2]
    ci_lines = [line.strip() for line in CI.splitlines()]
    for step in first.split(" && "):
        assert any(line.startswith(step) for line in ci_lines), step
    assert second in ci_lines


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_is_documented_in_readme_and_client_docs(command: Command) -> None:
    usage = command.usage
    assert f"`{usage}`" in README
    assert usage in (ROOT / "docs" / "client.md").read_text(encoding="utf-8")
    assert any(line.startswith(usage) for line in help_lines())


def test_public_api_is_pinned() -> None:
    assert sorted(securechat.__all__) == sorted(
        [
            "PROTOCOL_VERSION",
            "CertificateVerifyError",
            "ChatError",
            "ConfigError",
            "ConnectionLost",
            "Decoder",
            "Frame",
            "FrameTooLarge",
            "ProtocolError",
            "SecureChatError",
            "StoreError",
            "TLSError",
            "__version__",
            "encode",
            "encode_frame",
        ]
    )
    errors = [getattr(securechat, n) for n in securechat.__all__ if n.endswith("Error")]
    assert all(issubclass(e, securechat.SecureChatError) for e in errors)


def test_every_module_declares_all_and_docstrings() -> None:
    for path in sorted((ROOT / "securechat").glob("*.py")):
        module = import_module(f"securechat.{path.stem}")
        assert module.__doc__, path.name
        if path.stem == "__main__":
            continue
        assert hasattr(module, "__all__"), path.name
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, f"{path.stem}.{name} has no docstring"


def test_console_scripts_have_main_taking_argv() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for target in project["project"]["scripts"].values():
        module, func = target.split(":")
        main = getattr(import_module(module), func)
        assert list(inspect.signature(main).parameters) == ["argv"]
