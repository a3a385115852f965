// What each server frame does to the model: messages into their conversations,
// unread and mention counts, member lists, topics, renames, and the answers to
// commands as notices. Rendering happens elsewhere, on the model's "change".

import { sameName, roomKey, dmKey, SERVER_KEY } from "./state.js";
import { mentions } from "./text.js";

export function handleFrame(app, frame, body) {
  const { model } = app;
  if (frame.type.startsWith("file_") && app.transfers.handle(frame, body)) return;
  const handler = HANDLERS[frame.type];
  if (handler) handler(app, frame, model);
}

function chat(app, frame, model) {
  const buffer = model.addMessage(frame);
  if (!buffer) return; // already shown (a replay overlapping what we had)
  const mine = model.me && sameName(frame.from, model.me);
  const isPrivate = frame.type === "private";
  // Unread private messages arrive after login as history without rid (mail), and
  // after a reconnect the rooms' replays are exactly what we missed: both are new.
  const fresh = !frame.history || (!frame.rid && !frame.search && (isPrivate || app.conn.resumed));
  if (!fresh || mine) return;
  const forMe = isPrivate || mentions(frame.text, model.me);
  const looking = buffer.key === model.current && !document.hidden;
  if (!looking) {
    buffer.unread += 1;
    if (forMe) buffer.highlight += 1;
    model.changed("list");
  }
  if (forMe && !frame.history) {
    const title = isPrivate ? `${frame.from} (private)` : `${frame.from} in ${frame.room}`;
    app.notifier.show(title, frame.text, { visibleHere: buffer.key === model.current, onClick: () => app.select(buffer.key) });
  }
}

function roomNotice(model, room, text, cls = "event") {
  model.addNotice(room ? roomKey(room) : SERVER_KEY, text, cls);
}

