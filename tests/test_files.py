"""File transfer end to end: real client processes, hostile senders at the protocol level."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.server.listener import Server
from securechat.wire.protocol import FILE_CHUNK, FILE_WINDOW, encode
from tests.conftest import ClientProcess, RawClient

Factory = Callable[..., RawClient]
Clients = Callable[..., ClientProcess]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listing(directory: Path) -> set[str]:
    return set(os.listdir(directory)) if directory.exists() else set()


def _receiver(
    client_process: Clients, port: int, downloads: Path, name: str = "bob"
) -> ClientProcess:
    proc = client_process(port, name, extra=("--download-dir", str(downloads)))
    proc.wait_for("connected")
    return proc


def _offer_accepted(
    sender: RawClient, bob: ClientProcess, *, name: str, size: int, sha256: str
) -> int:
    """A protocol-level offer to bob that bob accepts; the transfer id."""
    rid = sender.send("file_offer", to="bob", name=name, size=size, sha256=sha256)
    tid: int = sender.expect("file_offered", rid=rid).get("id")  # the server's id
    handle = bob.wait_for("file_offer", name=name)["id"]  # the short number bob types
    bob.type(f"/accept {handle}")
    sender.expect("file_accepted", id=tid)
    return tid


def _alice_offers_bob(
    server: Server, raw_client: Factory, data: bytes = b"0123456789"
) -> tuple[RawClient, RawClient, int]:
    """alice and bob at the protocol level, alice's offer of ``data`` to bob, and its id."""
    port = server.address[1]
    alice, bob = raw_client(port), raw_client(port)
    alice.login("alice")
    bob.login("bob")
    alice.send("file_offer", to="bob", name="x.bin", size=len(data), sha256=_sha(data))
    tid: int = bob.expect("file_offer").get("id")
    return alice, bob, tid


def _raw_send(sender: RawClient, tid: int, data: bytes, *, start: int = 0) -> None:
    """Send ``data`` from ``start`` in chunks, honouring the window via the acks."""
    acked = start
    position = start
    while position < len(data):
        while position - acked >= FILE_WINDOW:
            acked = sender.expect("file_ack", id=tid).get("bytes")
        piece = data[position : position + FILE_CHUNK]
        sender.send_raw(encode("file_chunk", piece, id=tid, offset=position))
        position += len(piece)
    sender.send_raw(encode("file_done", id=tid))


def test_file_arrives_byte_identical_while_chat_keeps_flowing(
    server: Server, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    payload = os.urandom(6 * 1024 * 1024 + 123)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    alice.type(f"/sendfile bob {source}")
    offer = bob.wait_for("file_offer")
    assert (offer["from"], offer["name"], offer["size"]) == ("alice", "payload.bin", len(payload))
    assert offer["sha256"] == _sha(payload)
    bob.type(f"/accept {offer['id']}")
    for i in range(20):
        alice.type(f"chat while sending {i}")
    for i in range(20):
        bob.wait_for("message", text=f"chat while sending {i}")
    saved = bob.wait_for("file_saved", timeout=30)
    assert Path(saved["path"]).read_bytes() == payload
    assert Path(saved["path"]).parent == downloads.resolve()
    assert alice.wait_for("file_sent", timeout=30)["to"] == "bob"
    assert not [n for n in _listing(downloads) if n.endswith(".part")]


def test_rejected_offer_tells_the_sender_and_writes_nothing(
    server: Server, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    source = tmp_path / "unwanted.txt"
    source.write_text("no thanks")
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    alice.type(f"/sendfile bob {source}")
    tid = bob.wait_for("file_offer")["id"]
    bob.type(f"/reject {tid}")
    assert alice.wait_for("file_rejected")["by"] == "bob"
    assert _listing(downloads) == set()


def test_cancel_by_sender_leaves_nothing_partial(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)
    alice = raw_client(port)
    alice.login("alice")
    data = os.urandom(FILE_CHUNK * 4)
    tid = _offer_accepted(alice, bob, name="half.bin", size=len(data), sha256=_sha(data))
    alice.send_raw(encode("file_chunk", data[:FILE_CHUNK], id=tid, offset=0))
    alice.expect("file_ack", id=tid)
    alice.send("file_cancel", id=tid)
    failed = bob.wait_for("file_failed")
    assert "cancelled by alice" in failed["reason"]
    bob.type("/files")
    assert bob.wait_for("files")["transfers"] == []
    assert _listing(downloads) == set()


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        ("../../escape.txt", "escape.txt"),
        ("/etc/passwd", "passwd"),
        ("..", "file"),
        ("evil\u202etxt.exe", None),
        ("C:\\Windows\\evil.bat", "evil.bat"),
    ],
)
def test_hostile_names_never_write_outside_the_download_dir(
    server: Server,
    raw_client: Factory,
    client_process: Clients,
    tmp_path: Path,
    offered: str,
    expected: str | None,
) -> None:
    port = server.address[1]
    downloads = tmp_path / "inbox" / "downloads"
    before_outside = _listing(tmp_path) | _listing(tmp_path / "inbox")
    bob = _receiver(client_process, port, downloads)
    mallory = raw_client(port)
    mallory.login("mallory")
    data = b"payload from mallory\n"
    tid = _offer_accepted(mallory, bob, name=offered, size=len(data), sha256=_sha(data))
    _raw_send(mallory, tid, data)
    saved = Path(bob.wait_for("file_saved")["path"])
    assert saved.parent == downloads.resolve()
    assert saved.read_bytes() == data
    if expected is not None:
        assert saved.name == expected
    assert "\u202e" not in saved.name and "/" not in saved.name
    assert _listing(tmp_path) | _listing(tmp_path / "inbox") == before_outside | {
        "inbox",
        "downloads",
    }


