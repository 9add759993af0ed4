// The endpoints every IdP has, in their common form: authorization, token
// (authorization code and refresh token grants), userinfo, key set and dynamic
// client registration, with the loopback redirect URI checks. The profile (P)
// adjusts them.

import * as crypto from 'node:crypto';
import { TTL } from './cli.mjs';
import { CLIENTS, USER, CODE_TTL, REFRESH_TTL, CODES, REFRESH, ACCESS, P } from './state.mjs';
import { now, rand, sha256, alnum } from './ids.mjs';
import { splitScope, hasScope, profileClaims, PUBLIC_JWK, signJwt, lifetime } from './tokens.mjs';
import {
  HttpError, oauthError, sendJson, redirectTo, readBody, contentType, jsonAsParams, bearerToken,
} from './http.mjs';
import { findClient, authenticateClient } from './clients.mjs';

// ---------------------------------------------------------------------------
// The common endpoints: authorization, token, userinfo, keys, registration
// ---------------------------------------------------------------------------

function parseUrl(value) {
  try {
    return new URL(value);
  } catch {
    return undefined;
  }
}

function isLoopbackRedirect(value) {
  const url = parseUrl(value);
  return Boolean(url && url.protocol === 'http:' && (url.hostname === '127.0.0.1' || url.hostname === 'localhost')
    && !url.hash && !url.username && !url.password);
}

/** Registered redirect URIs match exactly, except that a loopback port may differ (RFC 8252 section 7.3). */
function redirectAllowed(client, value) {
  if (!isLoopbackRedirect(value)) return false;
  if (!client.redirectUris) return true;
  const portless = (u) => {
    const url = parseUrl(u);
    if (!url) return undefined;
    url.port = '';
    return url.href;
  };
  return client.redirectUris.some((r) => portless(r) === portless(value));
}

/** Notes the parameters the tests want to assert on. null: not sent. */
function noteParams(entry, params) {
  entry.scope = params.get('scope');
  const resources = params.getAll('resource');
  entry.resource = resources.length ? resources : null;
  entry.audience = params.get('audience');
  entry.access_type = params.get('access_type');
  entry.prompt = params.get('prompt');
}

export async function authorize(req, res, url, entry) {
  const q = url.searchParams;
  noteParams(entry, q);
  const clientId = q.get('client_id');
  entry.client_id = clientId;
  // Errors about the client or the redirect URI are shown, never redirected
  // (RFC 6749 section 4.1.2.1).
  const client = await findClient(clientId);
  if (!client) throw oauthError(400, 'invalid_request', `unknown client_id ${JSON.stringify(clientId ?? '')}`);
  const redirectUri = q.get('redirect_uri');
  if (!redirectUri || !redirectAllowed(client, redirectUri)) {
    throw oauthError(400, 'invalid_request', client.redirectUris
      ? 'redirect_uri is not one of the client\'s registered loopback redirect URIs'
      : 'redirect_uri must be a loopback URL (http://127.0.0.1:PORT/… or http://localhost:PORT/…)');
  }
  const back = (params) => redirectTo(res, redirectUri, { ...params, state: q.get('state') });
  const backError = (error, description) => back({ error, error_description: description });

  if (!P.noResponseType && q.get('response_type') !== 'code') {
    return backError('unsupported_response_type', 'only response_type=code is supported');
  }
  const challenge = q.get('code_challenge');
  if (challenge !== null) {
    if (q.get('code_challenge_method') !== 'S256') return backError('invalid_request', 'code_challenge_method must be S256');
    if (!/^[A-Za-z0-9_-]{43}$/.test(challenge)) return backError('invalid_request', 'code_challenge is not a base64url SHA-256 hash');
  } else if (client.secret === null) {
    return backError('invalid_request', 'a public client must use PKCE (code_challenge)');
  }
  const resources = q.getAll('resource');
  if (resources.length && P.resource === 'refused') return back(P.resourceRefusal);
  if (P.resource === 'honoured' && resources.some((r) => !parseUrl(r) || parseUrl(r).hash)) {
    return backError('invalid_target', 'resource must be an absolute URI without a fragment (RFC 8707)');
  }

  const scopes = splitScope(q.get('scope'), P.scopeSeparators);
  const grant = {
    clientId: client.id,
    clientIsPublic: client.secret === null,
    sub: USER.sub,
    scopes,
    scope: scopes.join(' '),
    nonce: q.get('nonce') ?? undefined,
    resources: P.resource === 'honoured' ? resources : [],
    authTime: now(),
    sid: crypto.randomUUID(),
  };
  const refusal = P.onAuthorize?.(grant, q);
  if (refusal) return back(refusal);

  const code = rand(24);
  CODES.set(code, { grant, redirectUri, challenge, expiresAt: Date.now() + CODE_TTL * 1000 });
  return back({ code });
}