const HANDLERS = {
  message: chat,
  private: chat,

  joined(app, frame, model) {
    const buffer = model.room(frame.room);
    buffer.name = frame.room; // the room's canonical spelling
    buffer.joined = true;
    buffer.topic = frame.topic || "";
    buffer.memberCount = frame.count;
    if (Array.isArray(frame.users)) buffer.setMembers(frame.users);
    // A big room comes without its list, and only `who` tells who is away: ask.
    if (!Array.isArray(frame.users) || app.conn.features.has("away")) app.who(frame.room, false);
    model.changed("list");
    if (frame.rid) {
      const who = frame.users ? ` (${frame.count} here: ${frame.users.join(", ")})` : ` (${frame.count} here)`;
      roomNotice(model, frame.room, `you joined ${frame.room}${who}${frame.topic ? "; topic: " + frame.topic : ""}`);
      app.select(buffer.key);
    }
  },

  parted(app, frame, model) {
    model.dropRoom(frame.room);
    const why = frame.by ? ` (removed by ${frame.by}${frame.reason ? ": " + frame.reason : ""})` : "";
    model.addNotice(model.current, `you left ${frame.room}${why}`, "event");
  },

  system(app, frame, model) {
    if (frame.event === "away") {
      // Our own away (answer, or from another session) and "bob is away" after a msg
      // to bob: shown where the user is looking, or in the conversation with bob.
      const dm = frame.user && !sameName(frame.user, model.me || "") ? model.buffers.get(dmKey(frame.user)) : null;
      model.addNotice(dm ? dm.key : model.current, frame.text, "event");
      return;
    }
    const room = frame.room ? model.buffers.get(roomKey(frame.room)) : null;
    if (frame.event === "history" && room) {
      // A replay stopped at its limit of 500: fetch the rest ourselves, from the newest
      // id it brought (live messages of the room wait behind the replay and its notice).
      model.addNotice(room.key, `catching up on more than 500 messages missed in ${room.name}…`, "event");
      app.catchUp(room.name, room.newestId);
      return;
    }
    if (room && frame.user) {
      if (frame.event === "join") room.addMember(frame.user);
      if (frame.event === "part" || frame.event === "quit" || frame.event === "kick") room.removeMember(frame.user);
    }
    roomNotice(model, room ? frame.room : null, frame.text || frame.event, frame.event === "history" ? "notice" : "event");
    if (frame.event === "invite") app.notifier.show("Invitation", frame.text);
  },

  topic(app, frame, model) {
    const buffer = model.buffers.get(roomKey(frame.room));
    if (buffer) buffer.topic = frame.topic || "";
    model.changed("topic", roomKey(frame.room));
    if (frame.by) {
      roomNotice(model, frame.room, frame.topic ? `${frame.by} set the topic: ${frame.topic}` : `${frame.by} cleared the topic`);
    } else if (frame.rid) {
      model.addNotice(model.current, frame.topic ? `topic of ${frame.room}: ${frame.topic}` : `${frame.room} has no topic`);
    }
  },

  nick(app, frame, model) {
    const self = model.me && sameName(frame.old, model.me);
    model.rename(frame.old, frame.new);
    // Log in under the new name after a reconnect: the old one is reserved, not ours.
    if (self && app.conn.credentials) app.conn.credentials.user = frame.new;
    for (const buffer of model.rooms()) {
      if (buffer.members.has(frame.new.toLowerCase())) model.addNotice(buffer.key, frame.text, "event");
    }
    if (self) model.addNotice(model.current, frame.text, "event");
    app.renderIdentity();
  },

  users(app, frame, model) {
    model.addNotice(model.current, `${frame.room}: ${frame.users.join(", ")}`);
  },

  rooms(app, frame, model) {
    for (const r of frame.rooms) {
      const count = r.members ?? r.users;
      model.addNotice(model.current, `${r.name} (${count} member${count === 1 ? "" : "s"})${r.topic ? ": " + r.topic : ""}`, "list");
    }
  },

  time(app, frame, model) {
    model.addNotice(model.current, `server time is ${frame.ts}`);
  },

  history_status(app, frame, model) {
    model.addNotice(model.current, frame.text);
  },

  forgotten(app, frame, model) {
    model.addNotice(model.current, frame.text);
  },

  sessions(app, frame, model) {
    for (const s of frame.sessions || []) {
      model.addNotice(model.current, `session ${s.session} from ${s.peer} since ${s.since}${s.web ? " (web)" : ""}${s.current ? " (this one)" : ""}`, "list");
    }
  },

  session_closed(app, frame, model) {
    model.addNotice(model.current, `closed session ${frame.session}`);
  },

  done(app, frame, model) {
    model.addNotice(model.current, frame.text || "done");
  },

  bans(app, frame, model) {
    const bans = frame.bans || [];
    for (const b of bans) {
      const until = b.until ? `until ${b.until}` : "until lifted";
      model.addNotice(model.current, `ban: ${b.kind} ${b.target} by ${b.by} ${until}${b.reason ? ": " + b.reason : ""}`, "list");
    }
    if (!bans.length && !frame.more) model.addNotice(model.current, "no bans");
  },

  stats(app, frame, model) {
    // The figures the terminal client's /stats shows, in the same words.
    const shown = [
      ["uptime", (v) => `uptime ${v} s`], ["sessions", (v) => `${v} sessions`],
      ["accounts_online", (v) => `${v} accounts online`], ["messages_per_second", (v) => `${v} messages/s`],
      ["accounts", (v) => `${v} accounts`], ["rooms", (v) => `${v} rooms`],
      ["stored_messages", (v) => `${v} stored messages`], ["store_bytes", (v) => `store ${v} bytes`],
    ];
    const parts = shown.filter(([key]) => frame[key] !== undefined).map(([key, say]) => say(frame[key]));
    const refusals = Object.entries(frame.refusals || {}).sort();
    if (refusals.length) parts.push("refusals: " + refusals.map(([k, v]) => `${k} ${v}`).join(", "));
    model.addNotice(model.current, `stats: ${parts.join("; ")}`);
  },

  read(app, frame, model) {
    // Another session of ours read this conversation (or the server confirms ours).
    const buffer = model.buffers.get(frame.room ? roomKey(frame.room) : dmKey(frame.user || ""));
    if (!buffer) return;
    buffer.readSent = Math.max(buffer.readSent, frame.id || 0);
    if (!frame.rid && (frame.id || 0) >= buffer.newestId) {
      buffer.unread = 0;
      buffer.highlight = 0;
      model.changed("list");
    }
  },

  unread(app, frame, model) {
    for (const r of frame.rooms || []) {
      const buffer = model.buffers.get(roomKey(r.room));
      if (buffer && buffer.key !== model.current) buffer.unread = r.unread;
      if (frame.rid) model.addNotice(model.current, `${r.room}: ${r.unread} unread`, "list");
    }
    for (const u of frame.users || []) {
      const buffer = model.dm(u.user);
      if (buffer.key !== model.current) buffer.unread = u.unread;
      if (frame.rid) model.addNotice(model.current, `${u.user}: ${u.unread} unread`, "list");
    }
    if (frame.rid && !(frame.rooms || []).length && !(frame.users || []).length) model.addNotice(model.current, "nothing unread");
    model.changed("list");
  },

  error(app, frame, model) {
    model.addNotice(model.current, frame.text || frame.code, "error");
  },

  bye(app, frame, model) {
    const text = `disconnected: ${frame.reason || frame.code || "the server closed the session"}`;
    model.addNotice(SERVER_KEY, text, "error");
    if (model.current !== SERVER_KEY) model.addNotice(model.current, text, "error");
  },
};
