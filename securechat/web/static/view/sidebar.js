// The sidebar: the server buffer, rooms and private conversations, each with its
// unread count; mentions and private messages get a highlighted badge.

import { textElement } from "../text.js";

function section(title) {
  const h = document.createElement("h2");
  h.className = "section-title";
  h.textContent = title;
  return h;
}

function item(buffer, current, label, onSelect) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "buffer-item" + (buffer.key === current ? " current" : "") + (buffer.unread ? " unread" : "");
  b.dataset.testid = "buffer-item";
  b.dataset.key = buffer.key;
  b.dataset.name = buffer.name;
  if (buffer.key === current) b.setAttribute("aria-current", "page");
  const sigil = document.createElement("span");
  sigil.className = "sigil";
  sigil.textContent = buffer.kind === "room" ? "#" : buffer.kind === "dm" ? "@" : "⌂";
  b.append(sigil, textElement("span", "buffer-name", label));
  if (buffer.unread || buffer.highlight) {
    const badge = document.createElement("span");
    badge.className = "badge" + (buffer.highlight ? " mention" : "");
    badge.dataset.testid = "unread-badge";
    badge.textContent = String(buffer.highlight || buffer.unread);
    badge.title = buffer.highlight ? `${buffer.highlight} for you, ${buffer.unread} unread` : `${buffer.unread} unread`;
    b.append(badge);
  }
  b.addEventListener("click", () => onSelect(buffer.key));
  return b;
}

export function renderSidebar(list, model, onSelect) {
  const nodes = [item(model.server, model.current, "Server", onSelect)];
  nodes.push(section("Rooms"));
  for (const buffer of model.rooms()) nodes.push(item(buffer, model.current, buffer.name.slice(1), onSelect));
  const dms = model.dms();
  if (dms.length) {
    nodes.push(section("Direct messages"));
    for (const buffer of dms) nodes.push(item(buffer, model.current, buffer.name, onSelect));
  }
  list.replaceChildren(...nodes);
}
