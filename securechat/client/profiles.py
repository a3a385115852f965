"""Named connection profiles from ``client.toml``, so a daily user types ``securechat-client work``.

The file is ``$XDG_CONFIG_HOME/securechat/client.toml`` (``~/.config/...``
without the variable); each ``[profiles.NAME]`` table holds some of the
client's options, under the option's name with ``_`` for ``-``::

    [profiles.work]
    hosts = ["chat1.example.com", "chat2.example.com:7443"]
    ca = "~/certs/work-ca.pem"
    user = "alice"
    password_file = "~/.config/securechat/work.password"

Options given on the command line override the profile's. Paths may start
with ``~``; relative paths are taken from the current directory, as on the
command line. Unknown tables or keys and values of the wrong type are refused
with the file and the key (ConfigError), never ignored: a misspelt ``ca``
would otherwise quietly fall back to the system trust store.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .commands import JOIN_FILTERS
from .trust import config_dir

__all__ = ["CLIENT_CONFIG_FILE", "Profile", "default_config_path", "load_profile"]

CLIENT_CONFIG_FILE = "client.toml"

_PATH_KEYS = ("ca", "cert", "key", "download_dir", "password_file")
_KEYS = ("hosts", "port", "user", "trust_on_first_use", "filter_joins", *_PATH_KEYS)


@dataclass(frozen=True, slots=True)
class Profile:
    """One ``[profiles.NAME]`` table: the options it sets, by option name."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    """``hosts`` (list of str), ``port`` (int), ``user`` (str),
    ``trust_on_first_use`` (bool), ``filter_joins`` (``on``, ``off`` or ``auto``), and
    the paths (Path, ``~`` expanded)."""


def default_config_path() -> Path:
    """Where the client looks for its configuration file."""
    return config_dir() / CLIENT_CONFIG_FILE


def load_profile(path: Path, name: str) -> Profile:
    """Profile ``name`` from the file ``path``; ConfigError, naming the file and the key,
    if the file cannot be read or parsed, lacks the profile, or has a bad key or value."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no profile {name!r}: {path} does not exist (see docs/client.md, Profiles)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for key in data:
        if key != "profiles":
            raise ConfigError(f"{path}: unknown key {key!r} (only [profiles.NAME] tables)")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: 'profiles' must be a table of [profiles.NAME] tables")
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"{path}: no profile {name!r} (profiles: {known})")
    table = profiles[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: profiles.{name} must be a table")
    return Profile(name, {key: _value(path, name, key, value) for key, value in table.items()})


def _value(path: Path, profile: str, key: str, value: Any) -> Any:
    where = f"{path}: profiles.{profile}.{key}"
    if key not in _KEYS:
        raise ConfigError(f"{where}: unknown key (allowed: {', '.join(_KEYS)})")
    if key == "hosts":
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}: must be a list of HOST[:PORT] strings")
        return value
    if key == "port":
        # bool is an int to Python, never a port to a reader of the file.
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise ConfigError(f"{where}: must be a number from 1 to 65535")
        return value
    if key == "trust_on_first_use":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false")
        return value
    if key == "filter_joins":
        if value not in JOIN_FILTERS:
            raise ConfigError(f"{where}: must be one of {', '.join(JOIN_FILTERS)}")
        return value
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: must be a non-empty string")
    return Path(value).expanduser() if key in _PATH_KEYS else value
