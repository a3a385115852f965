// File transfers inside the chat connection (protocol.md §16).
//
// Sending: hash the whole file with WebCrypto, offer it with its SHA-256, and once
// accepted send 64 KiB chunks while at most 1 MiB is unacknowledged (the server
// ends a transfer that overruns this window). Receiving: collect the chunks in
// memory, acknowledge each, and at file_done check the SHA-256 before offering
// the download. WebCrypto's digest is not incremental, so whole files live in
// memory: we cap them at 256 MiB, both ways.

import { dmKey } from "./state.js";
import { formatBytes } from "./text.js";

export const MAX_BROWSER_FILE = 256 * 1024 * 1024;
const CHUNK = 65536; // the frame body limit
const WINDOW = 1048576; // unacknowledged bytes per transfer (FILE_WINDOW)
const SOCKET_HIGH_WATER = 2 * 1024 * 1024; // do not pile up more in the WebSocket

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256(data) {
  return hex(await crypto.subtle.digest("SHA-256", data));
}

/**
 * The number people see for server transfer `id`: its last four digits, as the terminal
 * client shows it (docs/ui.md), so that sender and receiver talk of the same "4821".
 */
export function shortNumber(id) {
  return id % 10000 || id;
}

export class Transfers extends EventTarget {
  constructor(connection, model) {
    super();
    this.connection = connection;
    this.model = model;
    this.byId = new Map();
    this.local = 0; // numbers our own offers until the server gives them an id
  }

  emit(transfer, progressOnly = false) {
    this.dispatchEvent(new CustomEvent(progressOnly ? "progress" : "update", { detail: { transfer } }));
  }

  setState(t, state, reason = null) {
    t.state = state;
    if (reason) t.reason = reason;
    this.emit(t);
    this.model.changed("file", dmKey(t.peer));
  }

  card(t) {
    this.model.dm(t.peer);
    this.model.addNotice(dmKey(t.peer), "", "file", { kind: "file", transfer: t });
  }

  /** Offer `file` (a File) to `user`. */
  async offer(user, file) {
    const t = { dir: "out", id: null, local: ++this.local, peer: user, name: file.name, size: file.size, state: "hashing", sent: 0, acked: 0 };
    this.card(t);
    if (file.size > MAX_BROWSER_FILE) {
      return this.setState(t, "failed", `${file.name} is ${formatBytes(file.size)}; the web client sends files up to ${formatBytes(MAX_BROWSER_FILE)} (use securechat-client for larger ones)`);
    }
    try {
      t.data = new Uint8Array(await file.arrayBuffer());
      t.sha256 = await sha256(t.data);
    } catch (error) {
      return this.setState(t, "failed", `cannot read ${file.name}: ${error.message}`);
    }
    this.setState(t, "offering");
    this.connection.send(
      { type: "file_offer", to: user, name: file.name, size: file.size, sha256: t.sha256 },
      null,
      (frame) => {
        if (frame.type === "file_offered") {
          t.id = frame.id;
          t.peer = frame.to;
          this.byId.set(t.id, t);
          this.setState(t, "waiting");
        } else if (frame.type === "error") {
          t.data = null;
          this.setState(t, "failed", frame.text);
        }
        return "consumed-done";
      },
    );
  }

  accept(id) {
    const t = this.byId.get(id);
    if (!t || t.dir !== "in" || t.state !== "offered") return false;
    if (t.size > MAX_BROWSER_FILE) {
      this.setState(t, "failed", `the web client receives files up to ${formatBytes(MAX_BROWSER_FILE)}; accept ${t.name} with securechat-client instead`);
      this.connection.send({ type: "file_reject", id });
      return true;
    }
    t.chunks = [];
    t.received = 0;
    this.setState(t, "receiving");
    this.connection.send({ type: "file_accept", id, offset: 0 }, null, (frame) => {
      if (frame.type === "error") {
        // busy: the offer stays pending; anything else ended it.
        this.setState(t, frame.code === "busy" ? "offered" : "failed", frame.text);
      }
      return "consumed-done";
    });
    return true;
  }

  reject(id) {
    const t = this.byId.get(id);
    if (!t || t.dir !== "in" || t.state !== "offered") return false;
    this.connection.send({ type: "file_reject", id }, null, () => "consumed-done");
    this.setState(t, "rejected", "you declined it");
    return true;
  }

