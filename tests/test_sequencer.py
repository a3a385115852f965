"""The sequencer releases each conversation's messages in number order, once each."""

from __future__ import annotations

import time

from securechat.server.cluster.sequencer import GAP_WAIT, Sequencer


def _recorder(out: list[str], label: str):  # type: ignore[no-untyped-def]
    return lambda: out.append(label)


def test_messages_wait_for_their_predecessors_and_repeats_only_acknowledge() -> None:
    out: list[str] = []
    seq = Sequencer({"#dev": 4})
    seq.release("#dev", 6, _recorder(out, "6"))
    seq.release("#dev", 7, _recorder(out, "7"))
    assert out == []  # 5 is missing
    seq.release("#dev", 5, _recorder(out, "5"))
    assert out == ["5", "6", "7"]
    seq.release("#dev", 6, _recorder(out, "6 again"), _recorder(out, "ack 6"))
    assert out == ["5", "6", "7", "ack 6"]
    seq.release("#new", 1, _recorder(out, "new 1"))  # unknown at start: begins at 1
    assert out[-1] == "new 1"


def test_an_overdue_hole_is_filled_from_the_store_and_erased_numbers_are_skipped() -> None:
    out: list[str] = []
    seq = Sequencer({"#dev": 1})
    seq.release("#dev", 5, _recorder(out, "5"))
    assert seq.overdue(time.monotonic()) == []
    (gap,) = seq.overdue(time.monotonic() + GAP_WAIT)
    assert (gap.conversation, gap.first, gap.upto) == ("#dev", 2, 5)
    # The store has 2 and 4; 3 was erased meanwhile.
    seq.fill(gap, {2: _recorder(out, "2"), 4: _recorder(out, "4")})
    assert out == ["2", "4", "5"]
    assert seq.overdue(time.monotonic() + GAP_WAIT) == []
    seq.release("#dev", 3, _recorder(out, "late 3"), _recorder(out, "ack 3"))
    assert out[-1] == "ack 3"


def test_a_fill_that_arrives_after_the_notices_changes_nothing() -> None:
    out: list[str] = []
    seq = Sequencer({})
    seq.release("1:2", 2, _recorder(out, "2"))
    (gap,) = seq.overdue(time.monotonic() + GAP_WAIT)
    seq.release("1:2", 1, _recorder(out, "1"))
    seq.fill(gap, {1: _recorder(out, "1 from store")})
    assert out == ["1", "2"]


def test_skipping_a_conversation_nobody_here_follows_releases_what_waited() -> None:
    out: list[str] = []
    seq = Sequencer({})
    seq.release("#dev", 3, _recorder(out, "3"))
    seq.skip("#dev", 2)
    assert out == ["3"]
