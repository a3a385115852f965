// The right-hand panel: the current room's members, or search results.

import { textElement, renderText, nickClass, sanitize } from "../text.js";

export function renderMembers(panel, buffer, me, onOpen) {
  const head = document.createElement("h2");
  head.className = "panel-title";
  const names = buffer.kind === "room" ? buffer.sortedMembers() : buffer.kind === "dm" ? [me, buffer.name] : [];
  head.textContent = buffer.kind === "room" ? `Members · ${names.length} online` : buffer.kind === "dm" ? "Conversation" : "Members";
  const ul = document.createElement("ul");
  ul.className = "member-list";
  ul.dataset.testid = "member-list";
  for (const name of names) {
    if (!name) continue;
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "member";
    b.dataset.testid = "member";
    const away = buffer.away.get(name.toLowerCase());
    b.title = (name === me ? "you" : `message ${name}`) + (away ? ` (away: ${sanitize(away)})` : "");
    if (away) b.classList.add("away");
    const dot = document.createElement("span");
    dot.className = `avatar ${nickClass(name)}`;
    dot.textContent = name.slice(0, 1).toUpperCase();
    b.append(dot, textElement("span", "member-name", name));
    if (name !== me) b.addEventListener("click", () => onOpen(name));
    li.append(b);
    ul.append(li);
  }
  panel.replaceChildren(head, ul);
}

const pad = (n) => String(n).padStart(2, "0");

function when(d) {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** `search`: {words, results: [frame], done, error}. */
export function renderSearch(panel, search, me, onJump, onClose) {
  const head = document.createElement("div");
  head.className = "panel-title search-title";
  const title = document.createElement("h2");
  title.textContent = "Search";
  const close = document.createElement("button");
  close.type = "button";
  close.className = "icon-button";
  close.textContent = "✕";
  close.title = "close search";
  close.addEventListener("click", onClose);
  head.append(title, close);
  const summary = textElement(
    "p",
    "search-summary",
    search.error ? search.error : search.done ? `${search.results.length} result${search.results.length === 1 ? "" : "s"} for “${search.words}”` : `searching for “${search.words}”…`,
  );
  summary.dataset.testid = "search-summary";
  const ul = document.createElement("ul");
  ul.className = "search-results";
  ul.dataset.testid = "search-results";
  for (const frame of search.results) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "search-result";
    b.dataset.testid = "search-result";
    const where = frame.type === "message" ? frame.room : frame.from === me ? `@${frame.to}` : `@${frame.from}`;
    const meta = document.createElement("div");
    meta.className = "result-meta";
    const d = new Date(frame.ts);
    const time = document.createElement("time");
    time.textContent = when(d);
    time.title = d.toLocaleString();
    meta.append(textElement("span", "result-where", where), textElement("span", `result-from ${nickClass(frame.from)}`, frame.from), time);
    const text = document.createElement("div");
    text.className = "result-text";
    renderText(text, frame.text, { me, links: false });
    b.append(meta, text);
    b.addEventListener("click", () => onJump(frame));
    li.append(b);
    ul.append(li);
  }
  panel.replaceChildren(head, summary, ul);
}
