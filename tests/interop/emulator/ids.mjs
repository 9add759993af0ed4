// The clock, random values and hashes, the ids made of them (letters and
// digits, GUID-shaped), and the constant-time comparison of secrets.

import * as crypto from 'node:crypto';
import { USER } from './state.mjs';

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

export const now = () => Math.floor(Date.now() / 1000);
export const rand = (bytes = 24) => crypto.randomBytes(bytes).toString('base64url');
export const sha256 = (value) => crypto.createHash('sha256').update(value).digest();

/** Letters and digits only, as GitHub's and Clerk's tokens and ids are. */
export function alnum(length) {
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (const byte of crypto.randomBytes(length * 2)) {
    if (byte < 248) out += chars[byte % 62]; // 248 = 4 * 62: no modulo bias
    if (out.length === length) break;
  }
  return out.length === length ? out : out + alnum(length - out.length);
}

/** A stable GUID-shaped id for (label, user): Entra object ids, Cognito subs. */
export function guidFor(label) {
  const h = sha256(`${label}\0${USER.sub}`).toString('hex');
  const variant = ((parseInt(h[16], 16) & 3) | 8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}
