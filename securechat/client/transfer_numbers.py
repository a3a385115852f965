"""The short numbers people use for file transfers (``/accept 4821``).

Server transfer ids are random numbers below 2**53 so that nobody else can address a
transfer; nobody should have to type one either. A transfer's number is the last four
digits of its id, or more if another transfer this client knows has those. Taken from
the id rather than counted, the number is the same for sender and receiver (and in the
web client), so the two can talk about "transfer 4821".
"""

from __future__ import annotations

import threading

from ..errors import ChatError

__all__ = ["TransferNumbers"]

_DIGITS = 4


class TransferNumbers:
    """Server transfer ids and the short numbers shown for them, both ways. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers: dict[int, int] = {}  # server transfer id -> the user's number
        self._ids: dict[int, int] = {}  # and back

    def number(self, tid: int) -> int:
        """The number the user sees for server transfer ``tid`` (given on first use)."""
        with self._lock:
            number = self._numbers.get(tid)
            if number is None:
                modulus = 10**_DIGITS
                number = tid % modulus
                while (number == 0 or number in self._ids) and modulus <= tid:
                    modulus *= 10  # ends at the whole id
                    number = tid % modulus
                self._numbers[tid] = number
                self._ids[number] = tid
            return number

    def server_id(self, number: int) -> int:
        """The server id of the transfer the user calls ``number``; ChatError if none."""
        with self._lock:
            tid = self._ids.get(number)
        if tid is None:
            raise ChatError("no_such_transfer", f"no transfer {number}: /files lists them")
        return tid
