"""What reaches the disk: crashes, a full disk, foreign files, upgrades and retention.

Servers here are real ``securechat-server`` processes (or the in-process servers of
conftest) on 127.0.0.1 with real TLS, and every database is a real SQLite file that
the tests open with :mod:`sqlite3` afterwards to see what was actually committed.

The promise under test (see securechat/writer.py): a message is acknowledged (its
sender gets the echo carrying its ``rid``) only after the transaction holding it
committed, so no crash may lose an acknowledged message, and a message that could
not be stored is refused and delivered to nobody.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import random
import re
import select
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from securechat.errors import ConfigError
from securechat.server.listener import Server
from securechat.server.passwords import hash_password
from securechat.server.writer import MessageWriter
from securechat.store.base import NewMessage, utc_timestamp
from securechat.store.sqlite import MIGRATIONS, PRIVATE_MODE, SCHEMA_VERSION
from securechat.store.sqlite import SQLiteStore as Store
from securechat.wire.names import fold
from securechat.wire.protocol import Frame, encode
from tests.conftest import (
    EVENT_TIMEOUT,
    UNMETERED_ARGS,
    Pki,
    RawClient,
    ServerProcess,
    free_port,
    server_argv,
)

ROOM = "#general"
HISTORY_ON_JOIN = 20  # the server's default --history-on-join
CRASH_ROUNDS = 8
BURST_BATCH = 32  # say frames per write while bursting
# Unacknowledged messages at most. Unbounded, the client outruns the writer by
# tens of thousands and the first commit can come after the kill.
BURST_WINDOW = 1024
BURST_RID_BASE = 1000  # rids of burst messages, clear of the login's rid
FULL_DISK_ATTEMPTS = 200  # messages tried on a full disk before giving up on a refusal

_BURST_TEXT = re.compile(r"burst r(\d+) #(\d+)")
_AFTER_TEXT = re.compile(r"after r(\d+)")


# -- helpers ------------------------------------------------------------------------------


def _read_only(db: Path) -> sqlite3.Connection:
    """A connection that cannot change the file (it may run beside the server)."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def _query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = _read_only(db)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def _integrity(db: Path) -> list[tuple[object, ...]]:
    return _query(db, "PRAGMA integrity_check")


def _reply_to(client: RawClient, rid: int, timeout: float = EVENT_TIMEOUT) -> Frame:
    """The ``message`` echo or the ``error`` answering request ``rid``."""
    deadline = time.monotonic() + timeout
    while True:
        frame = client.recv_frame(max(0.01, deadline - time.monotonic()))
        if frame is None:
            raise ConnectionError(f"closed while waiting for the answer to rid {rid}")
        client.frames.append(frame)
        if frame.get("rid") == rid and frame.type in ("message", "error"):
            return frame


def _burst_text(round_: int, seq: int) -> str:
    return f"burst r{round_:02d} #{seq:06d}"


def _insertion_key(text: str) -> tuple[int, int, int]:
    """Where a text was sent in the test's own order: (round, burst/after, sequence)."""
    if found := _BURST_TEXT.fullmatch(text):
        return int(found.group(1)), 0, int(found.group(2))
    if found := _AFTER_TEXT.fullmatch(text):
        return int(found.group(1)), 1, 0
    raise AssertionError(f"a text this test never sent is stored: {text!r}")