def test_existing_file_and_planted_symlink_are_never_overwritten_or_followed(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "notes.txt").write_text("mine, keep")
    outside = tmp_path / "outside.txt"
    outside.write_text("do not touch")
    (downloads / "notes (1).txt").symlink_to(outside)
    bob = _receiver(client_process, port, downloads)
    mallory = raw_client(port)
    mallory.login("mallory")
    data = b"overwrite attempt"
    tid = _offer_accepted(mallory, bob, name="notes.txt", size=len(data), sha256=_sha(data))
    _raw_send(mallory, tid, data)
    saved = Path(bob.wait_for("file_saved")["path"])
    assert saved.name == "notes (2).txt"
    assert saved.read_bytes() == data
    assert (downloads / "notes.txt").read_text() == "mine, keep"
    assert outside.read_text() == "do not touch"


def test_more_bytes_than_offered_aborts_and_leaves_nothing(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)
    mallory = raw_client(port)
    mallory.login("mallory")
    tid = _offer_accepted(mallory, bob, name="small.txt", size=10, sha256=_sha(b"0123456789"))
    mallory.send_raw(encode("file_chunk", b"0123456789EXTRA", id=tid, offset=0))
    assert mallory.expect("error").get("code") == "bad_transfer"
    assert "more bytes" in bob.wait_for("file_failed")["reason"]
    assert _listing(downloads) == set()


def test_sha256_mismatch_is_refused_and_both_sides_told(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)
    mallory = raw_client(port)
    mallory.login("mallory")
    data = b"the real content"
    tid = _offer_accepted(mallory, bob, name="x.txt", size=len(data), sha256=_sha(b"other"))
    _raw_send(mallory, tid, data)
    assert "SHA-256" in bob.wait_for("file_failed")["reason"]
    result = mallory.expect("file_result", id=tid)
    assert result.get("ok") is False and "SHA-256" in result.get("reason")
    assert _listing(downloads) == set()


