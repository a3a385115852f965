// The client's model: conversations ("buffers"), their messages, unread counts and
// members. No DOM and no socket here; views subscribe to "change" events.
//
// Messages are kept in order of their server id and deduplicated by it, so a replay,
// a gap fill after a reconnect and a history page can arrive in any order and
// overlap: nothing is ever shown twice (protocol.md §15.8).

export const SERVER_KEY = "*server";

export function roomKey(room) {
  return String(room).toLowerCase();
}

export function dmKey(user) {
  return "@" + String(user).toLowerCase();
}

export function sameName(a, b) {
  return String(a).toLowerCase() === String(b).toLowerCase();
}

export class Buffer {
  constructor(key, kind, name) {
    this.key = key;
    this.kind = kind; // "room", "dm" or "server"
    this.name = name;
    this.topic = "";
    this.items = []; // sorted by .order: messages by id, notices just after the newest id
    this.ids = new Set();
    this.unread = 0;
    this.highlight = 0; // mentions of you, private messages and file offers
    this.members = new Map(); // folded name -> spelling
    this.memberCount = 0;
    this.joined = kind !== "room";
    this.newestId = 0; // the largest message id shown here (resume point)
    this.oldestId = 0; // the smallest, for paging back with `before`
    this.hasMore = kind !== "server"; // older history may exist on the server
    this.loading = false;
    this.readSent = 0; // the newest id we told the server we have read
    this.markerId = null; // the first message that was unread when we came here
    this.away = new Map(); // folded name -> away text, from the last `who` answer
  }

  /** Insert `item`, keeping order; false if it is a message we already have. */
  insert(item) {
    if (item.id !== undefined) {
      if (this.ids.has(item.id)) return false;
      this.ids.add(item.id);
      this.newestId = Math.max(this.newestId, item.id);
      this.oldestId = this.oldestId ? Math.min(this.oldestId, item.id) : item.id;
    }
    const items = this.items;
    let lo = 0;
    let hi = items.length;
    if (hi === 0 || items[hi - 1].order <= item.order) {
      lo = hi; // the usual case: appended at the end
    } else {
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (items[mid].order <= item.order) lo = mid + 1;
        else hi = mid;
      }
    }
    items.splice(lo, 0, item);
    return true;
  }

  setMembers(names) {
    this.members = new Map(names.map((n) => [n.toLowerCase(), n]));
  }

  addMember(name) {
    this.members.set(name.toLowerCase(), name);
  }

  removeMember(name) {
    this.members.delete(String(name).toLowerCase());
  }

  sortedMembers() {
    return [...this.members.values()].sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  }
}

export class Model extends EventTarget {
  constructor() {
    super();
    this.me = null;
    this.buffers = new Map();
    this.current = SERVER_KEY;
    this.maxId = 0; // the largest message id seen anywhere (ids are global)
    this.noticeSeq = 0;
    this.server = this.buffers.set(SERVER_KEY, new Buffer(SERVER_KEY, "server", "server")).get(SERVER_KEY);
  }