class _Burst:
    """Pipelined ``say`` frames on one socket, echoes read between writes.

    One thread does both the writes and the reads: concurrent SSL_read and
    SSL_write on one SSL object are unsafe (STYLE.md, habit 4).
    """

    def __init__(self, client: RawClient, round_: int) -> None:
        self.client = client
        self.round = round_
        self.sent: dict[int, str] = {}  # rid -> text
        self.acked: dict[int, str] = {}  # message id -> text, in the order the echoes came

    def run_until_killed(self, kill: Callable[[], None], *, kill_after: float) -> None:
        """Send as fast as the window allows, ``kill`` the server ``kill_after`` seconds
        after the first acknowledgement, then read every echo up to the connection's end.

        Timing the kill from the first acknowledgement, not from the first write,
        keeps a slow start (a busy machine) from leaving a round with nothing to check.
        """
        self.client.sock.settimeout(1.0)
        timer = threading.Timer(kill_after, kill)
        deadline = time.monotonic() + kill_after + EVENT_TIMEOUT
        try:
            alive = True
            while alive:
                assert time.monotonic() < deadline, "the server was still answering"
                if len(self.sent) - len(self.acked) < BURST_WINDOW:
                    alive = self._send_batch() and self._read(wait=0.0)
                else:
                    alive = self._read(wait=0.5)
                if self.acked and timer.ident is None:
                    timer.start()
            self._read_to_end()
        finally:
            timer.cancel()
            if timer.ident is not None:
                timer.join()

    def _send_batch(self) -> bool:
        batch = []
        for _ in range(BURST_BATCH):
            seq = len(self.sent)
            rid = BURST_RID_BASE + seq
            self.sent[rid] = _burst_text(self.round, seq)
            batch.append(encode("say", rid=rid, room=ROOM, text=self.sent[rid]))
        try:
            self.client.sock.sendall(b"".join(batch))
        except OSError:  # ssl.SSLError included: the server died under us
            return False
        return True

    def _read(self, *, wait: float) -> bool:
        """Decode what arrives within ``wait`` seconds (and then at once); False once closed."""
        sock = self.client.sock
        while sock.pending() or select.select([sock], [], [], wait)[0]:
            wait = 0.0
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break  # only part of a TLS record was there; read it next time
            except OSError:
                return False
            if not data:
                return False
            self._take(data)
        return True

    def _read_to_end(self) -> None:
        """After the kill: every echo still in flight, up to the connection's end."""
        sock = self.client.sock
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the connection stayed open after the server was killed"
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        self.client.decoder.feed(data)
        while (frame := self.client.decoder.next_frame()) is not None:
            if frame.type == "error":
                raise AssertionError(f"a burst message was refused: {dict(frame.fields)}")
            rid = frame.get("rid")
            if frame.type == "message" and rid in self.sent:
                msg_id = frame.get("id")
                assert frame.get("text") == self.sent[rid], frame.fields
                assert msg_id not in self.acked, f"id {msg_id} acknowledged twice"
                self.acked[msg_id] = self.sent[rid]


def _check_after_crash(
    db: Path, all_acked: dict[int, str], burst: _Burst, *, context: str
) -> list[tuple[int, str]]:
    """Assert what the disk holds after a crash; the stored (id, text) rows by id."""
    assert _integrity(db) == [("ok",)], context
    rows = [(int(str(i)), str(t)) for i, t in _query(db, "SELECT id, text FROM messages")]
    rows.sort()
    stored = dict(rows)

    duplicated = [text for text, n in Counter(t for _, t in rows).items() if n > 1]
    assert not duplicated, f"{context}: stored twice: {duplicated[:5]}"
    lost = {i: t for i, t in all_acked.items() if stored.get(i) != t}
    assert not lost, f"{context}: acknowledged but not stored as sent: {list(lost.items())[:5]}"

    # Ids follow the order the messages were sent in (one sender, one writer queue).
    keys = [_insertion_key(t) for _, t in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), context

    # The writer commits groups in queue order: a crash leaves a prefix of the burst,
    # and the acknowledgements, delivered in order, are a prefix of that.
    this_round = sorted(k[2] for k in keys if k[0] == burst.round and k[1] == 0)
    assert this_round == list(range(len(this_round))), f"{context}: gap in stored burst"
    acked_seqs = sorted(_insertion_key(t)[2] for t in burst.acked.values())
    assert acked_seqs == list(range(len(acked_seqs))), f"{context}: gap in acknowledgements"
    assert len(this_round) >= len(acked_seqs), context
    return rows


