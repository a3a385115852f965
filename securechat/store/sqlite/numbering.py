"""Ids, sequence numbers and idempotency keys for a database one process owns.

SQLite is written by one server process, so its numbers come from counters in
memory rather than from the database: a message that is never stored (opt-out,
``/nolog``) still gets a unique, increasing id without a write. The id counter is
reserved on disk in blocks of ``ID_BLOCK``, so after a restart ids continue above
anything handed out before. Sequence numbers continue from the ``conversations``
table, and idempotency keys of the last ``KEY_TTL`` seconds are loaded back from
the messages, so a message re-sent across a restart is still recognised.

A :class:`Plan` is worked out before the transaction and applied with
:meth:`Numbering.confirm` only after it commits: a failed commit uses up nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..base import KEY_TTL, Committed, Draft, NewMessage, SentKey, pair_key

__all__ = ["ID_BLOCK", "Numbering", "Plan"]

ID_BLOCK = 1024
"""Ids reserved on disk at a time; a restart skips at most this many."""

_MAX_KEYS = 500_000  # keys remembered at most (~100 MB), oldest forgotten first


@dataclass(slots=True)
class Plan:
    """What one group of drafts gets, before it is committed."""

    committed: list[Committed] = field(default_factory=list)
    rows: list[NewMessage] = field(default_factory=list)
    reserve_id: int | None = None
    next_id: int = 0
    seqs: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[int, str], SentKey] = field(default_factory=dict)


class Numbering:
    """The counters of one SQLite store (used by its one writer thread)."""

    def __init__(self, reserved: int, seqs: dict[str, int], keys: Sequence[SentKey]) -> None:
        self._next_id = reserved + 1
        self._reserved = reserved
        self._seqs = seqs
        self._keys: dict[tuple[int, str], SentKey] = {(k.sender, k.key): k for k in keys}
        # Insertion order is age order: the oldest keys are forgotten first.
        now = time.monotonic()
        self._key_times: deque[tuple[float, tuple[int, str]]] = deque((now, k) for k in self._keys)

    @property
    def last_id(self) -> int:
        """The highest id handed out so far."""
        return self._next_id - 1

    def plan(self, drafts: Sequence[Draft], ts: str) -> Plan:
        """Number ``drafts`` (stamped ``ts``) without using anything up yet."""
        plan = Plan(next_id=self._next_id)
        for draft in drafts:
            known = None
            if draft.key is not None:
                key = (draft.sender, draft.key)
                known = plan.keys.get(key) or self._keys.get(key)
            if known is not None:
                plan.committed.append(Committed(known.id, known.ts, known.seq, duplicate=True))
                continue
            message_id = plan.next_id
            plan.next_id += 1
            seq = None
            if draft.keep:
                conversation = draft.conversation
                seq = plan.seqs.get(conversation, self._seqs.get(conversation, 0)) + 1
                plan.seqs[conversation] = seq
                plan.rows.append(
                    NewMessage(
                        message_id,
                        ts,
                        draft.sender,
                        draft.text,
                        draft.room,
                        draft.room_name,
                        draft.recipient,
                        seq,
                        draft.key,
                        draft.action,
                    )
                )
            if draft.key is not None:
                plan.keys[(draft.sender, draft.key)] = SentKey(
                    draft.sender, draft.key, message_id, ts, seq
                )
            plan.committed.append(Committed(message_id, ts, seq))
        if plan.next_id - 1 > self._reserved:
            plan.reserve_id = plan.next_id - 1 + ID_BLOCK
        return plan

    def seen(self, rows: Sequence[NewMessage], reserve_id: int | None) -> None:
        """``rows`` numbered elsewhere (an import, a test's seed) were stored: number
        later messages above them."""
        top = max((r.id for r in rows), default=0)
        self._next_id = max(self._next_id, top + 1)
        self._reserved = max(self._reserved, top, reserve_id or 0)
        for row in rows:
            if row.seq is not None:
                conversation = row.room or pair_key(row.sender, row.recipient or 0)
                self._seqs[conversation] = max(self._seqs.get(conversation, 0), row.seq)

    def confirm(self, plan: Plan) -> None:
        """``plan`` was committed: its ids, numbers and keys are used up."""
        self._next_id = plan.next_id
        if plan.reserve_id is not None:
            self._reserved = plan.reserve_id
        self._seqs.update(plan.seqs)
        now = time.monotonic()
        for key, sent in plan.keys.items():
            self._keys[key] = sent
            self._key_times.append((now, key))
        while self._key_times and (
            len(self._key_times) > _MAX_KEYS or now - self._key_times[0][0] > KEY_TTL
        ):
            _, key = self._key_times.popleft()
            self._keys.pop(key, None)