def test_chunks_from_someone_else_or_for_unknown_transfers_are_refused(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = _receiver(client_process, port, tmp_path / "downloads")
    alice, mallory = raw_client(port), raw_client(port)
    alice.login("alice")
    mallory.login("mallory")
    data = b"abc"
    tid = _offer_accepted(alice, bob, name="a.txt", size=3, sha256=_sha(data))
    mallory.send_raw(encode("file_chunk", b"evil", id=tid, offset=0))
    assert mallory.expect("error").get("code") == "bad_transfer"
    assert "not theirs" in alice.expect("file_failed", id=tid).get("reason")
    bob.wait_for("file_failed")
    mallory.send_raw(encode("file_chunk", b"x", id=9999, offset=0))
    assert mallory.expect("error").get("code") == "no_such_transfer"


def test_sender_ignoring_flow_control_is_stopped(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = _receiver(client_process, port, tmp_path / "downloads")
    mallory = raw_client(port)
    mallory.login("mallory")
    data = os.urandom(FILE_WINDOW * 4)
    tid = _offer_accepted(mallory, bob, name="flood.bin", size=len(data), sha256=_sha(data))
    # Everything at once, never waiting for an acknowledgement.
    for position in range(0, len(data), FILE_CHUNK):
        mallory.send_raw(
            encode("file_chunk", data[position : position + FILE_CHUNK], id=tid, offset=position)
        )
    error = mallory.expect("error")
    assert error.get("code") == "bad_transfer" and "flow control" in error.get("text")


def test_offers_to_unknown_offline_or_oversized_are_refused(
    make_server: Callable[..., Server], raw_client: Factory
) -> None:
    server = make_server(max_file_size=1000)
    alice = raw_client(server.address[1])
    alice.login("alice")
    sha = _sha(b"")
    alice.send("file_offer", to="nobody", name="a", size=1, sha256=sha)
    assert alice.expect("error").get("code") == "no_such_user"
    bob = raw_client(server.address[1])
    bob.login("bob")
    alice.send("file_offer", to="bob", name="big", size=1001, sha256=sha)
    error = alice.expect("error")
    assert error.get("code") == "too_large" and "1000" in error.get("text")
    bob.send("quit")
    bob.wait_closed()
    alice.send("file_offer", to="bob", name="a", size=1, sha256=sha)
    assert alice.expect("error").get("code") == "not_online"


def test_recipient_disconnect_tells_the_sender(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = _receiver(client_process, port, tmp_path / "downloads")
    alice = raw_client(port)
    alice.login("alice")
    data = os.urandom(FILE_CHUNK * 3)
    tid = _offer_accepted(alice, bob, name="a.bin", size=len(data), sha256=_sha(data))
    alice.send_raw(encode("file_chunk", data[:FILE_CHUNK], id=tid, offset=0))
    alice.expect("file_ack", id=tid)
    bob.kill()
    assert "bob disconnected" in alice.expect("file_failed", id=tid).get("reason")
    alice.send("time")
    alice.expect("time")  # the sender's session is unharmed


def test_transfer_resumes_after_a_dropped_connection(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    payload = os.urandom(FILE_CHUNK * 10 + 7)
    source = tmp_path / "resume.bin"
    source.write_bytes(payload)
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)

    # First attempt: the sender's connection dies after four chunks.
    first = raw_client(port)
    first.login("alice")
    tid = _offer_accepted(first, bob, name="resume.bin", size=len(payload), sha256=_sha(payload))
    for position in range(0, 4 * FILE_CHUNK, FILE_CHUNK):
        first.send_raw(
            encode("file_chunk", payload[position : position + FILE_CHUNK], id=tid, offset=position)
        )
    first.expect("file_ack", id=tid, bytes=4 * FILE_CHUNK)
    first.close()
    bob.wait_for("file_failed")

    # Second attempt, by the real client: offered again, resumed where it stopped.
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    alice.type(f"/sendfile bob {source}")
    tid2 = bob.wait_for("file_offer")["id"]
    bob.type(f"/accept {tid2}")
    accepted = alice.wait_for("system", event="file_accepted")
    assert "from byte 262144" in accepted["text"]
    saved = bob.wait_for("file_saved", timeout=30)
    assert Path(saved["path"]).read_bytes() == payload
    assert alice.wait_for("file_sent")["to"] == "bob"


def test_transfer_ids_cannot_be_guessed_by_third_parties(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = _receiver(client_process, port, tmp_path / "downloads")
    alice = raw_client(port)
    alice.login("alice")
    ids, handles = [], []
    for i in range(3):
        alice.send("file_offer", to="bob", name=f"f{i}", size=1, sha256=_sha(b"x"))
        ids.append(alice.expect("file_offered").get("id"))
        handles.append(bob.wait_for("file_offer")["id"])
    assert min(ids) > 2**20 and len(set(ids)) == 3
    assert sorted(ids) != list(range(ids[0], ids[0] + 3))
    # ... while the person receiving them types short numbers: the ids' last digits.
    assert handles == [tid % 10_000 for tid in ids]
    bob.type("/files")
    assert [t["id"] for t in bob.wait_for("files")["transfers"]] == sorted(handles)


def test_unanswered_offers_are_capped_per_sender_not_per_recipient(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = _receiver(client_process, port, tmp_path / "downloads")
    spammer, friend = raw_client(port), raw_client(port)
    spammer.login("spammer")
    friend.login("friend")
    for i in range(8):
        spammer.send("file_offer", to="bob", name=f"spam{i}", size=1, sha256=_sha(b"x"))
        spammer.expect("file_offered")
    spammer.send("file_offer", to="bob", name="spam8", size=1, sha256=_sha(b"x"))
    assert spammer.expect("error").get("code") == "busy"
    data = b"wanted"
    tid = _offer_accepted(friend, bob, name="wanted.txt", size=len(data), sha256=_sha(data))
    _raw_send(friend, tid, data)
    assert Path(bob.wait_for("file_saved")["path"]).read_bytes() == data


def test_frames_crossing_a_cancel_are_dropped_quietly(server: Server, raw_client: Factory) -> None:
    data = os.urandom(FILE_CHUNK * 2)
    alice, bob, tid = _alice_offers_bob(server, raw_client, data)
    bob.send("file_accept", id=tid, offset=0)
    alice.expect("file_accepted", id=tid)
    alice.send_raw(encode("file_chunk", data[:FILE_CHUNK], id=tid, offset=0))
    bob.expect("file_chunk", id=tid)
    alice.send("file_cancel", id=tid)
    bob.expect("file_failed", id=tid)
    bob.send_raw(encode("file_ack", id=tid, bytes=FILE_CHUNK))  # crossed the cancel
    bob.send_raw(encode("file_result", id=tid, ok=False, reason="late"))
    rid = bob.send("time")
    answer = bob.expect("time", rid=rid)
    assert answer is not None
    assert not [f for f in bob.frames if f.type == "error"]


def test_success_claimed_before_the_data_is_reported_as_failure(
    server: Server, raw_client: Factory
) -> None:
    alice, bob, tid = _alice_offers_bob(server, raw_client)
    bob.send("file_accept", id=tid, offset=0)
    alice.expect("file_accepted", id=tid)
    bob.send_raw(encode("file_result", id=tid, ok=True))
    result = alice.expect("file_result", id=tid)
    assert result.get("ok") is False and "before" in result.get("reason")


def test_script_that_offers_and_ends_input_waits_for_the_recipient(
    server: Server, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    downloads = tmp_path / "downloads"
    bob = _receiver(client_process, port, downloads)
    source = tmp_path / "scripted.txt"
    source.write_text("sent by a script\n")
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    alice.type(f"/sendfile bob {source}")
    alice.proc.stdin.close()  # EOF straight after the offer
    tid = bob.wait_for("file_offer")["id"]
    bob.type(f"/accept {tid}")
    saved = bob.wait_for("file_saved")
    assert saved["from"] == "alice"
    assert Path(saved["path"]).read_text() == "sent by a script\n"
    assert alice.finish()[0] == 0


def test_errors_about_a_transfer_carry_its_id_as_a_field(
    server: Server, raw_client: Factory
) -> None:
    alice, bob, tid = _alice_offers_bob(server, raw_client)
    rid = bob.send("file_accept", id=4242, offset=0)
    error = bob.expect("error", rid=rid)
    assert (error.get("code"), error.get("id")) == ("no_such_transfer", 4242)
    bob.send("file_accept", id=tid, offset=0)
    alice.expect("file_accepted", id=tid)
    rid = bob.send("file_accept", id=tid, offset=0)
    error = bob.expect("error", rid=rid)
    assert (error.get("code"), error.get("id")) == ("bad_transfer", tid)
    alice.send_raw(encode("file_chunk", b"x", id=tid, offset=3))  # not where it left off
    error = alice.expect("error")
    assert (error.get("code"), error.get("id"), error.get("rid")) == ("bad_transfer", tid, None)


@pytest.mark.parametrize("verdict", [{}, {"ok": None}, {"ok": "yes"}, {"ok": 1}])
def test_file_result_without_a_boolean_ok_is_a_protocol_error(
    server: Server, raw_client: Factory, verdict: dict[str, object]
) -> None:
    alice, bob, tid = _alice_offers_bob(server, raw_client)
    bob.send_raw(encode("file_result", id=tid, **verdict))
    errors = [f for f in bob.wait_closed() if f.type == "error"]
    assert [(f.get("code"), f.get("text")) for f in errors] == [
        ("bad_frame", "protocol error: 'file_result' needs a boolean 'ok'")
    ]
    failed = alice.expect("file_failed", id=tid)
    assert failed.get("reason") == "bob disconnected"


def test_sender_and_receiver_number_a_transfer_alike(
    server: Server, raw_client: Factory, client_process: Clients, tmp_path: Path
) -> None:
    port = server.address[1]
    bob = _receiver(client_process, port, tmp_path / "downloads")
    carol = raw_client(port)
    carol.login("carol")
    carol.send("file_offer", to="bob", name="first", size=1, sha256=_sha(b"x"))
    bob.wait_for("file_offer", name="first")  # bob has seen a transfer alice has not
    alice = client_process(port, "alice")
    alice.wait_for("connected")
    source = tmp_path / "second.txt"
    source.write_bytes(b"second")
    alice.type(f"/sendfile bob {source}")
    offered = alice.wait_for("system", event="file_offered")
    offer = bob.wait_for("file_offer", name="second.txt")
    assert offered["id"] == offer["id"]
    assert f"/accept {offer['id']}" in offer["text"]
