// What an IdP profile holds, and what several profiles share: client
// authentication methods, refresh policies, access token and userinfo shapes.

import * as crypto from 'node:crypto';
import { USER } from '../state.mjs';
import { rand } from '../ids.mjs';
import { hasScope, signJwt, lifetime } from '../tokens.mjs';

// ---------------------------------------------------------------------------
// The IdPs
// ---------------------------------------------------------------------------
//
// Each IdP is a profile: what differs from the common behaviour (../endpoints.mjs).
//
//   issuer              `iss` of its ID tokens; the readiness line's issuer
//   routes()            path -> { METHOD: handler }, common endpoints included
//   tokenAuth           token endpoint client authentication methods taken
//   resource            what an RFC 8707 `resource` gets: 'refused' (with
//                       resourceRefusal), 'ignored' or 'honoured' (grant.resources)
//   refresh(grant)      whether a code exchange also yields a refresh token
//   rotation            on refresh: 'rotate' (new refresh token, the old one
//                       dies), 'reissue' (new one, the old one lives on) or
//                       'keep' (no new one in the answer, the old one lives on)
//   oidc                ID tokens for scope openid; idClaims(grant)/idHeader add
//   accessToken(grant)  -> { token, claims?, expiresIn? } (expiresIn null: never)
//   userinfo(record)    claims for a live access token, or throws HttpError
//   dcr                 { defaultAuth, publicOnly?, idPrefix? } when it registers clients
//   cimd                takes client ID metadata documents as client_id
//   onAuthorize(grant, query)   adjusts the grant, or returns an error to redirect with
//   tokenResponse(body, grant)  reshapes the token answer; sendToken/sendTokenError send it
//   scopeSeparators, noResponseType, grantTypeOptional, redirectUriOptionalAtToken,
//   jsonTokenBody, refreshAnyScope, refreshPrefix: GitHub's and Entra's liberties

export const BASIC_AND_POST = ['client_secret_basic', 'client_secret_post'];
export const always = () => true;
export const withOfflineAccess = (grant) => hasScope(grant, 'offline_access');

/** An opaque access token whose only meaning is its record in ACCESS. */
export const opaque = (prefix = '') => ({ token: prefix + rand(32) });

/** A JWT access token with these claims (plus iat/exp). */
export function jwtAccess(claims, header = undefined) {
  const full = { ...claims, ...lifetime(), jti: claims.jti ?? crypto.randomUUID() };
  return { token: signJwt(full, header), claims: full };
}

/** Userinfo claims of the usual shape, from the record's grant. */
export function standardUserinfo(record, sub = record.grant.sub) {
  return { sub, name: USER.name, email: USER.email, email_verified: true, preferred_username: USER.login };
}
