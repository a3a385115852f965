// A file offer or transfer as a card in its conversation: who offers what, the
// Accept/Reject buttons, a progress bar, and the outcome with a download link.

import { textElement, renderText, formatBytes, safeFileName } from "../text.js";
import { shortNumber } from "../files.js";

const LABELS = {
  hashing: "computing its SHA-256…",
  offering: "offering…",
  waiting: "waiting for an answer",
  offered: "wants to send you this file",
  sending: "sending",
  receiving: "receiving",
  finishing: "sent; waiting for the recipient's check",
  verifying: "checking the SHA-256…",
  done: "delivered: the recipient's SHA-256 check passed",
  saved: "received, SHA-256 verified",
  rejected: "declined",
  failed: "failed",
  corrupt: "SHA-256 MISMATCH: the file was corrupted or tampered with; it was thrown away",
};

function button(label, cls, testid, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = cls;
  b.textContent = label;
  b.dataset.testid = testid;
  b.addEventListener("click", onClick);
  return b;
}

export function progressOf(t) {
  const done = t.dir === "in" ? t.received || 0 : t.acked || 0;
  return t.size ? done / t.size : 1;
}

export function renderFileCard(t, app) {
  const li = document.createElement("li");
  li.className = `file-card state-${t.state} ${t.dir}`;
  li.dataset.testid = "file-card";
  if (t.id) li.dataset.transfer = String(t.id);

  const icon = document.createElement("div");
  icon.className = "file-icon";
  icon.textContent = t.dir === "in" ? "⬇" : "⬆";
  const info = document.createElement("div");
  info.className = "file-info";
  const name = textElement("div", "file-name", t.name);
  name.dataset.testid = "file-name";
  const meta = document.createElement("div");
  meta.className = "file-meta";
  const who = t.dir === "in" ? `from ${t.peer}` : `to ${t.peer}`;
  renderText(meta, `${formatBytes(t.size)} · ${who} · ${LABELS[t.state] || t.state}${t.id ? ` · #${shortNumber(t.id)}` : ""}`, { links: false });
  meta.dataset.testid = "file-status";
  info.append(name, meta);

  if (["sending", "receiving", "finishing"].includes(t.state)) {
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = progressOf(t);
    bar.className = "file-progress";
    bar.dataset.testid = "file-progress";
    info.append(bar);
  }
  if (t.reason && t.state !== "rejected") {
    const reason = textElement("div", "file-reason", t.reason);
    info.append(reason);
  }
  const actions = document.createElement("div");
  actions.className = "file-actions";
  if (t.dir === "in" && t.state === "offered") {
    actions.append(
      button("Accept", "primary small", "file-accept", () => app.transfers.accept(t.id)),
      button("Reject", "secondary small", "file-reject", () => app.transfers.reject(t.id)),
    );
  } else if (["waiting", "sending", "receiving", "finishing"].includes(t.state) && t.id) {
    actions.append(button("Cancel", "secondary small", "file-cancel", () => app.transfers.cancel(t.id)));
  } else if (t.state === "saved" && t.url) {
    const a = document.createElement("a");
    a.href = t.url; // a blob: URL we made from verified bytes
    a.download = safeFileName(t.name);
    a.className = "button primary small";
    a.dataset.testid = "file-download";
    a.textContent = "Download";
    a.title = `save as ${safeFileName(t.name)}`;
    actions.append(a);
  }
  li.append(icon, info, actions);
  t.el = li;
  return li;
}

/** Update the progress bar of a card in place (no re-render for every chunk). */
export function updateProgress(t) {
  const bar = t.el?.querySelector("progress");
  if (bar) bar.value = progressOf(t);
}
