// The web client's entry point: wires the connection, the model and the views.
// One App object holds the actions that commands, buttons and keys share.

import "./theme.js";
import { Model, SERVER_KEY, roomKey, dmKey, sameName } from "./state.js";
import { Connection } from "./connection.js";
import { Transfers } from "./files.js";
import { Notifier } from "./notify.js";
import { toggleTheme, currentTheme } from "./theme.js";
import { handleFrame } from "./handlers.js";
import { runLine, UsageError } from "./commands.js";
import { renderText } from "./text.js";
import { MessageView } from "./view/messages.js";
import { renderSidebar } from "./view/sidebar.js";
import { renderMembers, renderSearch } from "./view/panel.js";
import { updateProgress } from "./view/filecard.js";
import { LoginForm } from "./view/login.js";
import * as requests from "./requests.js";
import { Composer } from "./view/composer.js";

const $ = (id) => document.getElementById(id);
const READ_EVERY = 1000; // ms: at most one read marker a second per conversation

class App {
  constructor() {
    this.model = new Model();
    this.conn = new Connection(this.model);
    this.transfers = new Transfers(this.conn, this.model);
    this.notifier = new Notifier();
    this.view = new MessageView($("messages"), $("message-list"), this);
    this.login = new LoginForm(this.conn);
    this.panel = "members"; // or "search"
    this.searchState = null;
    this.fileTarget = null;
    this.renderQueued = false;
    this.lastRead = new Map();
    this.bind();
    this.conn.connect();
  }