  cancel(id) {
    const t = this.byId.get(id);
    if (!t || isOver(t)) return false;
    this.connection.send({ type: "file_cancel", id }, null, () => "consumed-done");
    return true;
  }

  list() {
    return [...this.byId.values()];
  }

  /**
   * The server id of the transfer the user calls `number`: the whole id, or its last
   * digits as the terminal client shows them (shortNumber), if they name one transfer.
   */
  resolve(number) {
    if (this.byId.has(number)) return number;
    const modulus = 10 ** Math.max(4, String(number).length);
    const found = [...this.byId.keys()].filter((id) => id % modulus === number);
    return found.length === 1 ? found[0] : null;
  }

  /** A file frame from the server; true if it was one. */
  handle(frame, body) {
    const t = this.byId.get(frame.id);
    switch (frame.type) {
      case "file_offer":
        return this.offered(frame);
      case "file_accepted":
        if (!t || t.dir !== "out") return true;
        t.sent = t.acked = frame.offset || 0;
        this.setState(t, "sending");
        this.pump(t);
        return true;
      case "file_ack":
        if (!t || t.dir !== "out") return true;
        t.acked = Math.max(t.acked, frame.bytes);
        this.emit(t, true);
        this.pump(t);
        return true;
      case "file_rejected":
        if (t) this.finish(t, "rejected", `${frame.by} declined it`);
        return true;
      case "file_result":
        if (t) this.finish(t, frame.ok ? "done" : "failed", frame.ok ? null : frame.reason);
        return true;
      case "file_failed":
        if (t && !isOver(t)) this.finish(t, "failed", frame.reason);
        return true;
      case "file_chunk":
        if (t) this.chunk(t, frame, body);
        return true;
      case "file_done":
        if (t && t.dir === "in" && t.state === "receiving") this.verify(t);
        return true;
      default:
        return false;
    }
  }

  offered(frame) {
    const t = { dir: "in", id: frame.id, peer: frame.from, name: frame.name, size: frame.size, sha256: frame.sha256, state: "offered", received: 0 };
    this.byId.set(t.id, t);
    this.card(t);
    this.dispatchEvent(new CustomEvent("offer", { detail: { transfer: t } }));
    return true;
  }

  finish(t, state, reason) {
    t.data = null; // let the memory go
    t.chunks = null;
    this.setState(t, state, reason);
  }

  pump(t) {
    if (t.state !== "sending") return;
    while (t.sent < t.size) {
      const n = Math.min(CHUNK, t.size - t.sent);
      if (t.sent + n - t.acked > WINDOW) return; // wait for an ack
      if (this.connection.buffered > SOCKET_HIGH_WATER) {
        setTimeout(() => this.pump(t), 50);
        return;
      }
      this.connection.send({ type: "file_chunk", id: t.id, offset: t.sent }, t.data.subarray(t.sent, t.sent + n));
      t.sent += n;
      this.emit(t, true);
    }
    // Everything is on its way: say so at once, without waiting for the last acks.
    this.connection.send({ type: "file_done", id: t.id });
    t.data = null;
    this.setState(t, "finishing");
  }

  chunk(t, frame, body) {
    // Chunks can still arrive after a file_failed (bulk lane): ignore, do not ack.
    if (t.dir !== "in" || t.state !== "receiving" || !body) return;
    if (frame.offset !== t.received || t.received + body.length > t.size) {
      this.connection.send({ type: "file_cancel", id: t.id });
      return this.finish(t, "failed", `the sender sent bytes out of order or beyond the ${t.size} offered`);
    }
    t.chunks.push(body);
    t.received += body.length;
    this.connection.send({ type: "file_ack", id: t.id, bytes: t.received });
    this.emit(t, true);
  }

  async verify(t) {
    this.setState(t, "verifying");
    const blob = new Blob(t.chunks, { type: "application/octet-stream" });
    t.chunks = null;
    const digest = t.received === t.size ? await sha256(await blob.arrayBuffer()) : null;
    if (digest === t.sha256) {
      t.url = URL.createObjectURL(blob);
      this.connection.send({ type: "file_result", id: t.id, ok: true });
      this.setState(t, "saved");
    } else {
      const reason = "SHA-256 mismatch: the file was corrupted or tampered with; nothing was saved";
      this.connection.send({ type: "file_result", id: t.id, ok: false, reason });
      this.setState(t, "corrupt", reason);
    }
  }
}

export function isOver(t) {
  return ["done", "saved", "failed", "rejected", "corrupt"].includes(t.state);
}
