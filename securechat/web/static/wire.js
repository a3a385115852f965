// The frame codec of docs/protocol.md §2, for WebSocket messages.
//
// Each binary WebSocket message carries one or more whole frames, encoded exactly
// as over TCP: an 8-byte prefix (version 1, flags 0, header_len u16 BE, body_len
// u32 BE), a UTF-8 JSON header, then a raw body. Pure functions: no socket here.

export const PROTOCOL_VERSION = 1;
export const MAX_HEADER = 16384; // bytes of JSON header, both directions
export const MAX_BODY = 65536; // bytes of body; only file_chunk carries one
const PREFIX = 8;

const encoder = new TextEncoder();
// fatal: invalid UTF-8 from the server is a protocol error, not U+FFFD soup.
const decoder = new TextDecoder("utf-8", { fatal: true });

export class ProtocolError extends Error {}

// The server treats null and absent alike but refuses forged fields even as
// null-free values, so we simply never send nulls (or undefined).
function compact(header) {
  const out = {};
  for (const [key, value] of Object.entries(header)) {
    if (value !== null && value !== undefined) out[key] = value;
  }
  return out;
}

/** One frame as bytes: `header` is an object with a `type`, `body` optional bytes. */
export function encodeFrame(header, body = null) {
  // JSON.stringify writes non-ASCII as raw characters and TextEncoder makes them
  // raw UTF-8, which keeps a 4,000-character message under the header limit.
  const json = encoder.encode(JSON.stringify(compact(header)));
  const bodyBytes = body ? new Uint8Array(body) : new Uint8Array(0);
  if (json.length === 0 || json.length > MAX_HEADER) {
    throw new ProtocolError(`header of ${json.length} bytes (limit ${MAX_HEADER})`);
  }
  if (bodyBytes.length > MAX_BODY) {
    throw new ProtocolError(`body of ${bodyBytes.length} bytes (limit ${MAX_BODY})`);
  }
  const out = new Uint8Array(PREFIX + json.length + bodyBytes.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, PROTOCOL_VERSION);
  view.setUint8(1, 0);
  view.setUint16(2, json.length);
  view.setUint32(4, bodyBytes.length);
  out.set(json, PREFIX);
  out.set(bodyBytes, PREFIX + json.length);
  return out;
}

/**
 * Every frame of one WebSocket message, as {header, body} (body: Uint8Array or null).
 * Throws ProtocolError for anything malformed, including a frame cut short: the
 * server never splits a frame across messages.
 */
export function decodeFrames(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes.length - pos < PREFIX) throw new ProtocolError("truncated frame prefix");
    const version = view.getUint8(pos);
    const flags = view.getUint8(pos + 1);
    const headerLen = view.getUint16(pos + 2);
    const bodyLen = view.getUint32(pos + 4);
    // Checked from the prefix alone, before looking at a byte of the rest.
    if (version !== PROTOCOL_VERSION) {
      throw new ProtocolError(`unsupported protocol version ${version} (this peer speaks 1)`);
    }
    if (flags !== 0) throw new ProtocolError(`reserved flags must be 0, got 0x${flags.toString(16).padStart(2, "0")}`);
    if (headerLen === 0) throw new ProtocolError("empty frame header");
    if (headerLen > MAX_HEADER) throw new ProtocolError(`header of ${headerLen} bytes (limit ${MAX_HEADER})`);
    if (bodyLen > MAX_BODY) throw new ProtocolError(`body of ${bodyLen} bytes (limit ${MAX_BODY})`);
    const end = pos + PREFIX + headerLen + bodyLen;
    if (end > bytes.length) throw new ProtocolError("frame split across messages");
    let header;
    try {
      header = JSON.parse(decoder.decode(bytes.subarray(pos + PREFIX, pos + PREFIX + headerLen)));
    } catch {
      throw new ProtocolError("frame header is not UTF-8 JSON");
    }
    if (header === null || typeof header !== "object" || Array.isArray(header)) {
      throw new ProtocolError("frame header is not a JSON object");
    }
    if (typeof header.type !== "string" || !/^[a-z][a-z_]{0,31}$/.test(header.type)) {
      throw new ProtocolError("frame header needs a 'type' of 1-32 lowercase letters or '_'");
    }
    // Copy the body out: the caller may keep it after this message is gone.
    const body = bodyLen ? bytes.slice(pos + PREFIX + headerLen, end) : null;
    frames.push({ header, body });
    pos = end;
  }
  return frames;
}
