// What tokens are made of: scopes and the claims they bring, the signing key
// (published at the key set endpoint), RS256 JWTs and their lifetimes.

import * as crypto from 'node:crypto';
import { TTL } from './cli.mjs';
import { USER } from './state.mjs';
import { now, rand } from './ids.mjs';

export function splitScope(value, separators = /\s+/) {
  return (value ?? '').split(separators).filter(Boolean);
}

export const hasScope = (grant, scope) => grant.scopes.includes(scope);

/** `value` alone when there is one, the array otherwise (a JWT's aud). */
export const oneOrMany = (values) => (values.length === 1 ? values[0] : values);

/** The name and email claims OpenID Connect's profile and email scopes ask for. */
export function profileClaims(grant) {
  return {
    ...(hasScope(grant, 'profile') ? { name: USER.name } : {}),
    ...(hasScope(grant, 'email') ? { email: USER.email, email_verified: true } : {}),
  };
}

// ---------------------------------------------------------------------------
// Signing key and JWTs
// ---------------------------------------------------------------------------

// The key leaves generateKeyPairSync as PKCS#8 and is re-imported before the
// JWK export: exporting the generated KeyObject itself can deadlock Node 20
// (see generateSigningKey in ../idp.mjs).
const PRIVATE_KEY = crypto.createPrivateKey(crypto.generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
}).privateKey);
const KID = `emu-${rand(9)}`;
export const PUBLIC_JWK = { ...crypto.createPublicKey(PRIVATE_KEY).export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' };

export const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * An RS256 JWT. Claims and header members that are undefined are left out
 * (JSON.stringify drops them), which is how the profiles write optional claims.
 * `signedHeader`, when given, is what the signature covers instead of the
 * header sent (Microsoft Graph's tokens, see entra).
 */
export function signJwt(claims, header = {}, signedHeader = undefined) {
  const sent = { typ: 'JWT', alg: 'RS256', kid: KID, ...header };
  const covered = signedHeader ? { ...sent, ...signedHeader } : sent;
  const payload = b64json(claims);
  const signature = crypto.sign('sha256', Buffer.from(`${b64json(covered)}.${payload}`), PRIVATE_KEY);
  return `${b64json(sent)}.${payload}.${signature.toString('base64url')}`;
}

/** iat/exp (and optionally nbf) for a token issued now. */
export function lifetime(ttl = TTL, { nbf = false } = {}) {
  const t = now();
  return { iat: t, ...(nbf ? { nbf: t } : {}), exp: t + ttl };
}
