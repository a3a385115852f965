"""The config file: keys from the options, the command line over the file, errors that name
the file and the key, --check-config, and the example in contrib/ kept in step."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from securechat.server.cli import build_parser
from securechat.server.config import (
    config_keys,
    effective_lines,
    parse_with_config,
    read_config,
    redact,
)
from tests.conftest import Pki

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "contrib" / "securechat.toml"
KEY_LINE = re.compile(r"^(# )?([a-z0-9-]+) = (.*)$")

pytestmark = pytest.mark.timeout(30)


def _check_config(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "securechat.server.cli", "--check-config", *argv],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_every_option_is_a_config_key_and_only_options_are() -> None:
    parser = build_parser()
    keys = config_keys(parser)
    longs = {o[2:] for a in parser._actions for o in a.option_strings if o.startswith("--")} - {
        "help",
        "version",
        "config",
        "check-config",
    }
    assert set(keys) == longs
    assert "max-file-size" in keys
    assert keys["max-file-size"].dest == "max_file_size"


def test_the_example_config_has_every_key_with_its_default_and_validates() -> None:
    parser = build_parser()
    text = EXAMPLE.read_text(encoding="utf-8")
    found = {m.group(2): m for line in text.splitlines() if (m := KEY_LINE.match(line))}
    assert set(found) == set(config_keys(parser)), "contrib/securechat.toml out of step"
    defaults = dict(
        line.split(" = ", 1)
        for line in effective_lines(parser, parser.parse_args(["--cert", "c", "--key", "k"]))
        if not line.startswith("#")
    )
    for key, match in found.items():
        # A key without a default (or an empty list) shows an example value instead.
        if match.group(1) and defaults.get(key, "[]") != "[]":
            assert match.group(3) == defaults[key], f"{key}: the example's default is stale"
    # The file as shipped, and with every commented-out key switched on, both validate.
    read_config(parser, EXAMPLE)


def test_every_example_value_switched_on_is_accepted(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = "\n".join(
        line.removeprefix("# ") if KEY_LINE.match(line) else line for line in text.splitlines()
    )
    values = read_config(build_parser(), _write(tmp_path / "all.toml", uncommented))
    assert values["max_file_size"] == 1073741824
    assert values["log_level"] == "INFO"


def test_the_command_line_overrides_the_file_and_the_file_overrides_defaults(
    tmp_path: Path,
) -> None:
    config = _write(
        tmp_path / "s.toml",
        'cert = "c.pem"\nkey = "k.pem"\nport = 8000\nmax-sessions = 3\n'
        'connection-limit = ["10.0.0.0/8=500"]\nlog-level = "debug"\n',
    )
    args, _ = parse_with_config(
        build_parser, ["--config", str(config), "--port", "9000", "--connection-limit=::1/128=2"]
    )
    assert args.port == 9000
    assert args.max_sessions == 3
    assert args.cert == Path("c.pem")
    assert args.log_level == "DEBUG"
    assert [str(n) for n, _ in args.connection_limit] == ["::1/128"]  # replaced, not added
    args, _ = parse_with_config(build_parser, ["--config", str(config)])
    assert [(str(n), c) for n, c in args.connection_limit] == [("10.0.0.0/8", 500)]
    assert args.message_burst == 20


BAD_FILES = [
    ("prot = 80", "unknown key 'prot'"),
    ("max_sessions = 3", "unknown key 'max_sessions'; did you mean 'max-sessions'?"),
    ('port = "80"', 'port = "80": allowed: a whole number from 0 to 65535'),
    ("port = 99999", "port = 99999: 99999 is not a whole number from 0 to 65535"),
    ("port = true", "port = true: allowed: a whole number from 0 to 65535"),
    ("message-rate = 0", "message-rate = 0: 0 is not a number above 0"),
    ("io-threads = 2.5", "io-threads = 2.5: allowed: a whole number from 1 to 64"),
    ('tls-min = "1.1"', 'tls-min = "1.1": allowed: one of "1.2", "1.3"'),
    ("tls-min = 1.3", 'tls-min = 1.3: allowed: one of "1.2", "1.3"'),
    ('connection-limit = "x"', "allowed: a list, each a string like CIDR=N"),
    ('connection-limit = ["x"]', "'x' is not CIDR=N"),
    ("check-config = true", "unknown key 'check-config'"),
    ("port = ", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[t for t, _ in BAD_FILES])
def test_a_bad_config_file_is_refused_naming_file_and_key_exit_2(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "bad.toml", f'cert = "c"\nkey = "k"\n{text}\n')
    with pytest.raises(SystemExit) as stopped:
        parse_with_config(build_parser, ["--config", str(config)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"securechat-server: error: {config}: ")
    assert message in err
    assert err.count("\n") == 1


def test_a_missing_config_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_with_config(build_parser, ["--config", str(tmp_path / "nope.toml")])
    assert f"cannot read config file {tmp_path / 'nope.toml'}" in capsys.readouterr().err


def test_passwords_in_urls_are_redacted() -> None:
    assert redact("postgresql://bob:s3cret@db:5432/chat") == "postgresql://bob:***@db:5432/chat"
    assert redact("redis://:s3cret@cache/0") == "redis://:***@cache/0"
    assert redact("postgresql://bob@db/chat") == "postgresql://bob@db/chat"
    assert redact("/var/lib/securechat/db") == "/var/lib/securechat/db"
    assert redact("host=db password=s3cret dbname=chat") == "host=db password=*** dbname=chat"
    assert redact("postgresql:///chat?password=s3cret") == "postgresql:///chat?password=***"


def test_check_config_prints_the_effective_configuration_secrets_hidden(
    pki: Pki, tmp_path: Path
) -> None:
    config = _write(
        tmp_path / "s.toml",
        f'cert = "{pki.server_pem}"\nkey = "{pki.server_key}"\nport = 8000\n'
        'store = "postgresql://bob:s3cret@db.example/chat"\nhistory-on-join = 5\n',
    )
    done = _check_config("--config", str(config), "--port", "9001")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "port = 9001" in lines
    assert "history-on-join = 5" in lines
    assert 'store = "postgresql://bob:***@db.example/chat"' in lines
    assert "s3cret" not in done.stdout
    assert "# bus = (not set)" in lines
    # What it prints is itself a config file (with the secret left out).
    tomllib.loads(done.stdout)


def test_check_config_refuses_a_certificate_that_does_not_load(tmp_path: Path) -> None:
    config = _write(tmp_path / "s.toml", f'cert = "{tmp_path}/no.pem"\nkey = "{tmp_path}/no.key"\n')
    done = _check_config("--config", str(config))
    assert done.returncode == 2
    assert "cannot load certificate" in done.stderr


def test_a_server_runs_from_a_config_file_alone(pki: Pki, tmp_path: Path) -> None:
    config = _write(
        tmp_path / "s.toml",
        f'cert = "{pki.server_pem}"\nkey = "{pki.server_key}"\nport = 0\n'
        f'db = "{tmp_path / "chat.db"}"\n',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "securechat.server.cli", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the pytest timeout bounds this wait
            if "securechat-server: listening on" in line:
                break
        assert (tmp_path / "chat.db").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait(20)


def test_every_server_option_is_in_the_readme_and_the_guide_has_its_sections() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `securechat-server "))
    for key in config_keys(build_parser()):
        assert f"--{key}" in row, f"--{key} is missing from the README's securechat-server row"
    assert "--config FILE" in row
    assert "--check-config" in row
    guide = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    for heading in ("Configuration", "Reloading", "Logs", "Metrics", "systemd"):
        assert f"\n## {heading}\n" in guide
