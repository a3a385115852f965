// The /commands typed in the message box: the same names, arguments and errors as
// the terminal client's (docs/client.md §5). Each command's answer appears in the
// conversation on screen, as in the terminal client.

import { shortNumber } from "./files.js";

const MAX_TEXT = 4000; // characters of a message (protocol.md §3)
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;

// name, arguments, help: also what /help prints.
export const COMMANDS = [
  ["join", "#room", "join a room (creating it if new) and switch to it"],
  ["part", "[#room]", "leave a room (default: the current one)"],
  ["msg", "NAME [text]", "open a private conversation with NAME, and send text if given"],
  ["query", "NAME [text]", "open the private conversation with NAME (and send text)"],
  ["me", "action", "send an action to the conversation, shown as * you action"],
  ["away", "[text]", "mark yourself away with text, or back without it"],
  ["nick", "NEW", "rename your account to NEW; your old name stays reserved for you"],
  ["topic", "[text]", "show the current room's topic, or set it (at most 300 characters)"],
  ["who", "[#room]", "list the users in a room (default: the current one)"],
  ["rooms", "", "list every room with its member count and topic"],
  ["list", "", "list everyone online, and who of them is away"],
  ["close", "", "close this conversation (in a room: leave it, as /part)"],
  ["clear", "", "clear this conversation's screen (the stored history stays)"],
  ["search", "WORDS", "find your visible messages with all WORDS, newest first"],
  ["history", "on|off|status|forget|export|unread|search WORDS", "control and read what the server stores"],
  ["nolog", "text", "send one message to the room that is never stored"],
  ["sendfile", "NAME", "pick a file and offer it to NAME (or drop a file on a conversation)"],
  ["accept", "ID", "accept file offer ID"],
  ["reject", "ID", "decline file offer ID"],
  ["cancel", "ID", "stop file transfer ID"],
  ["files", "", "list file transfers"],
  ["sessions", "[close N]", "list where your account is logged in, or log out session N"],
  ["time", "", "show the server's time (UTC)"],
  ["help", "[command]", "list the commands, or explain one"],
  ["quit", "[reason]", "leave the chat"],
  // Moderation, as in the terminal client (docs/server.md, "Moderation").
  ["kick", "[#room] NAME [reason]", "disconnect NAME (moderators), or put NAME out of a room you run"],
  ["ban", "NAME|--ip ADDR [duration] [reason]", "ban an account or an address (moderators); duration like 30m, 2h, 7d"],
  ["unban", "NAME|ADDR", "lift a ban (moderators)"],
  ["bans", "", "list the bans in force (moderators)"],
  ["mute", "NAME [duration]", "silence NAME in this room (its operators, moderators)"],
  ["unmute", "NAME", "let NAME speak in this room again"],
  ["invite", "NAME", "invite NAME to this invite-only room"],
  ["room", "invite-only on|off", "make this room invite-only, or open it again"],
  ["stats", "", "the server's figures (moderators)"],
];

// The terminal client's account commands, which ask for passwords on a terminal: they
// get a clear answer instead of "unknown command".
const TERMINAL_ONLY = new Set(["password", "account"]);

// What the terminal client asks before /history forget (securechat/ui/linemode.py).
const FORGET_QUESTION = "Erase every message you ever sent, in every room and conversation? This cannot be undone.";
const DURATION = /^\d+[smhdw]$/;
const ADDRESS = /[.:\/]/; // a name never has these; an address or network always has one

const USER = /^[A-Za-z0-9_-]{1,32}$/;
const ROOM = /^#[A-Za-z0-9_-]{1,32}$/;

export class UsageError extends Error {
  constructor(text, code = "usage") {
    super(text);
    this.code = code;
  }
}

function usage(name) {
  const entry = COMMANDS.find((c) => c[0] === name);
  return new UsageError(`usage: /${name}${entry[1] ? " " + entry[1] : ""}`);
}