export async function token(req, res, url, entry) {
  const raw = await readBody(req);
  const type = contentType(req);
  let form;
  if (type === 'application/x-www-form-urlencoded') form = new URLSearchParams(raw);
  else if (type === 'application/json' && P.jsonTokenBody) form = jsonAsParams(raw);
  else throw oauthError(400, 'invalid_request', 'the token request must be application/x-www-form-urlencoded');
  noteParams(entry, form);
  let grantType = form.get('grant_type');
  if (grantType === null && P.grantTypeOptional && form.has('code')) grantType = 'authorization_code';
  entry.grant_type = grantType;

  const { client } = await authenticateClient(req, form, entry);
  if (form.getAll('resource').length && P.resource === 'refused') {
    const { error, error_description: description } = P.resourceRefusal;
    throw oauthError(400, error, description);
  }
  if (grantType === 'authorization_code') return redeemCode(req, res, form, client);
  if (grantType === 'refresh_token') return redeemRefreshToken(req, res, form, client);
  throw oauthError(400, 'unsupported_grant_type',
    `grant_type ${JSON.stringify(grantType ?? '')} is not supported`, 'unsupported_grant_type');
}

/** RFC 8707 at the token endpoint: a subset of the resources granted (any, if none were). */
function narrowResources(grant, form) {
  const asked = form.getAll('resource');
  if (P.resource !== 'honoured' || !asked.length) return grant;
  if (grant.resources.length && !asked.every((r) => grant.resources.includes(r))) {
    throw oauthError(400, 'invalid_target', 'resource was not part of the authorization');
  }
  return { ...grant, resources: asked };
}

function redeemCode(req, res, form, client) {
  const code = form.get('code');
  const stored = code ? CODES.get(code) : undefined;
  if (!stored || stored.expiresAt < Date.now()) {
    throw oauthError(400, 'invalid_grant', 'the code is unknown, used or expired', 'bad_verification_code');
  }
  CODES.delete(code); // single use
  if (stored.grant.clientId !== client.id) {
    throw oauthError(400, 'invalid_grant', 'the code was issued to another client', 'bad_verification_code');
  }
  const redirectUri = form.get('redirect_uri');
  if (redirectUri === null ? !P.redirectUriOptionalAtToken : redirectUri !== stored.redirectUri) {
    throw oauthError(400, 'invalid_grant', 'redirect_uri differs from the authorization request\'s', 'redirect_uri_mismatch');
  }
  const verifier = form.get('code_verifier');
  if (stored.challenge) {
    if (!verifier || !/^[A-Za-z0-9._~-]{43,128}$/.test(verifier)
        || sha256(verifier).toString('base64url') !== stored.challenge) {
      throw oauthError(400, 'invalid_grant', 'PKCE verification failed', 'bad_verification_code');
    }
  } else if (verifier !== null) {
    throw oauthError(400, 'invalid_grant', 'code_verifier without a code_challenge in the authorization request', 'bad_verification_code');
  }
  const grant = narrowResources(stored.grant, form);
  return issue(req, res, grant, { refresh: P.refresh(grant), refreshGrant: grant });
}

function redeemRefreshToken(req, res, form, client) {
  const value = form.get('refresh_token');
  const stored = value ? REFRESH.get(value) : undefined;
  if (!stored || stored.expiresAt < Date.now()) {
    throw oauthError(400, 'invalid_grant', 'the refresh token is unknown, rotated out or expired', 'bad_refresh_token');
  }
  if (stored.grant.clientId !== client.id) {
    throw oauthError(400, 'invalid_grant', 'the refresh token was issued to another client', 'bad_refresh_token');
  }
  let grant = stored.grant;
  const scope = form.get('scope');
  if (scope !== null) {
    const asked = splitScope(scope, P.scopeSeparators);
    if (!P.refreshAnyScope && !asked.every((s) => stored.grant.scopes.includes(s))) {
      throw oauthError(400, 'invalid_scope', 'scope exceeds the scope originally granted');
    }
    grant = { ...grant, scopes: asked, scope: asked.join(' ') };
  }
  grant = narrowResources(grant, form);
  if (P.rotation === 'rotate') REFRESH.delete(value);
  // The new refresh token keeps the original grant, so that a later refresh
  // may ask again for scopes this one narrowed away.
  return issue(req, res, grant, { refresh: P.rotation !== 'keep', refreshGrant: stored.grant });
}

