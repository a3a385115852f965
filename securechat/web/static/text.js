// Safe rendering of remote text: every string from the network goes through here.
//
// Nothing is ever parsed as HTML: we build text nodes and elements ourselves. The
// rules for invisible characters are those of securechat/wire/sanitize.py, so the
// browser shows exactly what the terminal client shows: C0 controls and DEL in caret
// notation (^[, ^?), C1 controls and every format character (Cf, Zl, Zp) except
// U+200D ZERO WIDTH JOINER (it only glues emoji) as <U+XXXX>.

const UNSAFE = /[\u0000-\u001f\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/gu;
const ZWJ = "\u200d";
// http(s) only: any other scheme (javascript:, data:, vbscript:) stays plain text.
const LINK = /\bhttps?:\/\/[^\s<>"]+/giu;
// Trailing punctuation usually ends the sentence, not the URL.
const TRAILING = /[.,;:!?)\]}'"]+$/u;

/** The visible form of one unsafe character, as sanitize.py writes it. */
export function visibleChar(ch) {
  const cp = ch.codePointAt(0);
  if (cp < 0x20) return "^" + String.fromCharCode(cp + 0x40);
  if (cp === 0x7f) return "^?";
  return `<U+${cp.toString(16).toUpperCase().padStart(4, "0")}>`;
}

/** `text` with every unsafe character replaced by its visible form (plain string). */
export function sanitize(text) {
  return String(text).replace(UNSAFE, (ch) => (ch === ZWJ ? ch : visibleChar(ch)));
}

// Append `text` to `parent`, unsafe characters as <span class="ctrl">.
function appendVisible(parent, text) {
  let last = 0;
  for (const match of text.matchAll(UNSAFE)) {
    if (match[0] === ZWJ) continue;
    if (match.index > last) parent.append(text.slice(last, match.index));
    const span = document.createElement("span");
    span.className = "ctrl";
    span.textContent = visibleChar(match[0]);
    span.title = "invisible or control character, shown for safety";
    parent.append(span);
    last = match.index + match[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** A regex finding `name` as a whole word, or null. Names are [A-Za-z0-9_-]. */
export function mentionPattern(name) {
  if (!name) return null;
  return new RegExp(`(?<![A-Za-z0-9_-])${escapeRegExp(name)}(?![A-Za-z0-9_-])`, "giu");
}

export function mentions(text, name) {
  const re = mentionPattern(name);
  return re ? re.test(String(text)) : false;
}

// Append plain text, marking mentions of `me`.
function appendWithMentions(parent, text, me) {
  const re = mentionPattern(me);
  if (!re) return appendVisible(parent, text);
  let last = 0;
  for (const match of text.matchAll(re)) {
    if (match.index > last) appendVisible(parent, text.slice(last, match.index));
    const mark = document.createElement("mark");
    mark.className = "mention";
    mark.textContent = match[0];
    parent.append(mark);
    last = match.index + match[0].length;
  }
  if (last < text.length) appendVisible(parent, text.slice(last));
}

/** A safe http(s) URL string from `candidate`, or null. */
export function safeUrl(candidate) {
  let url;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

/**
 * Append remote `text` to `parent`: links (http/https only) as <a>, mentions of
 * `me` as <mark>, invisible characters made visible. Only text nodes and elements
 * we create: never HTML.
 */
export function renderText(parent, text, { me = null, links = true } = {}) {
  text = String(text ?? "");
  if (!links) return appendWithMentions(parent, text, me);
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    let raw = match[0];
    const trail = raw.match(TRAILING);
    if (trail) raw = raw.slice(0, raw.length - trail[0].length);
    const href = safeUrl(raw);
    // A URL holding invisible characters could disguise its target: leave it as text.
    if (!href || /[\u0000-\u001f\u007f-\u009f\p{Cf}\p{Zl}\p{Zp}]/u.test(raw)) continue;
    if (match.index > last) appendWithMentions(parent, text.slice(last, match.index), me);
    const a = document.createElement("a");
    a.href = href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    a.textContent = raw;
    parent.append(a);
    last = match.index + raw.length;
  }
  if (last < text.length) appendWithMentions(parent, text.slice(last), me);
}

/** An element `tag` with class `cls` holding remote `text`, safely. */
export function textElement(tag, cls, text, options = { links: false }) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  renderText(el, text, options);
  return el;
}

// Windows refuses these names whatever the extension.
const RESERVED = /^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$/i;
const MAX_NAME = 200;

/**
 * A file name safe to offer as a download (protocol.md §16.9): the last path
 * component only, invisible and unsafe characters replaced, no leading dots or
 * dashes, not empty, length limited with the extension kept.
 */
export function safeFileName(name) {
  let base = String(name ?? "").split(/[/\\]/).pop();
  base = base.replace(UNSAFE, (ch) => (ch === ZWJ ? ch : "_"));
  base = base.replace(/[\p{Co}<>:"|?*]/gu, "_").replace(/^[.\-\s]+/u, "").replace(/[.\s]+$/u, "");
  if (!base || RESERVED.test(base)) base = "download" + (base ? "_" + base : "");
  if (base.length > MAX_NAME) {
    const dot = base.lastIndexOf(".");
    const ext = dot > 0 && base.length - dot <= 16 ? base.slice(dot) : "";
    base = base.slice(0, MAX_NAME - ext.length) + ext;
  }
  return base;
}

/** A byte count for people: 1.5 MB. */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A stable colour class for a nick: a small string hash picks one of 12 hues. */
export function nickClass(name) {
  let hash = 0;
  for (const ch of String(name).toLowerCase()) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `nick-c${hash % 12}`;
}
