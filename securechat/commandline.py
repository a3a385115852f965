"""What the commands share on their command lines: ``--version``, one-line usage errors,
and number types that know their range.

A bad value (``--port 99999``, ``--io-threads 0``) is refused by argparse itself, with
the same one line and exit status 2 as an unknown option, before anything starts. The
types say what they allow (:attr:`Number.allowed`) so that the server's config file
(:mod:`securechat.server.config`) can refuse a bad value in the same words.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import NoReturn

from .errors import ConfigError

__all__ = ["Number", "OneLineParser", "add_version", "package_version"]


def package_version() -> str:
    """The installed package's version, from its metadata (the one pyproject declares)."""
    try:
        return metadata.version("securechat")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        from . import __version__  # noqa: PLC0415 - only needed in this corner

        return __version__


def add_version(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--version`` that prints ``PROG VERSION`` and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, then exit status 2.

    The full usage of a command with thirty options buries the one line that says
    what was wrong; ``--help`` is named instead. With ``raise_errors`` set, the error
    is raised as ConfigError instead (a server reloading its configuration must not exit).
    """

    raise_errors = False

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        if self.raise_errors:
            raise ConfigError(message)
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


@dataclass(frozen=True, slots=True)
class Number:
    """An argparse type: a whole number (``whole=True``) or a finite number in a range.

    ``low`` and ``high`` are inclusive unless ``above`` is set, which makes ``low``
    exclusive (``Number(low=0, above=True)``: any positive number).
    """

    whole: bool = True
    low: float | None = None
    high: float | None = None
    above: bool = False

    @property
    def allowed(self) -> str:
        """What this type accepts, in words: ``a whole number from 0 to 65535``."""
        kind = "a whole number" if self.whole else "a number"
        low = f"{self.low:g}" if self.low is not None else ""
        high = f"{self.high:g}" if self.high is not None else ""
        if self.low is not None and self.high is not None:
            return f"{kind} from {low} to {high}"
        if self.low is not None:
            return f"{kind} above {low}" if self.above else f"{kind} of at least {low}"
        if self.high is not None:
            return f"{kind} of at most {high}"
        return kind

    def __call__(self, text: str) -> int | float:
        """The value of ``text``; ArgumentTypeError saying what is allowed otherwise."""
        try:
            value: int | float = int(text) if self.whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.allowed}") from None
        if not math.isfinite(value) or not self.contains(value):
            raise argparse.ArgumentTypeError(f"{text} is not {self.allowed}")
        return value

    def contains(self, value: float) -> bool:
        """True if ``value`` is in the range (its kind is the caller's business)."""
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high
