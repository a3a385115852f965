"""Numbering and storing a group of messages in one PostgreSQL transaction.

Several servers commit into the same tables, so nothing is counted in memory:
everything a group gets is decided by the transaction that stores it.

1. **Repeated keys.** Drafts sent with an idempotency key are looked up by
   ``(sender, key)``. A message stored under it within ``KEY_TTL`` seconds makes
   the draft a duplicate, answered with the original's id, time and number and
   not stored again; an older one gives its key up (``client_key`` set to NULL,
   in step 2), so the key is new again, as it is for the SQLite engine once
   ``KEY_TTL`` has passed. A key repeated within the group refers to its first
   draft. Keys of drafts that are not stored leave no trace, so only the group
   itself can recognise their repeats.
2. **Ids** come from the one ``counters`` row: ``UPDATE ... RETURNING`` takes its
   row lock, held until COMMIT, so every committer in every server waits for the
   one before it and ids rise in commit order. The same statement reads the
   database server's clock, the group's time stamp. Every other row lock of the
   transaction (keys given up, conversations, the unique index) is taken after
   this one, so two commits can never each hold a lock the other waits for.
3. **Sequence numbers**: one upsert on the ``conversations`` rows of the group's
   conversations, in sorted key order (rows locked in one order cannot deadlock).
4. **Rows**: one ``INSERT ... SELECT FROM unnest(...)`` for the whole group, a
   single round trip however many rows.

Two servers may store the same new key at once: both find nothing in step 1, and
the second's insert fails on the unique index of ``(sender, client_key)`` once
the first commits. The whole group is then committed again, once; step 1 now
finds the original. The lookup stays outside the counter's lock on purpose: the
lock is held only as long as numbering and inserting take.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg

from ..base import KEY_TTL, Committed, Draft, pair_key, utc_timestamp

__all__ = ["commit_drafts"]

_FIND_KEYS = """SELECT m.sender, m.client_key, m.id, m.ts, m.seq,
        m.ts >= clock_timestamp() - make_interval(secs => %s)
    FROM unnest(%s::bigint[], %s::text[]) AS k(sender, client_key)
    JOIN messages m ON m.sender = k.sender AND m.client_key = k.client_key"""
_RELEASE_KEYS = "UPDATE messages SET client_key = NULL WHERE id = ANY(%s)"
_TAKE_IDS = """UPDATE counters SET value = value + %s WHERE name = 'message_id'
    RETURNING value, date_trunc('milliseconds', clock_timestamp())"""
_TAKE_SEQS = """INSERT INTO conversations AS c (key, last_seq)
    SELECT key, n FROM unnest(%s::text[], %s::bigint[]) AS u(key, n) ORDER BY key
    ON CONFLICT (key) DO UPDATE SET last_seq = c.last_seq + excluded.last_seq
    RETURNING key, last_seq"""
_INSERT = """INSERT INTO messages
        (id, ts, sender, room, room_name, recipient, pair, text, seq, client_key, action)
    SELECT id, %s, sender, room, room_name, recipient, pair, text, seq, client_key, action
    FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::bigint[],
        %s::text[], %s::text[], %s::bigint[], %s::text[], %s::boolean[])
        AS u(id, sender, room, room_name, recipient, pair, text, seq, client_key, action)"""


def commit_drafts(conn: psycopg.Connection[Any], drafts: Sequence[Draft]) -> list[Committed]:
    """Number ``drafts`` and store the kept ones through ``conn``, inside the caller's
    transaction (see the module docstring); what each got, in order."""
    known, stale = _known_keys(conn, drafts)
    results: list[Committed | None] = [None] * len(drafts)
    fresh: list[int] = []  # the drafts that get ids of their own, by index
    first_with: dict[tuple[int, str], int] = {}
    for i, draft in enumerate(drafts):
        if draft.key is not None:
            key = (draft.sender, draft.key)
            original = known.get(key)
            if original is not None:
                results[i] = original
                continue
            if key in first_with:
                continue  # filled in below, from the first draft with this key
            first_with[key] = i
        fresh.append(i)
    if fresh:
        _number_and_insert(conn, drafts, fresh, results, stale)
    committed: list[Committed] = []
    for draft, result in zip(drafts, results, strict=True):
        if result is not None:
            committed.append(result)
            continue
        assert draft.key is not None
        first = results[first_with[(draft.sender, draft.key)]]
        assert first is not None
        committed.append(Committed(first.id, first.ts, first.seq, duplicate=True))
    return committed


def _known_keys(
    conn: psycopg.Connection[Any], drafts: Sequence[Draft]
) -> tuple[dict[tuple[int, str], Committed], list[int]]:
    """What stored messages answer the drafts' keys with, and the ids of those whose
    key is older than ``KEY_TTL`` (to be given up)."""
    keys = sorted({(d.sender, d.key) for d in drafts if d.key is not None})
    if not keys:
        return {}, []
    rows = conn.execute(
        _FIND_KEYS, (KEY_TTL, [k[0] for k in keys], [k[1] for k in keys])
    ).fetchall()
    known: dict[tuple[int, str], Committed] = {}
    stale: list[int] = []
    for sender, key, message_id, ts, seq, recent in rows:
        if recent:
            known[(sender, key)] = Committed(message_id, utc_timestamp(ts), seq, duplicate=True)
        else:
            stale.append(message_id)
    return known, stale


def _number_and_insert(
    conn: psycopg.Connection[Any],
    drafts: Sequence[Draft],
    fresh: list[int],
    results: list[Committed | None],
    stale: list[int],
) -> None:
    """Give the drafts at ``fresh`` ids (and the kept ones numbers), give the keys of
    the ``stale`` messages up, insert the kept drafts, and fill in their ``results``."""
    row = conn.execute(_TAKE_IDS, (len(fresh),)).fetchone()
    assert row is not None, "the message_id counter row is missing"
    top, stamp = row
    if stale:
        conn.execute(_RELEASE_KEYS, (stale,))
    ts = utc_timestamp(stamp)
    counts = Counter(drafts[i].conversation for i in fresh if drafts[i].keep)
    next_seq: dict[str, int] = {}
    if counts:
        conversations = sorted(counts)
        for key, last in conn.execute(
            _TAKE_SEQS, (conversations, [counts[k] for k in conversations])
        ):
            next_seq[key] = last - counts[key] + 1
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [], [], [])
    for i, message_id in zip(fresh, range(top - len(fresh) + 1, top + 1), strict=True):
        draft = drafts[i]
        seq = None
        if draft.keep:
            seq = next_seq[draft.conversation]
            next_seq[draft.conversation] = seq + 1
            pair = None if draft.recipient is None else pair_key(draft.sender, draft.recipient)
            values = (
                message_id,
                draft.sender,
                draft.room,
                draft.room_name,
                draft.recipient,
                pair,
                draft.text,
                seq,
                draft.key,
                draft.action,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        results[i] = Committed(message_id, ts, seq)
    if columns[0]:
        conn.execute(_INSERT, (stamp, *columns))
