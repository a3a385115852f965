// Requests whose answers come in several frames (by rid): member lists, history
// pages when scrolling back, search results and the export. Each collects its
// answer and hands it to the model or a view; none of it reaches the buffers twice.

import { roomKey } from "./state.js";

const PAGE = 50; // messages per history page when scrolling back

/** Who is in `room` (or, without one, online anywhere): the member list, and a notice if `show`. */
export function who(app, room, show) {
  const users = [];
  const away = new Map();
  app.conn.send({ type: "who", room: room || undefined }, null, (frame) => {
    if (frame.type === "error") return "done";
    users.push(...frame.users);
    for (const [name, text] of Object.entries(frame.away || {})) away.set(name.toLowerCase(), text);
    if (frame.more) return "consumed";
    const buffer = room ? app.model.buffers.get(roomKey(room)) : null;
    if (buffer?.joined) {
      buffer.setMembers(users);
      buffer.away = away;
    }
    const names = users.map((n) => (away.has(n.toLowerCase()) ? `${n} (away: ${away.get(n.toLowerCase())})` : n));
    if (show) app.notice(`${users.length} ${room ? "in " + frame.room : "online"}: ${names.join(", ")}`, "list");
    app.scheduleRender();
    return "consumed-done";
  });
}

export function loadOlder(app, buffer) {
  if (buffer.loading || !buffer.hasMore || buffer.kind === "server" || (buffer.kind === "room" && !buffer.joined)) return;
  if (!app.conn.loggedIn) return;
  buffer.loading = true;
  const header = { type: "history", limit: PAGE, before: buffer.oldestId || undefined };
  if (buffer.kind === "room") header.room = buffer.name;
  else header.user = buffer.name;
  app.conn.send(header, null, (frame) => {
    if (frame.type === "message" || frame.type === "private") {
      app.model.addMessage(frame);
      return "consumed";
    }
    buffer.loading = false;
    if (frame.type === "history_end") {
      if (frame.count < PAGE) buffer.hasMore = false;
    } else {
      buffer.hasMore = false;
      if (frame.type === "error" && frame.code !== "not_in_room") app.notice(frame.text, "error");
    }
    app.model.changed("items", buffer.key);
    return "consumed-done";
  });
  app.scheduleRender();
}

export function search(app, words) {
  const state = { words, results: [], done: false, error: null };
  app.searchState = state;
  app.panel = "search";
  document.body.classList.add("panel-open");
  document.getElementById("search-input").value = words;
  app.conn.send({ type: "search", text: words }, null, (frame) => {
    if (frame.type === "message" || frame.type === "private") state.results.push(frame);
    else if (frame.type === "history_end") state.done = true;
    else if (frame.type === "error") state.error = frame.text;
    app.scheduleRender();
    return frame.type === "message" || frame.type === "private" ? "consumed" : "consumed-done";
  });
  app.scheduleRender();
}

export function exportHistory(app) {
  const lines = [];
  const page = (after) => {
    app.conn.send({ type: "export", after }, null, (frame) => {
      if (frame.type === "message" || frame.type === "private") {
        lines.push(JSON.stringify(frame, ["type", "id", "ts", "room", "from", "to", "text"]));
        return "consumed";
      }
      if (frame.type === "history_end" && frame.count > 0) page(frame.last);
      else if (frame.type === "history_end") app.saveExport(lines);
      else app.notice(frame.text || "export failed", "error");
      return "consumed-done";
    });
  };
  app.notice("exporting your stored messages…");
  page(0);
}

export function saveExport(app, lines) {
  const blob = new Blob(lines.map((l) => l + "\n"), { type: "application/x-ndjson" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `securechat-export-${app.model.me}.jsonl`;
  document.body.append(a);
  a.click();
  a.remove();
  app.notice(`exported ${lines.length} message${lines.length === 1 ? "" : "s"} to ${a.download}`);
}

/** Fetch what a capped replay of `room` left out, after `after` (see Connection.fetchAfter). */
export function catchUp(app, room, after) {
  app.conn.fetchAfter({ room }, after);
}