/** The server's text rules, checked before anything is sent. */
export function checkText(text) {
  if (text.length === 0) throw new UsageError("empty message: type some text", "empty");
  const length = [...text].length;
  if (length > MAX_TEXT) throw new UsageError(`message is ${length} characters; the limit is ${MAX_TEXT}. Nothing was sent`, "too_long");
  const bad = text.match(CONTROL);
  if (bad) {
    const cp = bad[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
    throw new UsageError(`the message contains the control character U+${cp}; nothing was sent`, "bad_text");
  }
  return text;
}

/**
 * Run one line typed by the user. `app` supplies the actions (see app.js);
 * throws UsageError for anything refused locally, and sends nothing then.
 */
export function runLine(line, app) {
  if (!line.trim()) return;
  if (!line.startsWith("/") || line.startsWith("//")) {
    return app.say(checkText(line.startsWith("//") ? line.slice(1) : line));
  }
  const match = line.match(/^\/(\S+)\s*(.*)$/su);
  const name = match[1].toLowerCase();
  const rest = match[2];
  const args = rest.split(/\s+/u).filter(Boolean);
  const handler = HANDLERS[name];
  if (!handler && TERMINAL_ONLY.has(name)) {
    throw new UsageError(`/${name} is not in the web client yet: use securechat-client for it`, "unknown_command");
  }
  if (!handler) throw new UsageError(`unknown command /${name}: /help lists the commands`, "unknown_command");
  return handler(app, args, rest, name);
}

function needRoom(app) {
  const buffer = app.model.currentBuffer;
  if (buffer.kind !== "room") throw new UsageError("you are not in a room here: /join #room first", "no_room");
  return buffer.name;
}

function roomArg(app, args, name) {
  if (args.length > 1) throw usage(name);
  if (!args.length) return needRoom(app);
  if (!ROOM.test(args[0])) throw new UsageError(`'${args[0]}' is not a valid room name: use # and 1-32 letters, digits, '_' or '-'`, "invalid_room");
  return args[0];
}

function userArg(name, value) {
  if (!value) throw usage(name);
  if (!USER.test(value)) throw new UsageError(`'${value}' is not a valid name: use 1-32 letters, digits, '_' or '-'`, "invalid_name");
  return value;
}

function transferArg(name, args) {
  if (args.length !== 1 || !/^\d{1,16}$/.test(args[0])) throw usage(name);
  return Number(args[0]);
}

function needFeature(app, feature, command) {
  if (!app.conn.features.has(feature)) throw new UsageError(`this server does not support /${command}`, "unknown_command");
}

function withReason(fields, words) {
  if (words.length) fields.reason = checkText(words.join(" "));
  return fields;
}

const HANDLERS = {
  kick(app, args) {
    const fields = { type: "kick" };
    if (args[0]?.startsWith("#")) fields.room = roomArg(app, [args.shift()], "kick");
    fields.user = userArg("kick", args.shift());
    app.request(withReason(fields, args));
  },
  ban(app, args) {
    let fields;
    if (args[0] === "--ip") {
      if (!args[1] || !ADDRESS.test(args[1])) throw usage("ban");
      fields = { ip: args[1] };
      args = args.slice(2);
    } else {
      fields = { user: userArg("ban", args.shift()) };
    }
    if (args.length && DURATION.test(args[0])) fields.duration = args.shift();
    app.request({ type: "ban", ...withReason(fields, args) });
  },
  unban(app, args) {
    if (args.length !== 1) throw usage("unban");
    app.request(ADDRESS.test(args[0]) ? { type: "unban", ip: args[0] } : { type: "unban", user: userArg("unban", args[0]) });
  },
  bans(app, args) {
    if (args.length) throw usage("bans");
    app.request({ type: "bans" });
  },
  stats(app, args) {
    if (args.length) throw usage("stats");
    app.request({ type: "stats" });
  },
  mute(app, args) {
    if (args.length < 1 || args.length > 2 || (args[1] && !DURATION.test(args[1]))) throw usage("mute");
    const fields = { type: "mute", room: needRoom(app), user: userArg("mute", args[0]) };
    if (args[1]) fields.duration = args[1];
    app.request(fields);
  },
  unmute(app, args) {
    if (args.length !== 1) throw usage("unmute");
    app.request({ type: "mute", room: needRoom(app), user: userArg("unmute", args[0]), unmute: true });
  },
  invite(app, args) {
    if (args.length !== 1) throw usage("invite");
    app.request({ type: "room_invite", room: needRoom(app), user: userArg("invite", args[0]) });
  },
  room(app, args) {
    if (args.length !== 2 || args[0].toLowerCase() !== "invite-only" || !/^(on|off)$/i.test(args[1])) throw usage("room");
    app.request({ type: "room_mode", room: needRoom(app), invite_only: args[1].toLowerCase() === "on" });
  },
  j(app, args, rest) {
    return HANDLERS.join(app, args, rest);
  },
  names(app, args, rest) {
    return HANDLERS.who(app, args, rest);
  },
  me(app, args, rest) {
    if (!rest) throw usage("me");
    needFeature(app, "action", "me");
    app.say(checkText(rest), { action: true });
  },
  away(app, args, rest) {
    needFeature(app, "away", "away");
    app.request(rest ? { type: "away", text: checkText(rest) } : { type: "away" });
  },
  list(app, args) {
    if (args.length) throw usage("list");
    needFeature(app, "online", "list");
    app.who(null, true);
  },
  close(app) {
    const buffer = app.model.currentBuffer;
    if (buffer.kind === "room") return app.request({ type: "part", room: buffer.name });
    if (buffer.kind === "dm") return app.model.dropDm(buffer.name);
    throw new UsageError("the server buffer cannot be closed");
  },
  clear(app) {
    app.model.clear(app.model.current);
  },
  join(app, args) {
    if (args.length !== 1) throw usage("join");
    const room = args[0].startsWith("#") ? args[0] : "#" + args[0];
    if (!ROOM.test(room)) throw new UsageError(`'${args[0]}' is not a valid room name: use # and 1-32 letters, digits, '_' or '-'`, "invalid_room");
    app.join(room);
  },
  part(app, args) {
    app.request({ type: "part", room: roomArg(app, args, "part") });
  },
  msg(app, args, rest) {
    const to = userArg("msg", args[0]);
    const text = rest.replace(/^\S+\s?/u, "");
    app.openDm(to);
    if (text) app.sendPrivate(to, checkText(text));
  },
  query(app, args, rest) {
    return HANDLERS.msg(app, args, rest);
  },
  nick(app, args) {
    if (args.length !== 1) throw usage("nick");
    app.request({ type: "nick", name: userArg("nick", args[0]) });
  },
  topic(app, args, rest) {
    const room = needRoom(app);
    // In the terminal client these lock the topic: never set the topic to "lock" instead.
    // "/topic lock" locks the topic, as in the terminal client: it never sets it to "lock".
    const mode = rest.trim().toLowerCase();
    if (mode === "lock" || mode === "unlock") return app.request({ type: "room_mode", room, topic_locked: mode === "lock" });
    app.request(rest ? { type: "topic", room, text: checkText(rest) } : { type: "topic", room });
  },
  who(app, args) {
    app.who(roomArg(app, args, "who"), true);
  },
  rooms(app, args) {
    if (args.length) throw usage("rooms");
    app.request({ type: "rooms" });
  },
  search(app, args, rest) {
    if (!args.length) throw usage("search");
    app.search(rest.trim());
  },
  history(app, args, rest) {
    const sub = (args[0] || "").toLowerCase();
    switch (sub) {
      case "on":
      case "off":
        return app.request({ type: "history_mode", keep: sub === "on" });
      case "status":
        return app.request({ type: "history_status" });
      case "forget":
        // Erasing everything one ever sent cannot be undone: ask, as the terminal client does.
        if (!window.confirm(FORGET_QUESTION)) return app.notice("nothing erased");
        return app.request({ type: "forget" });
      case "export":
        return app.exportHistory();
      case "unread":
        return app.request({ type: "unread" });
      case "search":
        if (args.length < 2) throw new UsageError("usage: /history search WORDS");
        return app.search(rest.trim().replace(/^\S+\s+/u, ""));
      case "":
        return app.loadOlder(app.model.currentBuffer);
      default:
        throw usage("history");
    }
  },
  nolog(app, args, rest) {
    if (!rest) throw usage("nolog");
    app.say(checkText(rest), { nolog: true });
  },
  sendfile(app, args) {
    if (args.length !== 1) throw new UsageError("usage: /sendfile NAME (the browser then asks for the file)");
    app.pickFile(userArg("sendfile", args[0]));
  },
  accept(app, args) {
    const id = app.transfers.resolve(transferArg("accept", args));
    if (!app.transfers.accept(id)) throw new UsageError(`there is no file offer ${args[0]}: /files lists them`, "no_such_transfer");
  },
  reject(app, args) {
    const id = app.transfers.resolve(transferArg("reject", args));
    if (!app.transfers.reject(id)) throw new UsageError(`there is no file offer ${args[0]}: /files lists them`, "no_such_transfer");
  },
  cancel(app, args) {
    const id = app.transfers.resolve(transferArg("cancel", args));
    if (!app.transfers.cancel(id)) throw new UsageError(`there is no transfer ${args[0]} under way: /files lists them`, "no_such_transfer");
  },
  files(app) {
    const list = app.transfers.list();
    if (!list.length) return app.notice("no file transfers");
    for (const t of list) {
      const way = t.dir === "in" ? `from ${t.peer}` : `to ${t.peer}`;
      app.notice(`#${shortNumber(t.id)} ${t.name} ${way}: ${t.state}${t.reason ? " (" + t.reason + ")" : ""}`);
    }
  },
  sessions(app, args) {
    if (!args.length) return app.request({ type: "sessions" });
    if (args.length === 2 && args[0].toLowerCase() === "close" && /^\d+$/.test(args[1])) {
      return app.request({ type: "session_close", session: Number(args[1]) });
    }
    throw usage("sessions");
  },
  time(app) {
    app.request({ type: "time" });
  },
  help(app, args) {
    if (args.length) {
      const want = args[0].replace(/^\//, "").toLowerCase();
      const entry = COMMANDS.find((c) => c[0] === want);
      if (!entry) throw new UsageError(`unknown command /${want}: /help lists the commands`, "unknown_command");
      return app.notice(`/${entry[0]}${entry[1] ? " " + entry[1] : ""}  ${entry[2]}`, "help");
    }
    app.notice("Commands (a line without / is a message; // sends a line that starts with /):", "help");
    for (const [cmd, argsText, text] of COMMANDS) app.notice(`/${cmd}${argsText ? " " + argsText : ""}  ${text}`, "help");
  },
  quit(app, args, rest) {
    app.quit(rest);
  },
};
