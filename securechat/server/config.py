"""The server's config file: TOML whose keys are the command line's long options.

The keys are not listed here: they come from the argparse parser, so an option added
to :func:`securechat.server.cli.build_parser` is a config key at once, checked by the
same type and choices. A key is the option without its leading dashes (``--max-file-size``
is ``max-file-size``); a flag is ``true``/``false``; a repeatable option
(``--connection-limit``) is a list of what each would be given.

Precedence: the command line, then the file, then the option's default. A repeatable
option given on the command line replaces the file's list rather than adding to it, so
that what the command line says is what runs.

Everything wrong in a file is refused before the server starts, naming the file, the
key and what is allowed: an unknown key, a value of the wrong TOML type, a value out of
range. The same file is read again on SIGHUP (:mod:`securechat.server.reload`).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..commandline import Number
from ..errors import ConfigError

__all__ = [
    "NOT_IN_FILE",
    "config_keys",
    "effective_lines",
    "parse_with_config",
    "read_config",
    "redact",
]

NOT_IN_FILE = frozenset({"help", "version", "config", "check_config"})
"""Options that are about reading the configuration, not part of it."""


def config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Every config key of ``parser``, with the option it stands for."""
    keys: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its options
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in NOT_IN_FILE:
            keys[longs[0][2:]] = action
    return keys


def parse_with_config(
    build: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv`` with the parser ``build()`` makes, under ``--config FILE`` if given.

    Returns the arguments and the file's values by ``dest`` (empty without a file).
    Usage errors, in the file or on the command line, end in ``parser.error``.
    """
    # A first pass finds --config with the very parser (same abbreviations), none of
    # whose options is required yet: the file may be what provides them.
    first = build()
    for action in first._actions:
        action.required = False
    path: Path | None = first.parse_args(argv).config
    parser = build()
    if path is None:
        return parser.parse_args(argv), {}
    try:
        values = read_config(parser, path)
    except ConfigError as exc:
        parser.error(str(exc))
    lists: dict[str, Any] = {}
    for action in parser._actions:
        if action.dest not in values:
            continue
        action.required = False
        if isinstance(action, argparse._AppendAction):
            lists[action.dest] = values[action.dest]
        else:
            action.default = values[action.dest]
    args = parser.parse_args(argv)
    for dest, value in lists.items():
        if not getattr(args, dest):  # nothing on the command line: the file's list
            setattr(args, dest, value)
    return args, values


def read_config(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The values of the TOML file at ``path``, by ``dest``, each checked as its option is.

    ConfigError naming the file and the key for anything the options would refuse.
    """
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    keys = config_keys(parser)
    values: dict[str, Any] = {}
    for key, raw in table.items():
        action = keys.get(key)
        if action is None:
            hint = (
                f"; did you mean {key.replace('_', '-')!r}?"
                if key.replace("_", "-") in keys
                else ""
            )
            raise ConfigError(
                f"{path}: unknown key {key!r}{hint}; the keys are the long options without "
                "their leading dashes, e.g. max-file-size"
            )
        try:
            values[action.dest] = _value(action, raw)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {key} = {_toml(raw)}: {exc}") from None
    return values


def _value(action: argparse.Action, raw: Any) -> Any:
    if action.nargs == 0:  # a flag: store_true / store_false
        if not isinstance(raw, bool):
            raise ConfigError("allowed: true or false")
        return action.const if raw else action.default
    if isinstance(action, argparse._AppendAction):
        if not isinstance(raw, list):
            raise ConfigError(f"allowed: a list, each {_allowed(action)}")
        return [_one(action, item) for item in raw]
    return _one(action, raw)


def _one(action: argparse.Action, raw: Any) -> Any:
    kind = action.type
    whole = kind is int or (isinstance(kind, Number) and kind.whole)
    number = whole or kind is float or isinstance(kind, Number)
    if isinstance(raw, bool) or (number and not isinstance(raw, int | float)):
        raise ConfigError(f"allowed: {_allowed(action)}")
    if whole and not isinstance(raw, int):
        raise ConfigError(f"allowed: {_allowed(action)}")
    if not number and not isinstance(raw, str):
        raise ConfigError(f"allowed: {_allowed(action)} (a string in quotes)")
    try:
        # The option's own type: the same conversion and range as on the command line.
        value = kind(raw if not number else str(raw)) if callable(kind) else raw
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"allowed: {_allowed(action)}")
    return value


def _allowed(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(f'"{c}"' for c in action.choices)
    kind = action.type
    if isinstance(kind, Number):
        return kind.allowed
    if kind is int:
        return "a whole number"
    if kind is float:
        return "a number"
    if kind is Path:
        return "a path"
    return f"a string like {action.metavar or action.dest.upper()}"


_KEYWORD_PASSWORD_RE = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact(value: str) -> str:
    """``value`` with a password in it hidden: a URL's (``postgresql://u:PW@h/db``) or a
    libpq keyword's (``host=db password=PW``)."""
    value = _KEYWORD_PASSWORD_RE.sub(r"\1***", value)
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.scheme or parts.password is None:
        return value
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def effective_lines(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The configuration ``args`` amounts to, as TOML lines, secrets redacted.

    An option that is not set (no default) appears commented out, as TOML has no null.
    """
    lines = []
    for key, action in config_keys(parser).items():
        value = getattr(args, action.dest)
        if value is None:
            lines.append(f"# {key} = (not set)")
        else:
            lines.append(f"{key} = {_toml(value)}")
    return lines


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple) and not _is_pair(value):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if _is_pair(value):  # --connection-limit's (network, n)
        return _toml(f"{value[0]}={value[1]}")
    text = redact(str(value))
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped) + '"'


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int)