def _check_replay_and_next_id(
    port: int,
    pki: Pki,
    rows: list[tuple[int, str]],
    all_acked: dict[int, str],
    *,
    round_: int,
    context: str,
) -> None:
    """A user joining after the restart sees the latest messages; new ids are higher."""
    late = RawClient(port, pki.ca_pem)
    try:
        late.login("latecomer")
        for _ in rows[-HISTORY_ON_JOIN:]:  # the replay streams in after the login
            late.expect("message", history=True)
        replayed = [
            (f.get("id"), f.get("text"))
            for f in late.frames
            if f.type == "message" and f.get("history") is True
        ]
        assert replayed == rows[-HISTORY_ON_JOIN:], context
        last_acked = max(all_acked)
        if last_acked >= rows[-HISTORY_ON_JOIN:][0][0]:
            assert (last_acked, all_acked[last_acked]) in replayed, context

        text = f"after r{round_:02d}"
        rid = late.send("say", room=ROOM, text=text)
        echo = _reply_to(late, rid)
        assert echo.type == "message", f"{context}: {echo.fields}"
        assert echo.get("id") > max(all_acked), context
        assert echo.get("id") > rows[-1][0], context
        all_acked[echo.get("id")] = text
    finally:
        late.close()


# -- crashes ---------------------------------------------------------------------------------


