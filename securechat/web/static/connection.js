// The WebSocket, login, keepalive, reconnection with backoff and gap filling.
//
// Life cycle: connect -> `hello` -> `login` -> `welcome` -> chat. When an established
// connection drops we reconnect after 1, 2, 4 ... 30 s and log in again with
// `replay:false` and the resume point of every room (`since`, feature login_since),
// then ask each private conversation for what came after its newest id, and resend
// every message the server never acknowledged, with its original `key` so that the
// server stores it once (protocol.md §15.8, §17.5). The Model drops duplicates by id.

import { encodeFrame, decodeFrames, ProtocolError } from "./wire.js";

const BACKOFF = [1, 2, 4, 8, 15, 30]; // seconds before each further attempt
const KEEPALIVE = 30_000; // ping after this much silence, give up after as much again
const PAGE_LIMIT = 500; // the most one history answer or replay holds
const OUTBOX_LIMIT = 1000; // lines typed while disconnected, as the terminal client keeps
// The session ended for good: reconnecting would only be refused again.
const FINAL_BYE = new Set(["kicked", "banned", "account_deleted", "session_closed"]);
// Frames that are not requests and carry no rid.
const NO_RID = new Set(["ping", "pong", "file_chunk", "file_ack", "file_done", "file_result"]);

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Connection extends EventTarget {
  constructor(model, url = `wss://${location.host}/ws`) {
    super();
    this.model = model;
    this.url = url;
    this.ws = null;
    this.state = "idle"; // idle, connecting, ready, login, connected, reconnecting, closed
    this.hello = null;
    this.credentials = null;
    this.loggedIn = false; // this socket has had its welcome
    this.everLoggedIn = false; // some socket has: a drop is then reconnected
    this.rid = 0;
    this.loginRid = 0;
    this.handlers = new Map(); // rid -> function(frame): true when the answer is complete
    this.pending = new Map(); // rid -> say/msg header not yet acknowledged
    this.outbox = []; // say/msg typed while not logged in
    this.attempt = 0;
    this.retryAt = 0;
    this.timer = null;
    this.lastHeard = Date.now();
    this.pinged = false;
    this.final = null; // why we stopped for good
    setInterval(() => this.tick(), 1000);
    document.addEventListener("visibilitychange", () => {
      // A phone wakes up: do not wait out the backoff.
      if (!document.hidden && this.state === "reconnecting") this.connect();
    });
  }

  get features() {
    return new Set(this.hello?.features || []);
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setState(state, extra = {}) {
    this.state = state;
    this.emit("state", { state, ...extra });
  }

  connect() {
    clearTimeout(this.timer);
    if (this.ws) this.ws.onclose = this.ws.onmessage = this.ws.onerror = null;
    this.ws?.close();
    this.loggedIn = false;
    this.hello = null;
    this.setState("connecting");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = (event) => this.closed(ws, event);
    this.ws = ws;
    this.lastHeard = Date.now();
    this.pinged = false;
  }

  /** Log in with `credentials` ({user, password, register, invite}). */
  login(credentials) {
    this.credentials = credentials;
    this.final = null;
    if (this.hello && this.ws?.readyState === WebSocket.OPEN) this.sendLogin();
    else this.connect();
  }

  sendLogin() {
    const c = this.credentials;
    const header = { type: "login", user: c.user, password: c.password };
    if (this.everLoggedIn) {
      header.register = false;
      header.replay = false; // we ask for exactly what we missed
      if (this.features.has("login_since")) header.since = this.model.resumePoints();
    } else {
      header.register = Boolean(c.register);
      if (c.register && c.invite) header.invite = c.invite;
    }
    this.setState("login");
    this.loginRid = this.send(header);
  }

  /** Send one frame; returns its rid (requests get one). `onAnswer` sees answers by rid. */
  send(header, body = null, onAnswer = null) {
    if (header.rid === undefined && !NO_RID.has(header.type)) {
      this.rid += 1;
      header = { ...header, rid: this.rid };
    }
    if (onAnswer) this.handlers.set(header.rid, onAnswer);
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(encodeFrame(header, body));
    return header.rid;
  }

  /** Send `say` or `msg` now, or keep it until we are logged in again. */
  sendMessage(header) {
    header = { ...header, key: randomKey() };
    if (!this.loggedIn) {
      if (this.outbox.length >= OUTBOX_LIMIT) return false;
      this.outbox.push(header);
      return true;
    }
    const rid = this.send(header);
    this.pending.set(rid, { ...header, rid });
    return true;
  }

  /** How many bytes the socket still has to write (flow control for files). */
  get buffered() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  quit() {
    this.final = "you quit";
    this.send({ type: "quit" });
  }

  receive(ws, data) {
    if (ws !== this.ws) return;
    this.lastHeard = Date.now();
    this.pinged = false;
    if (typeof data === "string") return this.fail("the server sent a text message");
    let frames;
    try {
      frames = decodeFrames(data);
    } catch (error) {
      if (error instanceof ProtocolError) return this.fail(`protocol error: ${error.message}`);
      throw error;
    }
    for (const { header, body } of frames) this.dispatch(header, body);
  }

  fail(reason) {
    this.emit("frame", { frame: { type: "error", code: "bad_frame", text: reason } });
    this.ws?.close();
  }

  dispatch(frame, body) {
    switch (frame.type) {
      case "ping":
        this.send({ type: "pong" });
        return;
      case "pong":
        return;
      case "hello":
        this.hello = frame;
        this.emit("hello", { hello: frame });
        if (this.credentials) this.sendLogin();
        else this.setState("ready");
        return;
      case "welcome":
        return this.welcomed(frame);
      case "bye":
        if (FINAL_BYE.has(frame.code)) this.final = frame.reason || frame.code;
        break;
      case "error":
        if (frame.rid && frame.rid === this.loginRid) return this.loginRefused(frame);
        if (frame.rid && this.pending.has(frame.rid)) this.refused(frame);
        break;
      case "message":
      case "private":
        if (frame.rid) this.pending.delete(frame.rid);
        break;
    }
    const handler = frame.rid ? this.handlers.get(frame.rid) : null;
    if (handler) {
      const result = handler(frame, body);
      if (result === "done" || result === "consumed-done") this.handlers.delete(frame.rid);
      if (result === "consumed" || result === "consumed-done") return;
    }
    this.emit("frame", { frame, body });
  }

  welcomed(frame) {
    const reconnect = this.everLoggedIn;
    this.resumed = reconnect; // replays on this connection are what we missed
    this.loggedIn = true;
    this.everLoggedIn = true;
    this.attempt = 0;
    this.setState("connected", { tls: frame.tls_version });
    this.emit("welcome", { welcome: frame, reconnect });
    if (reconnect) this.fillGaps(frame);
    // First what was sent but never acknowledged (same keys), then what was typed since.
    const resend = [...this.pending.values()].sort((a, b) => a.rid - b.rid);
    this.pending.clear();
    const canResend = this.features.has("resume");
    for (const header of resend) {
      if (canResend) this.sendMessage({ ...header, rid: undefined, key: undefined });
    }
    if (resend.length && !canResend) {
      this.emit("notice", { text: `${resend.length} message(s) were not confirmed before the connection was lost; check the history before sending them again`, cls: "error" });
    }
    const queued = this.outbox.splice(0);
    for (const header of queued) this.sendMessage({ ...header, key: undefined });
  }

  fillGaps(welcome) {
    const member = new Set((welcome.rooms || []).map((r) => r.room.toLowerCase()));
    if (!this.features.has("login_since")) {
      // Older servers: rejoin each room asking for what came after our newest id.
      for (const buffer of this.model.rooms()) {
        if (!member.has(buffer.key)) continue;
        const since = buffer.newestId || this.model.maxId;
        this.send(since ? { type: "join", room: buffer.name, since } : { type: "join", room: buffer.name });
      }
    }
    for (const buffer of this.model.dms()) {
      if (buffer.newestId) this.fetchAfter({ user: buffer.name }, buffer.newestId);
    }
  }

  /** Every stored message of a conversation after `after`, 500 at a time; the rows
   * reach the model like any other message, which drops what it already has. */
  fetchAfter(where, after) {
    this.send({ type: "history", ...where, after, limit: PAGE_LIMIT }, null, (frame) => {
      if (frame.type !== "history_end") return frame.type === "error" ? "done" : undefined;
      if (frame.count === PAGE_LIMIT && frame.last) this.fetchAfter(where, frame.last);
      return "consumed-done";
    });
  }

  loginRefused(frame) {
    this.loginRid = 0;
    // A refused login is final for this socket; the server closes it. Only a
    // throttle or an overload is worth retrying on our own.
    this.retryLogin = frame.code === "login_throttled" || frame.code === "busy" || frame.code === "unavailable";
    if (!this.everLoggedIn || !this.retryLogin) {
      this.final = frame.text;
      this.credentials = null;
    }
    this.emit("loginerror", { error: frame });
  }

  refused(frame) {
    const header = this.pending.get(frame.rid);
    this.pending.delete(frame.rid);
    if (frame.code === "rate_limited") {
      // The message was neither stored nor delivered: send it again, same key.
      const wait = Math.max(1, Number(frame.retry_after) || 1) * 1000;
      setTimeout(() => {
        if (!this.loggedIn) return this.outbox.unshift(header);
        const rid = this.send({ ...header, rid: undefined });
        this.pending.set(rid, { ...header, rid });
      }, wait);
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    const wasLoggedIn = this.loggedIn;
    this.loggedIn = false;
    this.handlers.clear();
    this.emit("closed", { code: event.code, wasLoggedIn });
    if (this.final) {
      this.setState("closed", { reason: this.final });
      return;
    }
    // A server down or restarting: try again after a growing delay.
    const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    this.attempt += 1;
    this.retryAt = Date.now() + delay * 1000 + Math.random() * 300;
    this.setState("reconnecting", { delay });
    this.timer = setTimeout(() => this.connect(), this.retryAt - Date.now());
  }

  tick() {
    if (this.state === "reconnecting") {
      const left = Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000));
      this.emit("state", { state: "reconnecting", delay: left });
      return;
    }
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const silent = Date.now() - this.lastHeard;
    if (silent > 2 * KEEPALIVE) {
      this.ws.close(); // the peer is gone: onclose schedules the reconnect
    } else if (silent > KEEPALIVE && !this.pinged) {
      this.pinged = true;
      this.send({ type: "ping" });
    }
  }
}