  bind() {
    const { model, conn } = this;
    model.addEventListener("change", () => this.scheduleRender());
    conn.addEventListener("frame", (e) => handleFrame(this, e.detail.frame, e.detail.body));
    conn.addEventListener("state", (e) => this.showState(e.detail));
    conn.addEventListener("notice", (e) => model.addNotice(model.current, e.detail.text, e.detail.cls));
    conn.addEventListener("welcome", (e) => this.welcomed(e.detail.welcome, e.detail.reconnect));
    conn.addEventListener("loginerror", (e) => this.loginFailed(e.detail.error));
    conn.addEventListener("closed", (e) => {
      if (e.detail.wasLoggedIn) model.addNotice(model.current, "connection lost", "error");
    });
    this.transfers.addEventListener("progress", (e) => updateProgress(e.detail.transfer));
    this.transfers.addEventListener("offer", (e) => {
      const t = e.detail.transfer;
      const buffer = model.dm(t.peer);
      if (buffer.key !== model.current || document.hidden) buffer.highlight += 1;
      this.notifier.show(`${t.peer} offers a file`, t.name, { visibleHere: buffer.key === model.current });
    });

    this.composer = new Composer($("composer"), $("message-input"), this);
    $("messages").addEventListener("scroll", () => {
      if ($("messages").scrollTop < 200) this.loadOlder(model.currentBuffer);
    });
    $("open-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = $("open-input").value.trim();
      if (!value) return;
      $("open-input").value = "";
      this.runCommand(value.startsWith("#") ? `/join ${value}` : `/msg ${value}`);
    });
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const words = $("search-input").value.trim();
      if (words) this.search(words);
      document.body.classList.remove("search-open");
    });
    $("search-button").addEventListener("click", () => {
      document.body.classList.toggle("search-open");
      if (document.body.classList.contains("search-open")) $("search-input").focus();
    });
    $("theme-button").addEventListener("click", () => this.renderTheme(toggleTheme()));
    $("notify-button").addEventListener("click", async () => this.renderNotify(await this.notifier.toggle()));
    $("menu-button").addEventListener("click", () => document.body.classList.toggle("drawer-open"));
    $("scrim").addEventListener("click", () => document.body.classList.remove("drawer-open", "panel-open"));
    $("members-button").addEventListener("click", () => {
      this.panel = "members";
      document.body.classList.toggle("panel-open");
      this.scheduleRender();
    });
    $("attach-button").addEventListener("click", () => {
      const buffer = model.currentBuffer;
      if (buffer.kind !== "dm") return this.notice("files go to a person: open a private conversation first (or /sendfile NAME)", "error");
      this.pickFile(buffer.name);
    });
    $("file-input").addEventListener("change", () => {
      const input = $("file-input");
      const target = this.fileTarget || (model.currentBuffer.kind === "dm" ? model.currentBuffer.name : null);
      for (const file of input.files) if (target) this.transfers.offer(target, file);
      input.value = "";
      this.fileTarget = null;
    });
    this.bindDrop();
    document.addEventListener("visibilitychange", () => this.scheduleRender());
    this.renderTheme(currentTheme());
    this.renderNotify(this.notifier.enabled);
  }

  bindDrop() {
    const main = $("main");
    const overlay = $("drop-overlay");
    const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes("Files");
    main.addEventListener("dragover", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      const buffer = this.model.currentBuffer;
      overlay.textContent = buffer.kind === "dm" ? `Drop to send to ${buffer.name}` : "Open a private conversation to send files";
      overlay.hidden = false;
    });
    main.addEventListener("dragleave", (e) => {
      if (e.target === overlay || !main.contains(e.relatedTarget)) overlay.hidden = true;
    });
    main.addEventListener("drop", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      overlay.hidden = true;
      const buffer = this.model.currentBuffer;
      if (buffer.kind !== "dm") return this.notice("files go to a person: open a private conversation first", "error");
      for (const file of e.dataTransfer.files) this.transfers.offer(buffer.name, file);
    });
  }

  // ---- actions used by commands and buttons ----

  notice(text, cls = "notice") {
    this.model.addNotice(this.model.current, text, cls);
  }

  request(header) {
    if (!this.conn.loggedIn) throw new UsageError("not connected: try again once the connection is back", "not_connected");
    return this.conn.send(header);
  }

  say(text, extra = {}) {
    const buffer = this.model.currentBuffer;
    if (buffer.kind === "dm") return this.sendPrivate(buffer.name, text, extra.action ? { action: true } : {});
    if (buffer.kind !== "room") throw new UsageError("this is the server buffer: pick a room or a person to talk to", "no_room");
    if (!this.conn.sendMessage({ type: "say", room: buffer.name, text, ...extra })) throw new UsageError("too many lines waiting for the connection", "busy");
    if (!this.conn.loggedIn) this.notice("not connected: your message will be sent once the connection is back");
  }

  sendPrivate(to, text, extra = {}) {
    if (!this.conn.sendMessage({ type: "msg", to, text, ...extra })) throw new UsageError("too many lines waiting for the connection", "busy");
    if (!this.conn.loggedIn) this.notice("not connected: your message will be sent once the connection is back");
  }

  join(room) {
    // Already in it: just show it (the terminal client would ask again for the replay,
    // but this view already holds everything since we joined).
    const existing = this.model.buffers.get(roomKey(room));
    if (existing?.joined) return this.select(existing.key);
    this.request({ type: "join", room });
  }

  openDm(name) {
    const buffer = this.model.dm(name);
    this.select(buffer.key);
  }

  select(key) {
    this.model.select(key);
    document.body.classList.remove("drawer-open");
    $("message-input").focus({ preventScroll: true });
  }

  who(room, show) {
    return requests.who(this, room, show);
  }

  loadOlder(buffer) {
    return requests.loadOlder(this, buffer);
  }

  catchUp(room, after) {
    return requests.catchUp(this, room, after);
  }

  search(words) {
    return requests.search(this, words);
  }

  jumpTo(frame) {
    const key = frame.type === "message" ? roomKey(frame.room) : dmKey(sameName(frame.from, this.model.me) ? frame.to : frame.from);
    if (frame.type === "private") this.model.dm(key.slice(1));
    this.select(key);
    document.body.classList.remove("panel-open");
    setTimeout(() => {
      const row = $("message-list").querySelector(`[data-id="${Number(frame.id)}"]`);
      if (row) {
        row.scrollIntoView({ block: "center" });
        row.classList.add("flash");
      }
    }, 50);
  }

  pickFile(user) {
    this.fileTarget = user;
    this.model.dm(user);
    $("file-input").click();
  }

  exportHistory() {
    return requests.exportHistory(this);
  }

  saveExport(lines) {
    return requests.saveExport(this, lines);
  }

  quit(reason) {
    this.conn.quit(reason);
    this.notice("you quit; reload the page to log in again");
  }

  runCommand(line) {
    try {
      runLine(line, this);
      return true;
    } catch (error) {
      if (!(error instanceof UsageError)) throw error;
      this.notice(error.message, "error");
      return false;
    }
  }

  // ---- connection events ----

  welcomed(welcome, reconnect) {
    const { model } = this;
    model.me = welcome.user;
    model.server.name = this.conn.hello?.server || "server";
    const member = new Set();
    for (const r of welcome.rooms || []) {
      const buffer = model.room(r.room);
      buffer.joined = true;
      buffer.topic = r.topic || "";
      buffer.memberCount = r.members;
      if (buffer.key !== model.current) buffer.unread = Math.max(r.unread || 0, reconnect ? buffer.unread : 0);
      member.add(buffer.key);
    }
    for (const buffer of model.rooms()) if (!member.has(buffer.key)) model.dropRoom(buffer.name);
    this.login.hide();
    $("app").hidden = false;
    this.renderIdentity();
    model.addNotice(SERVER_KEY, reconnect ? `reconnected as ${welcome.user}` : `connected to ${model.server.name} as ${welcome.user} (${welcome.tls_version || "TLS"})`, "event");
    if (!reconnect || model.current === SERVER_KEY) {
      const general = model.buffers.get("#general");
      const first = general?.joined ? general : model.rooms()[0];
      if (first) this.select(first.key);
    }
    this.scheduleRender();
  }

  loginFailed(error) {
    $("app").hidden = !!this.conn.final || $("app").hidden;
    if (this.conn.final) this.login.show(this.login.explain(error));
    else this.notice(error.text, "error");
  }

  showState({ state, delay, reason }) {
    const banner = $("conn-banner");
    const dot = $("conn-dot");
    const labels = {
      idle: "",
      ready: "",
      connecting: "Connecting…",
      login: "Signing in…",
      connected: "Connected",
      reconnecting: `Connection lost: reconnecting in ${delay} s`,
      closed: `Disconnected${reason ? ": " + reason : ""}`,
    };
    banner.textContent = labels[state] || state;
    banner.dataset.state = state;
    banner.hidden = ["connected", "idle", "ready"].includes(state);
    dot.dataset.state = state;
    dot.title = labels[state] || state;
    this.login.connectionState(state, labels[state]);
  }

  // ---- rendering ----

  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    setTimeout(() => {
      this.renderQueued = false;
      this.render();
    }, 0);
  }

  render() {
    const { model } = this;
    const buffer = model.currentBuffer;
    if (!document.hidden) {
      buffer.unread = 0;
      buffer.highlight = 0;
    }
    renderSidebar($("buffer-list"), model, (key) => this.select(key));
    this.renderHeader(buffer);
    this.view.render(buffer);
    const panel = $("side-panel");
    if (this.panel === "search" && this.searchState) {
      renderSearch(panel, this.searchState, model.me, (f) => this.jumpTo(f), () => {
        this.panel = "members";
        this.searchState = null;
        document.body.classList.remove("panel-open");
        this.scheduleRender();
      });
    } else {
      renderMembers(panel, buffer, model.me, (name) => this.openDm(name));
    }
    const total = [...model.buffers.values()].reduce((n, b) => n + b.unread, 0);
    document.title = `${total ? `(${total}) ` : ""}${buffer.kind === "server" ? "" : buffer.name + " · "}securechat`;
    this.markRead(buffer);
    // Fill the screen: if the history does not reach the top yet, fetch more.
    const s = $("messages");
    if (s.scrollHeight <= s.clientHeight + 200 && buffer.items.some((i) => i.kind === "msg")) this.loadOlder(buffer);
    // A conversation seen for the first time fetches its latest page once.
    if (!buffer.fetched && buffer.kind === "dm" && this.conn.loggedIn) {
      buffer.fetched = true;
      this.loadOlder(buffer);
    }
  }

  renderHeader(buffer) {
    const title = $("buffer-title");
    const topic = $("buffer-topic");
    title.replaceChildren();
    topic.replaceChildren();
    if (buffer.kind === "server") {
      renderText(title, buffer.name, { links: false });
      topic.textContent = "connection, notices and command answers";
    } else {
      renderText(title, buffer.kind === "dm" ? `@${buffer.name}` : buffer.name, { links: false });
      if (buffer.kind === "room" && buffer.topic) renderText(topic, buffer.topic, { me: this.model.me, links: true });
      else topic.textContent = buffer.kind === "dm" ? `private conversation with ${buffer.name}` : "no topic";
    }
    $("members-count").textContent = buffer.kind === "room" ? String(buffer.members.size) : "";
    $("message-input").placeholder = buffer.kind === "server" ? "Type /help for commands" : `Message ${buffer.kind === "dm" ? buffer.name : buffer.name}`;
    $("attach-button").disabled = buffer.kind !== "dm";
  }

  renderIdentity() {
    const me = $("me-name");
    me.textContent = this.model.me || "";
    $("server-name").textContent = this.conn.hello?.server || "";
  }

  renderTheme(theme) {
    $("theme-button").setAttribute("aria-pressed", String(theme === "dark"));
    $("theme-button").title = theme === "dark" ? "switch to the light theme" : "switch to the dark theme";
  }

  renderNotify(on) {
    const b = $("notify-button");
    b.setAttribute("aria-pressed", String(on));
    b.title = on ? "notifications are on (mentions and private messages): click to turn off" : "turn on notifications for mentions and private messages";
  }

  /** Tell the server (and so our other sessions) that we have seen this conversation. */
  markRead(buffer) {
    if (document.hidden || !this.conn.loggedIn || buffer.kind === "server") return;
    if (buffer.kind === "room" && !buffer.joined) return;
    if (!this.conn.features.has("read") || buffer.newestId <= buffer.readSent) return;
    const now = Date.now();
    const last = this.lastRead.get(buffer.key) || 0;
    if (now - last < READ_EVERY) {
      setTimeout(() => this.scheduleRender(), READ_EVERY - (now - last));
      return;
    }
    this.lastRead.set(buffer.key, now);
    buffer.readSent = buffer.newestId;
    const header = { type: "read", id: buffer.newestId };
    if (buffer.kind === "room") header.room = buffer.name;
    else header.user = buffer.name;
    this.conn.send(header, null, () => "consumed-done");
  }
}

window.addEventListener("DOMContentLoaded", () => {
  // Exposed for debugging in the console only; nothing reads it.
  window.securechat = new App();
});