def test_kill_9_mid_burst_loses_no_acknowledged_message(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    port = free_port()
    servers: list[ServerProcess] = []

    def start() -> ServerProcess:
        server = ServerProcess(pki, db, port=port, extra=UNMETERED_ARGS)
        servers.append(server)
        assert server.wait_listening() == port  # the same port at once, after a SIGKILL
        return server

    all_acked: dict[int, str] = {}
    mid_burst_kills = 0
    try:
        server = start()
        for round_ in range(CRASH_ROUNDS):
            kill_after = random.uniform(0.05, 0.4)
            context = f"round {round_}, SIGKILL {kill_after:.3f} s after the first acknowledgement"
            sender = RawClient(port, pki.ca_pem)
            try:
                sender.login("burster")
                burst = _Burst(sender, round_)
                try:
                    burst.run_until_killed(server.sigkill, kill_after=kill_after)
                finally:
                    server.kill()
            finally:
                sender.close()
            assert burst.acked, f"{context}: nothing was acknowledged before the kill"
            assert server.proc.returncode == -signal.SIGKILL, context
            mid_burst_kills += len(burst.sent) > len(burst.acked)
            all_acked.update(burst.acked)

            server = start()
            rows = _check_after_crash(db, all_acked, burst, context=context)
            _check_replay_and_next_id(port, pki, rows, all_acked, round_=round_, context=context)
    finally:
        for server in servers:
            server.kill()
    # Some kill must have landed with messages still in flight, or nothing was tested.
    assert mid_burst_kills > 0


# -- a full disk -------------------------------------------------------------------------------


def _fill_filesystem(path: Path) -> None:
    """Write ``path`` until the file system has no byte left (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], check=False, capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_full_disk_refuses_message_keeps_serving_and_recovers(pki: Pki, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.decode("utf-8", "replace").strip()
        pytest.skip(f"cannot mount a 2 MiB tmpfs: {reason}")
    server: ServerProcess | None = None
    clients: list[RawClient] = []
    try:
        db = small / "chat.db"
        server = ServerProcess(pki, db, port=0)
        port = server.wait_listening()
        sender, receiver = RawClient(port, pki.ca_pem), RawClient(port, pki.ca_pem)
        clients += [sender, receiver]
        sender.login("writer")
        receiver.login("reader")

        rid = sender.send("say", room=ROOM, text="before the disk filled")
        assert _reply_to(sender, rid).type == "message"
        receiver.expect("message", text="before the disk filled")

        filler = small / "filler"
        _fill_filesystem(filler)
        absorbed: list[str] = []  # stored in space SQLite already had
        refused = ""
        for attempt in range(FULL_DISK_ATTEMPTS):
            text = f"on a full disk #{attempt} " + "x" * 1000
            rid = sender.send("say", room=ROOM, text=text)
            reply = _reply_to(sender, rid)
            if reply.type == "error":
                assert reply.get("code") == "not_stored", reply.fields
                refused = text
                break
            absorbed.append(text)
        else:
            pytest.fail(f"{FULL_DISK_ATTEMPTS} messages stored on a full disk")

        rid = sender.send("time")
        sender.expect("time", rid=rid)  # the refused sender is still served

        filler.unlink()
        rid = sender.send("say", room=ROOM, text="space is back")
        echo = _reply_to(sender, rid)
        assert echo.type == "message", echo.fields
        receiver.expect("message", text="space is back")
        delivered = [f.get("text") for f in receiver.frames if f.type == "message"]
        assert refused not in delivered
        assert delivered == ["before the disk filled", *absorbed, "space is back"]

        for client in clients:
            client.close()
        assert server.terminate() == 0, server.stderr
        assert _integrity(db) == [("ok",)]
        texts = [t for (t,) in _query(db, "SELECT text FROM messages ORDER BY id")]
        assert refused not in texts
        assert texts == ["before the disk filled", *absorbed, "space is back"]
    finally:
        for client in clients:
            client.close()
        if server is not None:
            server.kill()
        _unmount(small)


# -- files that are not ours -----------------------------------------------------------------


def _refusal(pki: Pki, db: Path) -> str:
    """Start the server on ``db``; assert it refuses (status 2, one line); that line."""
    result = subprocess.run(
        server_argv(pki, db, 0),
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("securechat-server: "), stderr
    assert db.name in lines[0]
    return lines[0]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _assert_untouched(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    """Same files, same bytes; else say which files and byte offsets changed."""
    assert sorted(after) == sorted(before), "files were created or removed"
    for name, old in before.items():
        new = after[name]
        changed = [i for i in range(min(len(old), len(new))) if old[i] != new[i]]
        assert new == old, (
            f"{name} was modified: {len(old)} -> {len(new)} bytes, "
            f"bytes changed at offsets {changed[:20]}"
        )


def test_corrupt_database_file_is_refused_and_untouched(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    db.write_bytes(b"SQLite format 3\x00" + random.Random(7).randbytes(8192))
    before = _snapshot(tmp_path)
    _refusal(pki, db)
    _assert_untouched(before, _snapshot(tmp_path))


def _sqlite_file(path: Path, *, user_version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes (name TEXT, steps TEXT)")
    conn.execute("INSERT INTO recipes VALUES ('bread', 'knead')")
    conn.execute(f"PRAGMA user_version = {user_version:d}")
    conn.commit()
    conn.close()


def test_database_from_newer_version_is_refused(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    _sqlite_file(db, user_version=99)
    before = _snapshot(tmp_path)
    assert "newer" in _refusal(pki, db)
    _assert_untouched(before, _snapshot(tmp_path))


def test_foreign_sqlite_database_is_refused(pki: Pki, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    _sqlite_file(db, user_version=0)
    before = _snapshot(tmp_path)
    _refusal(pki, db)
    _assert_untouched(before, _snapshot(tmp_path))


# -- upgrades, settings and retention -------------------------------------------------------


def test_version_1_database_is_upgraded_keeping_accounts(
    make_server: Callable[..., Server], pki: Pki, tmp_path: Path
) -> None:
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    account_id = conn.execute(
        "INSERT INTO accounts (name, name_fold, password) VALUES (?, ?, ?)",
        ("Veteran", fold("Veteran"), hash_password("old secret")),
    ).lastrowid
    conn.commit()
    conn.close()

    server = make_server(db=db)
    port = server.address[1]
    impostor = RawClient(port, pki.ca_pem)
    try:
        impostor.send("login", user="veteran", password="wrong")
        assert impostor.expect("error").get("code") == "bad_password"
    finally:
        impostor.close()
    client = RawClient(port, pki.ca_pem)
    try:
        welcome = client.login("veteran", "old secret")
        assert welcome.get("user") == "Veteran"  # the old account, as it was spelt
        assert welcome.get("keep_history") is True
        assert _query(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        rid = client.send("say", room=ROOM, text="still here after the upgrade")
        assert _reply_to(client, rid).type == "message"
    finally:
        client.close()
    assert _query(db, "SELECT sender, text FROM messages") == [
        (account_id, "still here after the upgrade")
    ]


def test_durability_full_sets_synchronous_full(
    make_server: Callable[..., Server], pki: Pki, tmp_path: Path
) -> None:
    # What "full" buys (surviving a power cut) cannot be tested here; that the
    # setting reaches SQLite, and that messages are stored with it, can.
    store = Store(tmp_path / "probe.db", durability="full")
    try:
        full = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL
        assert store._db.execute("PRAGMA synchronous").fetchone() == (full,)
    finally:
        store.close()
    with pytest.raises(ConfigError, match="durability"):
        Store(tmp_path / "never.db", durability="fsync")
    assert not (tmp_path / "never.db").exists()

    db = tmp_path / "full.db"
    server = make_server(db=db, durability="full")
    client = RawClient(server.address[1], pki.ca_pem)
    try:
        client.login("careful")
        rid = client.send("say", room=ROOM, text="written with fsync")
        echo = _reply_to(client, rid)
        assert echo.type == "message", echo.fields
    finally:
        client.close()
    assert _query(db, "SELECT id, text FROM messages") == [(echo.get("id"), "written with fsync")]


def test_retention_deletes_messages_older_than_the_limit(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    store = Store(db)
    try:
        sender = store.create_account("keeper", None)
        assert sender is not None
        now = datetime.datetime.now(datetime.UTC)

        def message(msg_id: int, days_old: int, text: str) -> NewMessage:
            ts = utc_timestamp(now - datetime.timedelta(days=days_old))
            return NewMessage(msg_id, ts, sender.id, text, room=fold(ROOM), room_name=ROOM)

        store.insert_messages(
            [
                message(1, 40, "forty days old"),
                message(2, 31, "thirty-one days old"),
                message(3, 29, "twenty-nine days old"),
                message(4, 0, "new"),
            ],
            reserve_id=None,
        )
        writer = MessageWriter(store, retention_days=30)
        writer.start()  # sweeps at once, then hourly
        try:
            expected = [("twenty-nine days old",), ("new",)]
            deadline = time.monotonic() + 5.0
            while (texts := _query(db, "SELECT text FROM messages ORDER BY id")) != expected:
                assert time.monotonic() < deadline, f"still stored after 5 s: {texts}"
                time.sleep(0.02)
        finally:
            writer.stop()
    finally:
        store.close()
    assert _integrity(db) == [("ok",)]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _side_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


@pytest.mark.timeout(30)
def test_database_files_are_created_private(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    old_umask = os.umask(0o022)  # the usual umask, which leaves new files world-readable
    try:
        store = Store(db)
        try:
            assert store.create_account("alice", hash_password("pw")) is not None
            assert all(path.exists() for path in _side_files(db))
            assert {path.name: _mode(path) for path in _side_files(db)} == {
                path.name: PRIVATE_MODE for path in _side_files(db)
            }
        finally:
            store.close()
    finally:
        os.umask(old_umask)


@pytest.mark.timeout(30)
def test_database_files_open_to_others_are_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "chat.db"
    Store(db).close()
    db.chmod(0o644)
    # A connection kept open keeps the -wal and -shm files, made with the database's mode.
    other = sqlite3.connect(db)
    try:
        other.execute("INSERT INTO meta (key, value) VALUES ('elsewhere', 1)")
        other.commit()
        assert [_mode(path) for path in _side_files(db)] == [0o644] * 3
        with caplog.at_level(logging.WARNING, logger="securechat.store.sqlite"):
            Store(db).close()
        assert [_mode(path) for path in _side_files(db) if path.exists()] == [0o600] * 3
    finally:
        other.close()
    warned = [r.getMessage() for r in caplog.records if "made it private" in r.getMessage()]
    assert len(warned) == 3, warned
    assert all("mode 644" in text for text in warned)