function issue(req, res, grant, { refresh, refreshGrant }) {
  const minted = P.accessToken(grant);
  const ttl = minted.expiresIn === undefined ? TTL : minted.expiresIn; // null: never expires
  const issuedAt = Date.now();
  ACCESS.set(minted.token, {
    grant,
    claims: minted.claims,
    issuedAt,
    expiresAt: ttl === null ? Infinity : issuedAt + ttl * 1000,
  });
  const body = {
    access_token: minted.token,
    token_type: 'Bearer',
    expires_in: ttl ?? undefined,
    scope: grant.scope || undefined,
  };
  if (P.oidc && hasScope(grant, 'openid')) body.id_token = idToken(grant);
  if (refresh) {
    const value = (P.refreshPrefix ?? '') + (P.refreshPrefix ? alnum(76) : rand(32));
    REFRESH.set(value, { grant: refreshGrant, expiresAt: Date.now() + REFRESH_TTL * 1000 });
    body.refresh_token = value;
  }
  const shaped = P.tokenResponse ? P.tokenResponse(body, grant) : body;
  if (P.sendToken) return P.sendToken(req, res, shaped);
  return sendJson(res, 200, shaped, { pragma: 'no-cache' });
}

function idToken(grant) {
  return signJwt({
    iss: P.issuer,
    sub: grant.sub,
    aud: grant.clientId,
    ...lifetime(),
    auth_time: grant.authTime,
    nonce: grant.nonce,
    ...profileClaims(grant),
    ...P.idClaims?.(grant),
  }, P.idHeader);
}

/** The record of a live access token presented as a bearer token, or throws 401. */
function liveAccessToken(req, schemes) {
  const value = bearerToken(req, schemes);
  const record = value ? ACCESS.get(value) : undefined;
  if (!record || record.expiresAt < Date.now()) {
    throw new HttpError(401, { error: 'invalid_token', error_description: 'unknown or expired access token' },
      { 'www-authenticate': 'Bearer error="invalid_token"' });
  }
  return record;
}

export async function userinfo(req, res, url, entry) {
  const record = liveAccessToken(req);
  entry.client_id = record.grant.clientId;
  sendJson(res, 200, P.userinfo(record));
}

export function jwks(req, res) {
  sendJson(res, 200, { keys: [PUBLIC_JWK] }, { 'cache-control': 'public, max-age=60' });
}

/** RFC 7591 dynamic client registration, open (no initial access token). */
export async function register(req, res, url, entry) {
  if (contentType(req) !== 'application/json') {
    throw new HttpError(400, { error: 'invalid_client_metadata', error_description: 'the body must be application/json' });
  }
  let meta;
  try {
    meta = JSON.parse((await readBody(req)) || '{}');
  } catch {
    throw new HttpError(400, { error: 'invalid_client_metadata', error_description: 'the body is not JSON' });
  }
  if (!meta || typeof meta !== 'object' || Array.isArray(meta)) {
    throw new HttpError(400, { error: 'invalid_client_metadata', error_description: 'the body must be a JSON object' });
  }
  // Missing fields are tolerated (as Auth0 does): without redirect_uris the
  // client may use any loopback redirect URI.
  const redirectUris = meta.redirect_uris ?? [];
  if (!Array.isArray(redirectUris) || !redirectUris.every((u) => typeof u === 'string' && isLoopbackRedirect(u))) {
    throw new HttpError(400, { error: 'invalid_redirect_uri', error_description: 'redirect_uris must be loopback http URLs' });
  }
  let method = meta.token_endpoint_auth_method ?? P.dcr.defaultAuth;
  if (P.dcr.publicOnly) method = 'none';
  if (method !== 'none' && !P.tokenAuth.includes(method)) {
    throw new HttpError(400, {
      error: 'invalid_client_metadata',
      error_description: `token_endpoint_auth_method ${method} is not supported`,
    });
  }
  const id = (P.dcr.idPrefix ?? '') + alnum(24);
  const secret = method === 'none' ? null : alnum(48);
  CLIENTS.set(id, { id, secret, redirectUris: redirectUris.length ? redirectUris : null });
  entry.client_id = id;
  sendJson(res, 201, {
    client_id: id,
    client_secret: secret ?? undefined,
    client_id_issued_at: now(),
    client_secret_expires_at: secret ? 0 : undefined,
    client_name: meta.client_name,
    redirect_uris: redirectUris,
    grant_types: meta.grant_types ?? ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: method,
    scope: meta.scope,
  });
}
