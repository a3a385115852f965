// The message view: one conversation's messages with day separators, grouping of
// consecutive messages by the same sender, timestamps and nick colours. Every
// remote string goes through text.js (text nodes only).

import { renderText, textElement, nickClass } from "../text.js";
import { renderFileCard } from "./filecard.js";

const GROUP_GAP = 5 * 60 * 1000; // consecutive messages within 5 minutes share a header
const NEAR_BOTTOM = 40; // px: "at the bottom" for sticking to new messages

const pad = (n) => String(n).padStart(2, "0");
const hhmm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
const dayKey = (d) => `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;

function dayLabel(d) {
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (dayKey(d) === dayKey(today)) return "Today";
  if (dayKey(d) === dayKey(yesterday)) return "Yesterday";
  return d.toLocaleDateString(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

function fullDate(d) {
  return d.toLocaleString(undefined, { dateStyle: "full", timeStyle: "medium" });
}

export class MessageView {
  constructor(scroller, list, app) {
    this.scroller = scroller;
    this.list = list;
    this.app = app;
    this.shownKey = null;
    this.firstOrder = null;
  }

  get atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM;
  }

  /** Draw `buffer` whole, keeping the reader's place (or the bottom). */
  render(buffer) {
    const s = this.scroller;
    const switched = this.shownKey !== buffer.key;
    const stick = switched || this.atBottom;
    const fromBottom = s.scrollHeight - s.scrollTop;
    const oldTop = s.scrollTop;
    const prepended = !switched && buffer.items.length && buffer.items[0].order !== this.firstOrder;

    this.list.replaceChildren(...this.build(buffer));
    this.shownKey = buffer.key;
    this.firstOrder = buffer.items.length ? buffer.items[0].order : null;

    if (stick) s.scrollTop = s.scrollHeight;
    else if (prepended) s.scrollTop = s.scrollHeight - fromBottom; // older rows above: stay put
    else s.scrollTop = oldTop;
  }

  build(buffer) {
    const me = this.app.model.me;
    const nodes = [];
    let lastDay = null;
    let prev = null;
    if (buffer.kind !== "server") nodes.push(this.historyHead(buffer));
    for (const item of buffer.items) {
      const day = dayKey(item.ts);
      if (day !== lastDay) {
        const sep = document.createElement("li");
        sep.className = "day-separator";
        sep.setAttribute("role", "separator");
        const label = document.createElement("span");
        label.textContent = dayLabel(item.ts);
        sep.append(label);
        nodes.push(sep);
        lastDay = day;
        prev = null;
      }
      if (item.kind === "msg" && item.id === buffer.markerId) {
        const marker = document.createElement("li");
        marker.className = "new-marker";
        marker.dataset.testid = "new-marker";
        marker.textContent = "New messages";
        nodes.push(marker);
        prev = null;
      }
      if (item.kind === "msg") {
        const grouped = prev && prev.kind === "msg" && !prev.action && !item.action && prev.from === item.from && item.ts - prev.ts < GROUP_GAP;
        nodes.push(this.message(item, grouped, me));
      } else if (item.kind === "file") {
        nodes.push(renderFileCard(item.transfer, this.app));
      } else {
        nodes.push(this.notice(item));
      }
      prev = item;
    }
    return nodes;
  }

  historyHead(buffer) {
    const li = document.createElement("li");
    li.className = "history-head";
    li.dataset.testid = "history-head";
    if (buffer.loading) li.textContent = "Loading older messages…";
    else if (!buffer.hasMore) li.textContent = buffer.kind === "room" ? `This is the beginning of ${buffer.name}.` : `This is the beginning of your conversation with ${buffer.name}.`;
    else li.textContent = "Scroll up for older messages";
    return li;
  }

  message(item, grouped, me) {
    const li = document.createElement("li");
    li.className = "msg" + (grouped ? " grouped" : "");
    li.dataset.id = String(item.id);
    li.dataset.testid = "message";
    if (me && item.from.toLowerCase() === me.toLowerCase()) li.classList.add("own");
    const time = document.createElement("time");
    time.className = "msg-time";
    time.dateTime = item.ts.toISOString();
    time.title = fullDate(item.ts);
    time.textContent = hhmm(item.ts);
    const body = document.createElement("div");
    body.className = "msg-body";
    if (item.action) {
      // An action reads as a sentence: "* alice waves".
      li.classList.add("action", "grouped");
      time.classList.add("shown");
    } else if (!grouped) {
      const head = document.createElement("div");
      head.className = "msg-head";
      head.append(textElement("span", `msg-from ${nickClass(item.from)}`, item.from));
      const headTime = time.cloneNode(true);
      headTime.className = "msg-head-time";
      head.append(headTime);
      body.append(head);
    }
    const text = document.createElement("div");
    text.className = "msg-text";
    text.dataset.testid = "message-text";
    if (item.action) text.append("* ", textElement("span", `msg-from ${nickClass(item.from)}`, item.from), " ");
    renderText(text, item.text, { me, links: true });
    if (text.querySelector("mark.mention") && !li.classList.contains("own")) li.classList.add("mentioned");
    if (!item.stored) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "not stored";
      tag.title = "sent with /nolog or with history off: the server did not keep it";
      text.append(" ", tag);
    }
    body.append(text);
    li.append(time, body);
    return li;
  }

  notice(item) {
    const li = document.createElement("li");
    li.className = `notice ${item.cls || ""}`;
    li.dataset.testid = "notice";
    if (item.result) return this.searchResult(li, item.result);
    const time = document.createElement("time");
    time.className = "msg-time";
    time.title = fullDate(item.ts);
    time.textContent = hhmm(item.ts);
    li.append(time, textElement("span", "notice-text", item.text, { links: true }));
    return li;
  }

  searchResult(li, result) {
    li.classList.add("search-hit");
    li.append(textElement("span", "hit-where", result.where), " ");
    li.append(textElement("span", `msg-from ${nickClass(result.from)}`, result.from), " ");
    const text = document.createElement("span");
    renderText(text, result.text, { me: this.app.model.me, links: true });
    li.append(text);
    return li;
  }
}