  changed(what, key = null) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, key } }));
  }

  room(name) {
    const key = roomKey(name);
    let buffer = this.buffers.get(key);
    if (!buffer) {
      buffer = new Buffer(key, "room", name);
      this.buffers.set(key, buffer);
      this.changed("list");
    }
    return buffer;
  }

  dm(user) {
    const key = dmKey(user);
    let buffer = this.buffers.get(key);
    if (!buffer) {
      buffer = new Buffer(key, "dm", user);
      this.buffers.set(key, buffer);
      this.changed("list");
    }
    return buffer;
  }

  get currentBuffer() {
    return this.buffers.get(this.current) || this.server;
  }

  rooms() {
    return [...this.buffers.values()].filter((b) => b.kind === "room" && b.joined).sort(byName);
  }

  dms() {
    return [...this.buffers.values()].filter((b) => b.kind === "dm").sort(byName);
  }

  /** The buffer a `message` or `private` frame belongs to. */
  bufferFor(frame) {
    if (frame.type === "message") return this.room(frame.room);
    const other = this.me && sameName(frame.from, this.me) ? frame.to : frame.from;
    return this.dm(other);
  }

  /** Add a chat message; returns its buffer, or null if it was already shown. */
  addMessage(frame) {
    const buffer = this.bufferFor(frame);
    const item = {
      kind: "msg",
      id: frame.id,
      order: frame.id,
      ts: new Date(frame.ts),
      from: frame.from,
      text: frame.text,
      stored: frame.stored !== false,
      history: frame.history === true,
      action: frame.action === true, // "/me waves": shown as "* alice waves"
    };
    if (!buffer.insert(item)) return null;
    this.maxId = Math.max(this.maxId, frame.id);
    this.changed("items", buffer.key);
    return buffer;
  }

  /** A local line (event, answer, error) in `key`'s buffer, after what is there now. */
  addNotice(key, text, cls = "notice", extra = {}) {
    const buffer = this.buffers.get(key) || this.currentBuffer;
    this.noticeSeq += 1;
    // Notices sit after the newest message seen anywhere, so a later message (a
    // larger id) sorts after them; the tiny step keeps notices in arrival order.
    const item = { kind: "notice", order: this.maxId + this.noticeSeq * 1e-7, ts: new Date(), text, cls, ...extra };
    buffer.insert(item);
    this.changed("items", buffer.key);
    return item;
  }

  select(key) {
    if (!this.buffers.has(key)) return;
    const previous = this.currentBuffer;
    if (previous.key !== key) previous.markerId = null; // seen now: no marker next time
    this.current = key;
    const buffer = this.buffers.get(key);
    buffer.markerId = buffer.unread ? this.firstUnread(buffer) : null;
    buffer.unread = 0;
    buffer.highlight = 0;
    this.changed("select", key);
  }

  /** The id of the oldest of the last `unread` messages of others: where "new" starts. */
  firstUnread(buffer) {
    let left = buffer.unread;
    for (let i = buffer.items.length - 1; i >= 0; i -= 1) {
      const item = buffer.items[i];
      if (item.kind !== "msg" || (this.me && sameName(item.from, this.me))) continue;
      left -= 1;
      if (left === 0) return item.id;
    }
    return null;
  }

  /** Forget a room after `parted`; move to another buffer if it was current. */
  dropRoom(name) {
    const key = roomKey(name);
    const buffer = this.buffers.get(key);
    if (!buffer) return;
    buffer.joined = false;
    this.buffers.delete(key);
    if (this.current === key) this.current = (this.rooms()[0] || this.server).key;
    this.changed("list");
    this.changed("select", this.current);
  }

  /** Clear a buffer's screen: what was shown stays known (no replay brings it back). */
  clear(key) {
    const buffer = this.buffers.get(key);
    if (!buffer) return;
    buffer.items = [];
    buffer.hasMore = false;
    buffer.markerId = null;
    this.changed("items", key);
  }

  /** Close a private conversation's buffer (it comes back with the next message). */
  dropDm(name) {
    this.buffers.delete(dmKey(name));
    if (this.current === dmKey(name)) this.current = (this.rooms()[0] || this.server).key;
    this.changed("list");
    this.changed("select", this.current);
  }

  /** Someone (maybe us) changed name: members, conversation buffers, our own name. */
  rename(oldName, newName) {
    if (this.me && sameName(oldName, this.me)) this.me = newName;
    for (const buffer of this.buffers.values()) {
      if (buffer.members.has(oldName.toLowerCase())) {
        buffer.removeMember(oldName);
        buffer.addMember(newName);
      }
    }
    const old = this.buffers.get(dmKey(oldName));
    if (old && !this.buffers.has(dmKey(newName))) {
      this.buffers.delete(old.key);
      old.key = dmKey(newName);
      old.name = newName;
      this.buffers.set(old.key, old);
      if (this.current === dmKey(oldName)) this.current = old.key;
    }
    this.changed("list");
    this.changed("select", this.current);
  }

  /** Resume points for `login.since`: per joined room, the newest id shown there. */
  resumePoints() {
    const since = {};
    for (const buffer of this.rooms()) {
      // A room where we showed nothing yet resumes from the newest id seen anywhere.
      const id = buffer.newestId || this.maxId;
      if (id > 0) since[buffer.name] = id;
    }
    return since;
  }
}

function byName(a, b) {
  return a.name.toLowerCase().localeCompare(b.name.toLowerCase());
}
