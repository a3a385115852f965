"""docs/server.md followed as a new administrator would, every step a real process: a
config file, the systemd unit's ExecStart line, invite-only registration with one admin,
a moderator who kicks and bans a flooder, a certificate replaced and reloaded with SIGHUP
while people stay connected, and a backup taken while people chat, restored elsewhere."""

from __future__ import annotations

import hashlib
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import EVENT_TIMEOUT, Pki, RawClient, free_port, history_page

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "contrib" / "securechat.service"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(120)


def _admin(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "securechat-admin"), "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def _exec_start(config: Path) -> list[str]:
    """The unit's ExecStart line, with this machine's paths."""
    (line,) = [
        ln.partition("=")[2] for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")
    ]
    argv = shlex.split(line)
    argv[0] = str(BIN / Path(argv[0]).name)
    return [str(config) if word == "/etc/securechat/securechat.toml" else word for word in argv]


class _Service:
    """The server as systemd would run it: ExecStart in the state directory."""

    def __init__(self, config: Path, state: Path) -> None:
        self.proc = subprocess.Popen(
            _exec_start(config), cwd=state, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def _read() -> None:
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                if "securechat-server: listening on" in line:
                    self.port = int(line.rsplit(":", 1)[1])
                    ready.set()

        threading.Thread(target=_read, daemon=True).start()
        assert ready.wait(EVENT_TIMEOUT), "\n".join(self.lines)

    def wait_for_line(self, text: str) -> str:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(EVENT_TIMEOUT)


def _login(port: int, ca: Path, user: str, **fields: object) -> RawClient:
    client = RawClient(port, ca)
    client.send("login", user=user, password=f"{user}-pw", **fields)
    client.expect("welcome")
    return client


def _answer(client: RawClient, rid: int) -> object:
    while True:
        frame = client.recv_frame()
        assert frame is not None, "closed before answering"
        client.frames.append(frame)
        if frame.get("rid") == rid:
            return frame


def _fingerprint(port: int, ca: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=EVENT_TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_the_server_guide_end_to_end(pki: Pki, tmp_path: Path) -> None:
    state = tmp_path / "var-lib-securechat"
    state.mkdir(mode=0o700)
    db = state / "securechat.db"
    live_cert, live_key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    live_cert.write_bytes(pki.server_pem.read_bytes())
    live_key.write_bytes(pki.server_key.read_bytes())
    live_key.chmod(0o600)
    config = tmp_path / "securechat.toml"
    config.write_text(
        f'cert = "{live_cert}"\nkey = "{live_key}"\nport = {free_port()}\n'
        f'db = "{db}"\nregistration = "invite"\n',
        encoding="utf-8",
    )
    pw = tmp_path / "admin-pw"
    pw.write_text("admin-pw\n")
    (tmp_path / "mod-pw").write_text("mod-pw\n")
    # The first admin and a moderator, from the admin tool (never from logging in first).
    _admin(db, "user", "add", "admin", "--password-file", str(pw))
    _admin(db, "user", "role", "admin", "admin")
    _admin(db, "user", "add", "mod", "--password-file", str(tmp_path / "mod-pw"))
    _admin(db, "user", "role", "mod", "moderator")
    service = _Service(config, state)
    try:
        ca = pki.ca_pem
        port = service.port
        # Invite-only: without a code nobody registers; with one, once.
        stranger = RawClient(port, ca)
        rid = stranger.send("login", user="stranger", password="x", register=True)
        assert _answer(stranger, rid).get("code") == "invite_required"  # type: ignore[attr-defined]
        code = _admin(db, "invite", "create", "--expires", "1d").stdout.splitlines()[0]
        bob = _login(port, ca, "bob", register=True, invite=code)
        again = RawClient(port, ca)
        rid = again.send("login", user="carol", password="carol-pw", register=True, invite=code)
        assert _answer(again, rid).get("code") == "bad_invite"  # type: ignore[attr-defined]
        flood_code = _admin(db, "invite", "create").stdout.splitlines()[0]
        flooder = _login(port, ca, "flooder", register=True, invite=flood_code)
        mod = _login(port, ca, "mod")
        for n in range(5):
            flooder.send("say", room="#general", text=f"spam {n}")
        bob.expect("message", text="spam 4")
        # The moderator kicks, then bans; the flooder cannot come back.
        rid = mod.send("kick", user="flooder", reason="flooding")
        _answer(mod, rid)
        assert any(
            f.type == "bye" and f.get("code") == "kicked" for f in flooder.wait_closed()
        )
        flooder = _login(port, ca, "flooder")
        rid = mod.send("ban", user="flooder", duration="1d", reason="flooding again")
        _answer(mod, rid)
        assert any(f.type == "bye" and f.get("code") == "banned" for f in flooder.wait_closed())
        back = RawClient(port, ca)
        rid = back.send("login", user="flooder", password="flooder-pw")
        refused = _answer(back, rid)
        assert refused.get("code") == "banned" and refused.get("until")  # type: ignore[attr-defined]
        # A renewed certificate, as certbot writes it, and a reload (ExecReload: SIGHUP).
        before = _fingerprint(port, ca)
        leaf = pki.ca.issue_cert("localhost", "127.0.0.1")
        leaf.private_key_pem.write_to_path(str(live_key))
        live_key.chmod(0o600)
        leaf.cert_chain_pems[0].write_to_path(str(live_cert))
        service.proc.send_signal(signal.SIGHUP)
        service.wait_for_line("reload: certificate")
        assert _fingerprint(port, ca) != before
        bob.send("say", room="#general", text="still here after the reload")
        mod.expect("message", text="still here after the reload")
        # A backup while people chat, restored on another path.
        talking = threading.Event()

        def _chat() -> None:
            for n in range(15):  # within the message budget (a burst of 20)
                bob.send("say", room="#general", text=f"during backup {n}")
            talking.set()

        threading.Thread(target=_chat).start()
        copy = tmp_path / "elsewhere" / "copy.db"
        copy.parent.mkdir()
        _admin(db, "backup", str(copy))
        assert talking.wait(EVENT_TIMEOUT)
        mod.expect("message", text="during backup 14")
    finally:
        service.stop()
    restored_config = tmp_path / "restored.toml"
    restored_config.write_text(
        config.read_text().replace(str(db), str(copy)).replace(
            f"port = {port}", f"port = {free_port()}"
        ),
        encoding="utf-8",
    )
    restored = _Service(restored_config, copy.parent)
    try:
        admin = _login(restored.port, pki.ca_pem, "admin")
        rows, _ = history_page(admin, room="#general", limit=100)
        texts = [r.get("text") for r in rows]
        assert "still here after the reload" in texts and "spam 0" in texts
    finally:
        restored.stop()
