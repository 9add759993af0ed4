#!/usr/bin/env node
// Loopback emulator of one real identity provider, for tests of portcullis's
// IdP presets (crates/config/src/idp.rs).
//
// A preset turns a few values (a tenant id, a realm, a user pool…) into the
// real IdP's URLs. In tests the gateway moves every derived URL to one
// loopback origin and keeps the path (`Derived::rebase`), so this server
// answers each IdP's REAL path layout on that one origin: hosts that differ in
// reality (sts.windows.net, graph.microsoft.com, api.github.com,
// oauth2.googleapis.com, a Cognito hosted-UI domain…) all land here, which is
// why no two paths of one IdP may collide.
//
// Unlike idp.mjs (a spec-following provider built on oidc-provider), this one
// copies the IdP's HABITS: the claims and formats of its tokens, where it
// publishes what, which parameters it refuses or ignores, how its errors look.
// The facts come from each IdP's documentation as far as it goes; the ones we
// are unsure of are marked "uncertain" where they are implemented.
//
// Usage:
//   node tests/interop/emulator.mjs --idp NAME [--port N]
//        [--client ID:SECRET]... [--public-client ID]... [--user SUB] [--ttl SECS]
//        [--ignore-stdin] [IdP flags]
//
//   NAME: entra auth0 okta keycloak google github cognito authentik clerk
//         workos descope stytch keycard generic
//   IdP flags (refused with any other --idp):
//     entra      --tenant GUID --token-version 1|2 --app-id-uri URI --application-id GUID
//     auth0      --dcr --resource-as-audience
//     okta       --auth-server ID --audience AUD
//     keycloak   --realm NAME --audience AUD --oauth-metadata
//     github     --expiring
//     cognito    --region REGION --pool POOL_ID
//     authentik  --slug SLUG
//     clerk      --dcr --jwt --domain-label X (accepted, unused)
//     descope    --project ID
//     stytch     --project ID
//     keycard    --zone ID
//
//   --client ID:SECRET    a confidential client (split at the first ':')
//   --public-client ID    a public client (no secret; PKCE required)
//   --user SUB            the signed-in user's subject (default user-1)
//   --ttl SECS            access and ID token lifetime (default 300)
//
// Every authorization request is approved at once, for one user (sub
// `user-1`, email ada@example.com, name Ada), with a redirect to the
// redirect_uri carrying `code` and `state` (no `iss`: none of these IdPs sends
// it). redirect_uri must be a loopback URL (http://127.0.0.1:PORT/… or
// http://localhost:PORT/…, any port).
//
// Test-only endpoint, on every IdP: GET /__emulator/log answers a JSON array
// of the requests seen so far (method, path, status, client_id, grant_type,
// client auth method, scope, and the values of resource / audience /
// access_type / prompt, null when not sent), so that a test can assert what
// the gateway sent to the IdP.
//
// Contract with the parent process (as idp.mjs):
//   * stdout carries exactly one line,
//     `{"origin":"http://127.0.0.1:PORT","port":PORT,"issuer":"<issuer>"}`,
//     printed once the server accepts connections; `issuer` is the one this
//     IdP puts in its ID tokens. Everything else goes to stderr, including one
//     line per request (never a secret).
//   * The process exits when its stdin reaches EOF (unless --ignore-stdin), on
//     SIGTERM and on SIGINT.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

function fail(message) {
  console.error(`emulator: ${message}`);
  process.exit(2);
}

// The flags each IdP takes besides the common ones. A flag given to an IdP
// that does not take it is refused, so a test cannot believe it configured a
// quirk that is not there.
const IDP_FLAGS = {
  entra: ['tenant', 'token-version', 'app-id-uri', 'application-id'],
  auth0: ['dcr', 'resource-as-audience'],
  okta: ['auth-server', 'audience'],
  keycloak: ['realm', 'audience', 'oauth-metadata'],
  google: [],
  github: ['expiring'],
  cognito: ['region', 'pool'],
  authentik: ['slug'],
  clerk: ['dcr', 'jwt', 'domain-label'],
  workos: [],
  descope: ['project'],
  stytch: ['project'],
  keycard: ['zone'],
  generic: [],
};

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      idp: { type: 'string' },
      port: { type: 'string', default: '0' },
      client: { type: 'string', multiple: true, default: [] },
      'public-client': { type: 'string', multiple: true, default: [] },
      user: { type: 'string', default: 'user-1' },
      ttl: { type: 'string' },
      // For running the emulator by hand in the background, where stdin is
      // /dev/null and would otherwise make it exit at once.
      'ignore-stdin': { type: 'boolean', default: false },
      // IdP-specific (see IDP_FLAGS); defaults are applied per IdP below.
      tenant: { type: 'string' },
      'token-version': { type: 'string' },
      'app-id-uri': { type: 'string' },
      'application-id': { type: 'string' },
      dcr: { type: 'boolean' },
      'resource-as-audience': { type: 'boolean' },
      'auth-server': { type: 'string' },
      audience: { type: 'string' },
      realm: { type: 'string' },
      'oauth-metadata': { type: 'boolean' },
      expiring: { type: 'boolean' },
      region: { type: 'string' },
      pool: { type: 'string' },
      slug: { type: 'string' },
      'domain-label': { type: 'string' },
      jwt: { type: 'boolean' },
      project: { type: 'string' },
      zone: { type: 'string' },
    },
    strict: true,
  }));
} catch (err) {
  fail(err.message);
}

const IDP = args.idp;
if (!Object.hasOwn(IDP_FLAGS, IDP)) fail(`--idp must be one of: ${Object.keys(IDP_FLAGS).join(', ')}`);
const COMMON_FLAGS = new Set(['idp', 'port', 'client', 'public-client', 'user', 'ttl', 'ignore-stdin']);
for (const [flag, value] of Object.entries(args)) {
  if (value === undefined || COMMON_FLAGS.has(flag)) continue;
  if (!IDP_FLAGS[IDP].includes(flag)) fail(`--${flag} is not a flag of --idp ${IDP}`);
}

const PORT = Number(args.port);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail('--port must be an integer between 0 and 65535');

const TTL_GIVEN = args.ttl !== undefined;
const TTL = TTL_GIVEN ? Number(args.ttl) : 300;
if (!Number.isInteger(TTL) || TTL <= 0) fail('--ttl must be a positive integer (seconds)');

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// ---------------------------------------------------------------------------
// Clients, user, state
// ---------------------------------------------------------------------------

/** client_id -> { id, secret (null for public clients), redirectUris (null: any loopback URI) } */
const CLIENTS = new Map();
for (const spec of args.client) {
  const colon = spec.indexOf(':');
  if (colon <= 0) fail(`--client ${JSON.stringify(spec)}: expected ID:SECRET`);
  const id = spec.slice(0, colon);
  CLIENTS.set(id, { id, secret: spec.slice(colon + 1), redirectUris: null });
}
for (const id of args['public-client']) {
  if (!id) fail('--public-client needs an id');
  CLIENTS.set(id, { id, secret: null, redirectUris: null });
}

const USER = { sub: args.user, email: 'ada@example.com', name: 'Ada', login: 'ada' };
if (!USER.sub) fail('--user must not be empty');

const CODE_TTL = 120;
const REFRESH_TTL = 86400;

const CODES = new Map(); // code -> { grant, redirectUri, challenge, expiresAt }
const REFRESH = new Map(); // refresh token -> { grant, expiresAt }
const ACCESS = new Map(); // access token (opaque or JWT) -> { grant, claims, expiresAt }
const LOG = []; // what /__emulator/log answers

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

const now = () => Math.floor(Date.now() / 1000);
const rand = (bytes = 24) => crypto.randomBytes(bytes).toString('base64url');
const sha256 = (value) => crypto.createHash('sha256').update(value).digest();

/** Letters and digits only, as GitHub's and Clerk's tokens and ids are. */
function alnum(length) {
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let out = '';
  for (const byte of crypto.randomBytes(length * 2)) {
    if (byte < 248) out += chars[byte % 62]; // 248 = 4 * 62: no modulo bias
    if (out.length === length) break;
  }
  return out.length === length ? out : out + alnum(length - out.length);
}

/** A stable GUID-shaped id for (label, user): Entra object ids, Cognito subs. */
function guidFor(label) {
  const h = sha256(`${label}\0${USER.sub}`).toString('hex');
  const variant = ((parseInt(h[16], 16) & 3) | 8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function safeEqual(a, b) {
  const x = Buffer.from(String(a));
  const y = Buffer.from(String(b));
  return x.length === y.length && crypto.timingSafeEqual(x, y);
}

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

function splitScope(value, separators = /\s+/) {
  return (value ?? '').split(separators).filter(Boolean);
}

const hasScope = (grant, scope) => grant.scopes.includes(scope);

/** `value` alone when there is one, the array otherwise (a JWT's aud). */
const oneOrMany = (values) => (values.length === 1 ? values[0] : values);

/** The name and email claims OpenID Connect's profile and email scopes ask for. */
function profileClaims(grant) {
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
// (see generateSigningKey in idp.mjs).
const PRIVATE_KEY = crypto.createPrivateKey(crypto.generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
}).privateKey);
const KID = `emu-${rand(9)}`;
const PUBLIC_JWK = { ...crypto.createPublicKey(PRIVATE_KEY).export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' };

const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/**
 * An RS256 JWT. Claims and header members that are undefined are left out
 * (JSON.stringify drops them), which is how optional claims are written below.
 * `signedHeader`, when given, is what the signature covers instead of the
 * header sent (Microsoft Graph's tokens, see entra).
 */
function signJwt(claims, header = {}, signedHeader = undefined) {
  const sent = { typ: 'JWT', alg: 'RS256', kid: KID, ...header };
  const covered = signedHeader ? { ...sent, ...signedHeader } : sent;
  const payload = b64json(claims);
  const signature = crypto.sign('sha256', Buffer.from(`${b64json(covered)}.${payload}`), PRIVATE_KEY);
  return `${b64json(sent)}.${payload}.${signature.toString('base64url')}`;
}

/** iat/exp (and optionally nbf) for a token issued now. */
function lifetime(ttl = TTL, { nbf = false } = {}) {
  const t = now();
  return { iat: t, ...(nbf ? { nbf: t } : {}), exp: t + ttl };
}

// ---------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------

/** An answer other than 200, thrown by handlers. `oauth` keeps the RFC 6749 error for IdPs that reshape it. */
class HttpError extends Error {
  constructor(status, body, headers = {}, oauth = undefined) {
    super(typeof body === 'object' ? JSON.stringify(body) : String(body));
    this.status = status;
    this.body = body;
    this.headers = headers;
    this.oauth = oauth;
  }
}

/** An RFC 6749 section 5.2 error. `github` names GitHub's own code for it, where it has one. */
function oauthError(status, error, description, github = undefined) {
  return new HttpError(status, { error, error_description: description }, {}, { error, description, github });
}

function sendJson(res, status, body, headers = {}) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

function sendForm(res, status, body) {
  const entries = Object.entries(body).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]);
  const payload = new URLSearchParams(entries).toString();
  res.writeHead(status, {
    'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
  });
  res.end(payload);
}

function redirectTo(res, target, params) {
  const url = new URL(target);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  res.writeHead(302, { location: url.href, 'cache-control': 'no-store', 'content-length': 0 });
  res.end();
}

async function readBody(req, limit = 64 * 1024) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new HttpError(413, { error: 'invalid_request', error_description: 'request body too large' });
  }
  return body;
}

const contentType = (req) => (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();

/** A JSON object body as URLSearchParams (GitHub takes JSON token requests). */
function jsonAsParams(raw) {
  let obj;
  try {
    obj = JSON.parse(raw || '{}');
  } catch {
    throw oauthError(400, 'invalid_request', 'the body is not JSON');
  }
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(obj ?? {})) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item !== null && item !== undefined) params.append(k, String(item));
    }
  }
  return params;
}

function bearerToken(req, schemes = ['bearer']) {
  const header = req.headers.authorization ?? '';
  const space = header.indexOf(' ');
  if (space < 0 || !schemes.includes(header.slice(0, space).toLowerCase())) return undefined;
  return header.slice(space + 1).trim() || undefined;
}

/** Form-url-decoding of the parts of HTTP Basic client credentials (RFC 6749 section 2.3.1). */
function formDecode(value) {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/**
 * HTTP Basic credentials. At token endpoints both parts are form-url-encoded
 * first (RFC 6749 section 2.3.1); elsewhere (GitHub's REST API) they are
 * plain RFC 7617 user and password: `formEncoded` false.
 */
function basicCredentials(req, { formEncoded = true } = {}) {
  const header = req.headers.authorization ?? '';
  if (!/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { malformed: true };
  const part = formEncoded ? formDecode : (value) => value;
  const id = part(decoded.slice(0, colon));
  const secret = part(decoded.slice(colon + 1));
  if (id === undefined || secret === undefined) return { malformed: true };
  return { id, secret };
}

// ---------------------------------------------------------------------------
// Clients: lookup and token endpoint authentication
// ---------------------------------------------------------------------------

/**
 * The client named `id`: a configured or registered one, or (IdPs with client
 * ID metadata documents) the document at `id` when it is an http(s) URL. The
 * document is fetched on every use (no caching), and only public clients
 * (token_endpoint_auth_method "none") are taken from documents.
 */
async function findClient(id) {
  if (!id) return undefined;
  const known = CLIENTS.get(id);
  if (known) return known;
  if (!P.cimd || !/^https?:\/\//.test(id)) return undefined;
  try {
    const response = await fetch(id, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5000) });
    if (!response.ok) return undefined;
    const doc = await response.json();
    const method = doc.token_endpoint_auth_method ?? 'none';
    if (doc.client_id !== id || !Array.isArray(doc.redirect_uris) || method !== 'none') return undefined;
    return { id, secret: null, redirectUris: doc.redirect_uris.filter((u) => typeof u === 'string') };
  } catch (err) {
    console.error(`emulator[${IDP}]: client ID metadata document ${id}: ${err.message}`);
    return undefined;
  }
}

/**
 * Authenticates the client of a token request by the methods the IdP takes
 * (P.tokenAuth). Returns { client, method } or throws invalid_client; `method`
 * is also recorded for the log before anything is checked.
 */
async function authenticateClient(req, form, entry) {
  const basic = basicCredentials(req);
  const postSecret = form.get('client_secret');
  let method;
  let id;
  let secret;
  if (basic) {
    method = 'client_secret_basic';
    if (basic.malformed) throw oauthError(401, 'invalid_client', 'malformed HTTP Basic credentials', 'incorrect_client_credentials');
    if (postSecret !== null) {
      throw oauthError(400, 'invalid_request', 'more than one client authentication method (RFC 6749 section 2.3)');
    }
    if (form.get('client_id') !== null && form.get('client_id') !== basic.id) {
      throw oauthError(400, 'invalid_request', 'client_id in the body differs from the HTTP Basic user');
    }
    ({ id, secret } = basic);
  } else if (postSecret !== null) {
    method = 'client_secret_post';
    id = form.get('client_id');
    secret = postSecret;
  } else {
    method = 'none';
    id = form.get('client_id');
  }
  entry.client_auth = method;
  entry.client_id = id;
  const unauthorized = (why) => {
    const err = oauthError(401, 'invalid_client', why, 'incorrect_client_credentials');
    if (method === 'client_secret_basic') err.headers['www-authenticate'] = 'Basic realm="token"';
    return err;
  };
  const client = await findClient(id);
  if (!client) throw unauthorized(`unknown client ${JSON.stringify(id ?? '')}`);
  if (method === 'none') {
    if (client.secret !== null) throw unauthorized('client authentication required');
  } else {
    if (!P.tokenAuth.includes(method)) throw unauthorized(`${method} is not a client authentication method of this IdP`);
    if (client.secret === null || !safeEqual(secret, client.secret)) throw unauthorized('client authentication failed');
  }
  return { client, method };
}

// ---------------------------------------------------------------------------
// The common endpoints: authorization, token, userinfo, keys, registration
// ---------------------------------------------------------------------------

/** Notes the parameters the tests want to assert on. null: not sent. */
function noteParams(entry, params) {
  entry.scope = params.get('scope');
  const resources = params.getAll('resource');
  entry.resource = resources.length ? resources : null;
  entry.audience = params.get('audience');
  entry.access_type = params.get('access_type');
  entry.prompt = params.get('prompt');
}

async function authorize(req, res, url, entry) {
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

async function token(req, res, url, entry) {
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
  ACCESS.set(minted.token, {
    grant,
    claims: minted.claims,
    expiresAt: ttl === null ? Infinity : Date.now() + ttl * 1000,
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

async function userinfo(req, res, url, entry) {
  const record = liveAccessToken(req);
  entry.client_id = record.grant.clientId;
  sendJson(res, 200, P.userinfo(record));
}

function jwks(req, res) {
  sendJson(res, 200, { keys: [PUBLIC_JWK] }, { 'cache-control': 'public, max-age=60' });
}

/** RFC 7591 dynamic client registration, open (no initial access token). */
async function register(req, res, url, entry) {
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

// ---------------------------------------------------------------------------
// Route tables and discovery documents
// ---------------------------------------------------------------------------

const AUTHORIZE = { GET: authorize };
const TOKEN = { POST: token };
const USERINFO = { GET: userinfo, POST: userinfo };
const JWKS = { GET: jwks };
const REGISTER = { POST: register };

/** A GET route answering a fixed JSON document (built when the route table is). */
const document = (body) => ({ GET: (req, res) => sendJson(res, 200, body, { 'cache-control': 'public, max-age=60' }) });

/** A route answering `status` with `body` to any method (endpoints that refuse). */
const refuse = (status, body) => {
  const handler = (req, res) => sendJson(res, status, body);
  return { GET: handler, POST: handler, PUT: handler, DELETE: handler };
};

/** The common routes of the endpoints `ep` names (paths). */
function standardRoutes(ep) {
  return {
    [ep.authorization]: AUTHORIZE,
    [ep.token]: TOKEN,
    ...(ep.userinfo ? { [ep.userinfo]: USERINFO } : {}),
    ...(ep.jwks ? { [ep.jwks]: JWKS } : {}),
    ...(ep.registration ? { [ep.registration]: REGISTER } : {}),
  };
}

/**
 * Discovery metadata (OpenID Connect Discovery / RFC 8414) for the endpoints
 * `ep` names. `extra` adds members or, set to undefined, removes them.
 */
function metadata(issuer, ep, extra = {}) {
  const at = (path) => (path ? ORIGIN + path : undefined);
  return {
    issuer,
    authorization_endpoint: at(ep.authorization),
    token_endpoint: at(ep.token),
    userinfo_endpoint: at(ep.userinfo),
    jwks_uri: at(ep.jwks),
    registration_endpoint: at(ep.registration),
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    token_endpoint_auth_methods_supported: P.tokenAuth,
    code_challenge_methods_supported: ['S256'],
    ...extra,
  };
}

// ---------------------------------------------------------------------------
// The IdPs
// ---------------------------------------------------------------------------
//
// Each IdP is a profile: what differs from the common behaviour above.
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

const BASIC_AND_POST = ['client_secret_basic', 'client_secret_post'];
const always = () => true;
const withOfflineAccess = (grant) => hasScope(grant, 'offline_access');

/** An opaque access token whose only meaning is its record in ACCESS. */
const opaque = (prefix = '') => ({ token: prefix + rand(32) });

/** A JWT access token with these claims (plus iat/exp). */
function jwtAccess(claims, header = undefined) {
  const full = { ...claims, ...lifetime(), jti: claims.jti ?? crypto.randomUUID() };
  return { token: signJwt(full, header), claims: full };
}

/** Userinfo claims of the usual shape, from the record's grant. */
function standardUserinfo(record, sub = record.grant.sub) {
  return { sub, name: USER.name, email: USER.email, email_verified: true, preferred_username: USER.login };
}

// ----- Microsoft Entra ID ---------------------------------------------------

function entra() {
  const tid = (args.tenant ?? '0b5c6f2e-1f9a-4c3e-9b1d-7a2e4c6d8f10').toLowerCase();
  if (!GUID.test(tid)) fail('--tenant must be a GUID (the Directory (tenant) ID)');
  const version = args['token-version'] ?? '2';
  if (version !== '1' && version !== '2') fail('--token-version must be 1 or 2');
  const appIdUri = args['app-id-uri'] ?? 'api://mcp-api';
  const applicationId = (args['application-id'] ?? '5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f').toLowerCase();
  if (!GUID.test(applicationId)) fail('--application-id must be a GUID');

  const issuerV2 = `${ORIGIN}/${tid}/v2.0`;
  const issuerV1 = `${ORIGIN}/${tid}/`; // https://sts.windows.net/{tid}/ in reality
  const GRAPH = '00000003-0000-0000-c000-000000000000';
  const oid = guidFor('entra-oid');
  const apiPrefix = `${appIdUri}/`;
  // `{app-id-uri}/.default` asks for every delegated permission the API's
  // client has consent for; Entra then puts their names in scp, never
  // ".default". This emulated API has one: access_as_user.
  const permission = (scope) => {
    const name = scope.slice(scope.lastIndexOf('/') + 1);
    return name === '.default' ? 'access_as_user' : name;
  };
  const apiScopes = (grant) => grant.scopes.filter((s) => s.startsWith(apiPrefix));
  const common = (grant) => ({
    tid,
    oid,
    sub: grant.sub,
    name: USER.name,
    aio: rand(12),
    uti: rand(16),
    rh: `0.${rand(12)}.`,
  });

  const endpoints = (t) => ({
    authorization: `/${t}/oauth2/v2.0/authorize`,
    token: `/${t}/oauth2/v2.0/token`,
    userinfo: '/oidc/userinfo', // https://graph.microsoft.com/oidc/userinfo
    jwks: `/${t}/discovery/v2.0/keys`,
  });
  // Entra's documents, as published: no code_challenge_methods_supported
  // although S256 works (a known obstacle for MCP clients, which refuse to
  // proceed without it), no registration endpoint, pairwise subjects, and for
  // the multi-tenant ones the issuer as a literal `{tenantid}` template.
  const discovery = (t) => metadata(t === tid ? issuerV2 : `${ORIGIN}/{tenantid}/v2.0`, endpoints(t), {
    code_challenge_methods_supported: undefined,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    response_modes_supported: ['query', 'fragment', 'form_post'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
    grant_types_supported: undefined,
    subject_types_supported: ['pairwise'],
    request_uri_parameter_supported: false,
    end_session_endpoint: `${ORIGIN}/${t}/oauth2/v2.0/logout`,
    device_authorization_endpoint: `${ORIGIN}/${t}/oauth2/v2.0/devicecode`,
    frontchannel_logout_supported: true,
    http_logout_supported: true,
    tenant_region_scope: t === tid ? 'EU' : null,
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: 'graph.microsoft.com',
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'nonce', 'preferred_username',
      'name', 'tid', 'ver', 'at_hash', 'c_hash', 'email'],
  });

  return {
    issuer: issuerV2,
    routes() {
      const routes = {};
      for (const t of [tid, 'common', 'organizations']) {
        Object.assign(routes, standardRoutes(endpoints(t)), {
          [`/${t}/v2.0/.well-known/openid-configuration`]: document(discovery(t)),
        });
      }
      return routes; // and no RFC 8414 document, no registration endpoint
    },
    tokenAuth: BASIC_AND_POST,
    resource: 'refused',
    resourceRefusal: {
      error: 'invalid_target',
      error_description: 'AADSTS9010010: The resource parameter provided in the request doesn\'t match with the requested scopes.',
    },
    refresh: withOfflineAccess,
    // Entra returns a new refresh token with every refresh and does not revoke
    // the one redeemed; and a refresh token may be redeemed for another
    // resource's scopes (multi-resource refresh tokens).
    rotation: 'reissue',
    refreshAnyScope: true,
    oidc: true,
    idClaims: (grant) => ({
      iss: issuerV2,
      tid,
      oid,
      ver: '2.0',
      email: undefined,
      email_verified: undefined,
      ...(hasScope(grant, 'profile') ? { preferred_username: USER.email } : {}),
      ...(hasScope(grant, 'email') ? { email: USER.email } : {}),
    }),
    accessToken(grant) {
      const api = apiScopes(grant);
      if (api.length) {
        const scp = [...new Set(api.map(permission))].join(' ');
        const claims = version === '2'
          ? { aud: applicationId, iss: issuerV2, azp: grant.clientId, azpacr: grant.clientIsPublic ? '0' : '1',
            ...common(grant), scp, preferred_username: USER.email, ver: '2.0' }
          // v1 tokens name the user by upn/unique_name: preferred_username is a v2.0 claim.
          : { aud: appIdUri, iss: issuerV1, appid: grant.clientId, appidacr: grant.clientIsPublic ? '0' : '1',
            ...common(grant), scp, upn: USER.email, unique_name: USER.email, ver: '1.0' };
        const full = { ...claims, ...lifetime(TTL, { nbf: true }) };
        return { token: signJwt(full), claims: full };
      }
      // No scope of the API: the token is for Microsoft Graph. Graph's tokens
      // carry a nonce in the JWT header and the signature covers its SHA-256
      // instead, so no one but Graph can verify them: a resource server must
      // not try (and must not take them).
      const nonce = rand(32);
      const full = {
        aud: GRAPH, iss: issuerV1, appid: grant.clientId, appidacr: grant.clientIsPublic ? '0' : '1',
        ...common(grant), scp: 'openid profile email User.Read', upn: USER.email, unique_name: USER.email,
        ver: '1.0', ...lifetime(TTL, { nbf: true }),
      };
      return { token: signJwt(full, { nonce }, { nonce: sha256(nonce).toString('base64url') }), claims: full };
    },
    tokenResponse(body, grant) {
      const api = apiScopes(grant);
      const scope = api.length
        ? [...new Set(api.map((s) => apiPrefix + permission(s)))].join(' ')
        : 'openid profile email User.Read';
      return { ...body, scope, ext_expires_in: body.expires_in };
    },
    // graph.microsoft.com/oidc/userinfo takes Graph's tokens only.
    userinfo(record) {
      if (record.claims?.aud !== GRAPH) {
        throw new HttpError(401, {
          error: { code: 'InvalidAuthenticationToken', message: 'Access token validation failure. Invalid audience.' },
        }, { 'www-authenticate': 'Bearer realm=""' });
      }
      return { sub: record.grant.sub, name: USER.name, family_name: '', given_name: USER.name, email: USER.email };
    },
  };
}

// ----- Auth0 -----------------------------------------------------------------

function auth0() {
  const issuer = `${ORIGIN}/`;
  const ep = {
    authorization: '/authorize',
    token: '/oauth/token',
    userinfo: '/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: args.dcr ? '/oidc/register' : undefined,
  };
  const sub = `auth0|${USER.sub}`;
  const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access', 'address', 'phone']);
  return {
    issuer,
    // Only the OpenID document: /.well-known/oauth-authorization-server is 404
    // (uncertain: Auth0 may have added it for MCP since).
    routes: () => ({ ...standardRoutes(ep), '/.well-known/openid-configuration': document(metadata(issuer, ep, {
      revocation_endpoint: `${ORIGIN}/oauth/revoke`,
      device_authorization_endpoint: `${ORIGIN}/oauth/device/code`,
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
      code_challenge_methods_supported: ['S256', 'plain'],
      response_modes_supported: ['query', 'fragment', 'form_post'],
    })) }),
    tokenAuth: BASIC_AND_POST,
    // `resource` is ignored unless the tenant has the Resource Parameter
    // Compatibility Profile (--resource-as-audience): then it is the audience.
    resource: 'ignored',
    onAuthorize(grant, q) {
      grant.audience = q.get('audience') ?? (args['resource-as-audience'] ? q.get('resource') : null) ?? undefined;
    },
    refresh: withOfflineAccess,
    rotation: 'rotate', // with Refresh Token Rotation on, as MCP set-ups have it
    oidc: true,
    dcr: { defaultAuth: 'client_secret_post' },
    idClaims: (grant) => ({
      sub,
      sid: grant.sid,
      ...(hasScope(grant, 'profile') ? { nickname: USER.login, updated_at: '2024-01-01T00:00:00.000Z' } : {}),
    }),
    accessToken(grant) {
      if (!grant.audience) {
        // Without an audience Auth0 issues a token only its /userinfo
        // understands. It is a JWE (five segments, "dir" + A256GCM) that no
        // one else can decrypt; here random bytes in that shape.
        const header = b64json({ alg: 'dir', enc: 'A256GCM', iss: issuer });
        return { token: `${header}..${rand(12)}.${rand(64)}.${rand(16)}` };
      }
      return jwtAccess({
        iss: issuer,
        sub,
        aud: hasScope(grant, 'openid') ? [grant.audience, `${ORIGIN}/userinfo`] : grant.audience,
        azp: grant.clientId,
        scope: grant.scope,
        permissions: grant.scopes.filter((s) => !OIDC_SCOPES.has(s)),
      });
    },
    userinfo(record) {
      const aud = record.claims?.aud;
      if (record.claims && !(Array.isArray(aud) && aud.includes(`${ORIGIN}/userinfo`))) {
        throw new HttpError(401, 'Unauthorized', { 'www-authenticate': 'Bearer error="invalid_token"' });
      }
      return {
        sub, nickname: USER.login, name: USER.name, email: USER.email, email_verified: true, updated_at: '2024-01-01T00:00:00.000Z',
      };
    },
  };
}

// ----- Okta (custom authorization server) ------------------------------------

function okta() {
  const server = args['auth-server'] ?? 'default';
  const audience = args.audience ?? 'api://default';
  const base = `/oauth2/${server}`;
  const issuer = ORIGIN + base;
  const uid = `00u${sha256(`okta\0${USER.sub}`).toString('hex').slice(0, 17)}`;
  const ep = {
    authorization: `${base}/v1/authorize`,
    token: `${base}/v1/token`,
    userinfo: `${base}/v1/userinfo`,
    jwks: `${base}/v1/keys`,
  };
  const meta = () => metadata(issuer, ep, {
    introspection_endpoint: `${issuer}/v1/introspect`,
    revocation_endpoint: `${issuer}/v1/revoke`,
    end_session_endpoint: `${issuer}/v1/logout`,
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'none'],
    response_modes_supported: ['query', 'fragment', 'form_post', 'okta_post_message'],
  });
  return {
    issuer,
    // Both documents under the issuer, the RFC 8414 one APPENDED to it (the
    // path-inserted /.well-known/oauth-authorization-server/oauth2/{as} is 404).
    routes: () => ({
      ...standardRoutes(ep),
      [`${base}/.well-known/openid-configuration`]: document(meta()),
      [`${base}/.well-known/oauth-authorization-server`]: document(meta()),
      // Dynamic registration is an admin API that needs an SSWS API token
      // (error body uncertain).
      '/oauth2/v1/clients': refuse(401, {
        errorCode: 'E0000011', errorSummary: 'Invalid token provided', errorLink: 'E0000011',
        errorId: `oae${alnum(22)}`, errorCauses: [],
      }),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    idHeader: { typ: undefined },
    idClaims: (grant) => ({
      sub: uid, ver: 1, jti: `ID.${rand(24)}`, amr: ['pwd'], idp: `00o${alnum(17)}`,
      ...(hasScope(grant, 'profile') ? { preferred_username: USER.email } : {}),
    }),
    // Okta's access tokens: sub is the user's login, uid its id, scp an array.
    accessToken: (grant) => jwtAccess({
      ver: 1, jti: `AT.${rand(24)}`, iss: issuer, aud: audience, cid: grant.clientId, uid,
      scp: grant.scopes, auth_time: grant.authTime, sub: USER.email,
    }, { typ: undefined }),
    userinfo: (record) => ({ ...standardUserinfo(record, uid), preferred_username: USER.email }),
  };
}

// ----- Keycloak ----------------------------------------------------------------

function keycloak() {
  const realm = args.realm ?? 'mcp';
  const base = `/realms/${realm}`;
  const issuer = ORIGIN + base;
  const oidc = `${base}/protocol/openid-connect`;
  const ep = {
    authorization: `${oidc}/auth`,
    token: `${oidc}/token`,
    userinfo: `${oidc}/userinfo`,
    jwks: `${oidc}/certs`,
  };
  const meta = () => metadata(issuer, ep, {
    introspection_endpoint: `${ORIGIN}${oidc}/token/introspect`,
    end_session_endpoint: `${ORIGIN}${oidc}/logout`,
    registration_endpoint: `${ORIGIN}${base}/clients-registrations/openid-connect`,
    code_challenge_methods_supported: ['plain', 'S256'],
    token_endpoint_auth_methods_supported: [
      'private_key_jwt', 'client_secret_basic', 'client_secret_post', 'tls_client_auth', 'client_secret_jwt',
    ],
  });
  // Anonymous registration meets the Trusted Hosts policy, which lets no host in by default.
  const trustedHosts = refuse(403, {
    error: 'insufficient_scope',
    error_description: 'Policy \'Trusted Hosts\' rejected request to client-registration service. Details: Host not trusted.',
  });
  // Keycloak always applies the realm's default client scopes (profile, email…),
  // asked for or not.
  const scopeOf = (grant) => [...new Set([...grant.scopes, 'profile', 'email'])].join(' ');
  const userClaims = {
    email_verified: true, name: USER.name, preferred_username: USER.login, given_name: USER.name, email: USER.email,
  };
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      [`${base}/.well-known/openid-configuration`]: document(meta()),
      // Keycloak 25 added the RFC 8414 document appended to the issuer, 26.4
      // the RFC 8414 (path-inserted) location; --oauth-metadata serves both,
      // without it this is an older Keycloak with the OpenID document only.
      ...(args['oauth-metadata'] ? {
        [`${base}/.well-known/oauth-authorization-server`]: document(meta()),
        [`/.well-known/oauth-authorization-server${base}`]: document(meta()),
      } : {}),
      [`${base}/clients-registrations/openid-connect`]: trustedHosts,
      [`${base}/clients-registrations/default`]: trustedHosts,
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: always,
    rotation: 'reissue', // "Revoke Refresh Token" is off by default
    oidc: true,
    idClaims: (grant) => ({ typ: 'ID', azp: grant.clientId, sid: grant.sid, acr: '1', ...userClaims }),
    accessToken: (grant) => jwtAccess({
      auth_time: grant.authTime,
      iss: issuer,
      aud: args.audience ? [args.audience, 'account'] : 'account',
      sub: grant.sub,
      typ: 'Bearer',
      azp: grant.clientId,
      sid: grant.sid,
      acr: '1',
      'allowed-origins': [],
      realm_access: { roles: [`default-roles-${realm}`, 'offline_access', 'uma_authorization'] },
      resource_access: { account: { roles: ['manage-account', 'manage-account-links', 'view-profile'] } },
      scope: scopeOf(grant),
      ...userClaims,
    }),
    tokenResponse: (body, grant) => ({
      ...body,
      scope: scopeOf(grant),
      refresh_expires_in: body.refresh_token ? 1800 : undefined,
      'not-before-policy': 0,
      session_state: grant.sid,
    }),
    userinfo: (record) => ({ sub: record.grant.sub, ...userClaims }),
  };
}

// ----- Google --------------------------------------------------------------

function google() {
  const issuer = ORIGIN; // https://accounts.google.com
  const ep = {
    authorization: '/o/oauth2/v2/auth',
    token: '/token', // https://oauth2.googleapis.com/token
    userinfo: '/v1/userinfo', // https://openidconnect.googleapis.com/v1/userinfo
    jwks: '/oauth2/v3/certs', // https://www.googleapis.com/oauth2/v3/certs
  };
  // Who already gave a client offline access: Google returns a refresh token
  // on that first consent only, unless prompt=consent asks for consent again.
  const offlineConsents = new Set();
  // Google answers with its own names for the OpenID scopes.
  const EXPANDED = {
    email: 'https://www.googleapis.com/auth/userinfo.email',
    profile: 'https://www.googleapis.com/auth/userinfo.profile',
  };
  const scopeOut = (grant) => grant.scopes.map((s) => EXPANDED[s] ?? s).join(' ');

  async function tokeninfo(req, res, url, entry) {
    let value = url.searchParams.get('access_token');
    if (req.method === 'POST') {
      const raw = await readBody(req);
      value = new URLSearchParams(raw).get('access_token') ?? value;
    }
    const record = value ? ACCESS.get(value) : undefined;
    if (!record || record.expiresAt < Date.now()) {
      return sendJson(res, 400, { error: 'invalid_token', error_description: 'Invalid Value' });
    }
    const { grant } = record;
    entry.client_id = grant.clientId;
    // Google's tokeninfo answers numbers and booleans as strings.
    const exp = Math.floor(record.expiresAt / 1000);
    return sendJson(res, 200, {
      azp: grant.clientId,
      aud: grant.clientId,
      sub: grant.sub,
      scope: scopeOut(grant),
      exp: String(exp),
      expires_in: String(Math.max(0, exp - now())),
      ...(hasScope(grant, 'email') ? { email: USER.email, email_verified: 'true' } : {}),
      access_type: grant.offline ? 'offline' : 'online',
    });
  }

  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(metadata(issuer, ep, {
        device_authorization_endpoint: `${ORIGIN}/device/code`,
        revocation_endpoint: `${ORIGIN}/revoke`,
        response_types_supported: [
          'code', 'token', 'id_token', 'code token', 'code id_token', 'token id_token', 'code token id_token', 'none',
        ],
        scopes_supported: ['openid', 'email', 'profile'],
        token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
        code_challenge_methods_supported: ['plain', 'S256'],
        grant_types_supported: [
          'authorization_code', 'refresh_token',
          'urn:ietf:params:oauth:grant-type:device_code', 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        ],
        claims_supported: ['aud', 'email', 'email_verified', 'exp', 'family_name', 'given_name', 'iat', 'iss', 'name', 'picture', 'sub'],
      })),
      '/tokeninfo': { GET: tokeninfo, POST: tokeninfo }, // https://oauth2.googleapis.com/tokeninfo
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    onAuthorize(grant, q) {
      const key = `${grant.sub}\0${grant.clientId}`;
      const consentAgain = splitScope(q.get('prompt')).includes('consent');
      grant.offline = q.get('access_type') === 'offline';
      grant.refreshOnRedeem = grant.offline && (consentAgain || !offlineConsents.has(key));
      if (grant.offline) offlineConsents.add(key);
    },
    refresh: (grant) => Boolean(grant.refreshOnRedeem),
    rotation: 'keep', // refresh answers carry no refresh token; the old one lives on
    oidc: true,
    idClaims: (grant) => ({ azp: grant.clientId, auth_time: undefined }),
    accessToken: () => opaque('ya29.'),
    tokenResponse: (body, grant) => ({ ...body, scope: scopeOut(grant) }),
    userinfo: (record) => ({
      sub: record.grant.sub,
      name: USER.name,
      given_name: USER.name,
      email: USER.email,
      email_verified: true,
    }),
  };
}

// ----- GitHub (OAuth 2 only, no OpenID Connect) -------------------------------

function github() {
  const expiring = Boolean(args.expiring);
  // The user's numeric id (what the preset takes as subject): --user when it
  // is a number, else 4242.
  const userId = /^\d+$/.test(USER.sub) ? Number(USER.sub) : 4242;
  const user = {
    login: USER.login,
    id: userId,
    node_id: `U_${Buffer.from(`04:User${userId}`).toString('base64url')}`,
    type: 'User',
    site_admin: false,
    name: USER.name,
    email: USER.email,
  };
  const wantsJson = (req) => (req.headers.accept ?? '').toLowerCase().includes('application/json');
  const DOCS = 'https://docs.github.com/rest';
  const CHECK_DOCS = `${DOCS}/apps/oauth-applications#check-a-token`;

  // GET /user on api.github.com: `Authorization: Bearer …` or `token …`.
  function getUser(req, res) {
    const value = bearerToken(req, ['bearer', 'token']);
    if (!value) {
      return sendJson(res, 401, {
        message: 'Requires authentication', documentation_url: `${DOCS}/users/users#get-the-authenticated-user`, status: '401',
      });
    }
    const record = ACCESS.get(value);
    if (!record || record.expiresAt < Date.now()) {
      return sendJson(res, 401, { message: 'Bad credentials', documentation_url: DOCS, status: '401' });
    }
    return sendJson(res, 200, user);
  }

  // POST /applications/{client_id}/token: "check a token", with the app's
  // client id and secret as HTTP Basic credentials.
  async function checkToken(req, res, url, entry) {
    const clientId = decodeURIComponent(url.pathname.split('/')[2]);
    entry.client_id = clientId;
    const basic = basicCredentials(req, { formEncoded: false });
    entry.client_auth = basic ? 'client_secret_basic' : 'none';
    const client = CLIENTS.get(clientId);
    // (Which status GitHub gives wrong app credentials here is uncertain.)
    if (!basic || basic.malformed || basic.id !== clientId || !client?.secret || !safeEqual(basic.secret, client.secret)) {
      return sendJson(res, 401, { message: 'Requires authentication', documentation_url: CHECK_DOCS, status: '401' });
    }
    let body;
    try {
      body = JSON.parse((await readBody(req)) || '{}');
    } catch {
      body = {};
    }
    if (typeof body.access_token !== 'string') {
      return sendJson(res, 422, { message: 'Invalid request.\n\n"access_token" wasn\'t supplied.', status: '422' });
    }
    const record = ACCESS.get(body.access_token);
    if (!record || record.expiresAt < Date.now() || record.grant.clientId !== clientId) {
      return sendJson(res, 404, { message: 'Not Found', documentation_url: CHECK_DOCS, status: '404' });
    }
    const token = body.access_token;
    return sendJson(res, 200, {
      id: 1,
      url: `${ORIGIN}/authorizations/1`,
      app: { name: 'portcullis test', url: ORIGIN, client_id: clientId },
      token,
      hashed_token: sha256(token).toString('hex'),
      token_last_eight: token.slice(-8),
      note: null,
      note_url: null,
      created_at: new Date(record.expiresAt === Infinity ? Date.now() : record.expiresAt - TTL * 1000).toISOString(),
      updated_at: new Date().toISOString(),
      fingerprint: null,
      scopes: expiring ? [] : record.grant.scopes,
      expires_at: record.expiresAt === Infinity ? null : new Date(record.expiresAt).toISOString(),
      user,
    });
  }

  return {
    issuer: ORIGIN, // https://github.com (the preset's name for it; not an OpenID issuer)
    routes: () => ({
      '/login/oauth/authorize': AUTHORIZE,
      '/login/oauth/access_token': TOKEN,
      '/user': { GET: getUser }, // https://api.github.com/user
    }),
    // /applications/{client_id}/token: the one route with a variable part.
    prefixRoutes: [['/applications/', (path) => /^\/applications\/[^/]+\/token$/.test(path), { POST: checkToken }]],
    // The client id and secret go in the body (GitHub's documented way); HTTP
    // Basic works too.
    tokenAuth: ['client_secret_post', 'client_secret_basic'],
    resource: 'ignored',
    noResponseType: true, // GitHub takes no response_type
    grantTypeOptional: true, // nor a grant_type for the code exchange
    redirectUriOptionalAtToken: true,
    jsonTokenBody: true,
    scopeSeparators: /[\s,]+/,
    // Only GitHub Apps with expiring user tokens refresh; OAuth Apps' tokens never expire.
    refresh: () => expiring,
    rotation: 'rotate',
    refreshPrefix: 'ghr_',
    oidc: false,
    accessToken: () => (expiring
      ? { token: `ghu_${alnum(36)}`, expiresIn: TTL_GIVEN ? TTL : 28800 }
      : { token: `gho_${alnum(36)}`, expiresIn: null }),
    tokenResponse(body, grant) {
      return {
        access_token: body.access_token,
        expires_in: body.expires_in,
        refresh_token: body.refresh_token,
        refresh_token_expires_in: body.refresh_token ? 15897600 : undefined,
        // Comma-separated; a GitHub App's user token has permissions, not scopes.
        scope: expiring ? '' : grant.scopes.join(','),
        token_type: 'bearer',
      };
    },
    sendToken: (req, res, body) => (wantsJson(req) ? sendJson(res, 200, body) : sendForm(res, 200, body)),
    // Token endpoint errors come back as 200 with an `error` field, in
    // GitHub's own words.
    sendTokenError(req, res, err) {
      const body = {
        error: err.oauth.github ?? err.oauth.error,
        error_description: err.oauth.description,
        error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors',
      };
      return wantsJson(req) ? sendJson(res, 200, body) : sendForm(res, 200, body);
    },
    userinfo: () => user,
  };
}

// ----- Amazon Cognito ------------------------------------------------------

function cognito() {
  const region = args.region ?? 'us-east-1';
  const pool = args.pool ?? 'us-east-1_Ab12Cd34E';
  if (!/^[a-z]{2}(-gov)?-[a-z]+-\d$/.test(region)) fail('--region must be an AWS region, e.g. us-east-1');
  if (!/^[a-z0-9-]+_[A-Za-z0-9]+$/.test(pool)) fail('--pool must be a user pool id, e.g. us-east-1_Ab12Cd34E');
  if (!pool.startsWith(`${region}_`)) console.error(`emulator[cognito]: note: pool ${pool} is not in region ${region}`);
  const issuer = `${ORIGIN}/${pool}`; // https://cognito-idp.{region}.amazonaws.com/{pool}
  const sub = guidFor('cognito-sub');
  // The hosted UI (https://{domain}.auth.{region}.amazoncognito.com in reality)
  // serves the OAuth endpoints; the pool's own host the documents and keys.
  const ep = {
    authorization: '/oauth2/authorize',
    token: '/oauth2/token',
    userinfo: '/oauth2/userInfo',
    jwks: `/${pool}/.well-known/jwks.json`,
  };
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      // Cognito's document, as published: no code_challenge_methods_supported
      // although S256 works, and no registration endpoint.
      [`/${pool}/.well-known/openid-configuration`]: document(metadata(issuer, ep, {
        code_challenge_methods_supported: undefined,
        grant_types_supported: undefined,
        response_modes_supported: undefined,
        response_types_supported: ['code', 'token'],
        scopes_supported: ['openid', 'email', 'phone', 'profile'],
        end_session_endpoint: `${ORIGIN}/logout`,
        revocation_endpoint: `${ORIGIN}/oauth2/revoke`,
      })),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    onAuthorize(grant) {
      grant.originJti = crypto.randomUUID();
      grant.eventId = crypto.randomUUID();
    },
    refresh: always,
    // A refresh answer has new access and ID tokens and no refresh token; the
    // one redeemed keeps working (without refresh token rotation, the default).
    rotation: 'keep',
    oidc: true,
    idClaims: (grant) => ({
      sub,
      'cognito:groups': ['admins'],
      'cognito:username': USER.sub,
      origin_jti: grant.originJti,
      event_id: grant.eventId,
      token_use: 'id',
      jti: crypto.randomUUID(),
      email: USER.email,
      email_verified: true,
      name: USER.name,
    }),
    // No aud: the app client is in client_id, the kind of token in token_use.
    accessToken: (grant) => jwtAccess({
      sub,
      'cognito:groups': ['admins'],
      iss: issuer,
      version: 2,
      client_id: grant.clientId,
      origin_jti: grant.originJti,
      event_id: grant.eventId,
      token_use: 'access',
      scope: grant.scope,
      auth_time: grant.authTime,
      username: USER.sub,
    }, { typ: undefined }),
    idHeader: { typ: undefined },
    // Cognito's userInfo answers email_verified as a string.
    userinfo: () => ({ sub, email_verified: 'true', email: USER.email, name: USER.name, username: USER.sub }),
  };
}

// ----- authentik -------------------------------------------------------------

function authentik() {
  const slug = args.slug ?? 'mcp';
  if (!/^[A-Za-z0-9_-]+$/.test(slug)) fail('--slug must be letters, digits, - and _');
  const issuer = `${ORIGIN}/application/o/${slug}/`;
  // authentik's default subject mode: a hash of the user's id.
  const sub = sha256(`authentik\0${USER.sub}`).toString('hex');
  const uid = sha256(`authentik-uid\0${USER.sub}`).toString('hex').slice(0, 40);
  const ep = {
    authorization: '/application/o/authorize/',
    token: '/application/o/token/',
    userinfo: '/application/o/userinfo/',
    jwks: `/application/o/${slug}/jwks/`,
  };
  const userClaims = {
    email: USER.email, email_verified: true, name: USER.name, given_name: USER.name,
    preferred_username: USER.login, nickname: USER.login, groups: ['authentik Admins', 'mcp-users'],
  };
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      [`/application/o/${slug}/.well-known/openid-configuration`]: document(metadata(issuer, ep, {
        introspection_endpoint: `${ORIGIN}/application/o/introspect/`,
        revocation_endpoint: `${ORIGIN}/application/o/revoke/`,
        end_session_endpoint: `${ORIGIN}/application/o/${slug}/end-session/`,
        code_challenge_methods_supported: ['plain', 'S256'],
      })),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    idClaims: (grant) => ({
      sub, uid, azp: grant.clientId, acr: 'goauthentik.io/providers/oauth2/default', sid: grant.sid, ...userClaims,
    }),
    // The access token's audience is the client itself.
    accessToken: (grant) => jwtAccess({
      iss: issuer, sub, aud: grant.clientId, auth_time: grant.authTime, acr: 'goauthentik.io/providers/oauth2/default',
      sid: grant.sid, azp: grant.clientId, uid, scope: grant.scope, ...userClaims,
    }),
    userinfo: () => ({ sub, ...userClaims }),
  };
}

// ----- Clerk -------------------------------------------------------------------
// Uncertain: the format of Clerk's OAuth access tokens. Opaque by default
// (the `oat_` prefix is our reading of Clerk's machine-token prefixes); with
// --jwt, JWTs whose claims below are a best guess. Clerk's documentation says
// nothing of `resource`, and integrations report its access tokens carry no
// aud at all: this emulation ignores `resource` and issues no aud.

function clerk() {
  const issuer = ORIGIN; // https://clerk.example.com (the Frontend API domain)
  const sub = `user_${sha256(`clerk\0${USER.sub}`).toString('base64url').replace(/[-_]/g, '').slice(0, 27)}`;
  const ep = {
    authorization: '/oauth/authorize',
    token: '/oauth/token',
    userinfo: '/oauth/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: args.dcr ? '/oauth/register' : undefined,
  };
  const meta = () => metadata(issuer, ep, { revocation_endpoint: `${ORIGIN}/oauth/token/revoke` });
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(meta()),
      '/.well-known/oauth-authorization-server': document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    idClaims: () => ({ sub }),
    accessToken: (grant) => (args.jwt
      ? jwtAccess({ iss: issuer, sub, client_id: grant.clientId, scope: grant.scope })
      : opaque('oat_')),
    userinfo: () => ({
      sub, user_id: sub, email: USER.email, email_verified: true, name: USER.name,
      given_name: USER.name, family_name: '', preferred_username: USER.login,
    }),
  };
}

// ----- WorkOS AuthKit --------------------------------------------------------
// Uncertain: AuthKit's access token claims beyond iss/sub/sid/aud/exp (we add
// client_id and scope); aud is the requested resource (RFC 8707), absent
// without one.

function workos() {
  const issuer = ORIGIN; // https://{name}.authkit.app
  const ulid = (label) => `01${sha256(`${label}\0${USER.sub}`).toString('hex').toUpperCase().slice(0, 24)}`;
  const sub = `user_${ulid('workos-user')}`;
  const ep = {
    authorization: '/oauth2/authorize',
    token: '/oauth2/token',
    userinfo: '/oauth2/userinfo',
    jwks: '/oauth2/jwks',
    registration: '/oauth2/register',
  };
  const meta = () => metadata(issuer, ep, { client_id_metadata_document_supported: true });
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(meta()),
      '/.well-known/oauth-authorization-server': document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: always,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    cimd: true,
    idClaims: () => ({ sub }),
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub,
      sid: `session_${ulid(`workos-session\0${grant.sid}`)}`,
      aud: grant.resources.length ? oneOrMany(grant.resources) : undefined,
      client_id: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: () => ({ sub, email: USER.email, email_verified: true, name: USER.name, given_name: USER.name }),
  };
}

// ----- Descope (inbound apps) --------------------------------------------------
// Uncertain: the access token's aud. We put [project id, resource…]; a
// third-party SDK's documentation says Descope binds aud to [client id,
// project id] for its MCP servers. The JWKS path is that of Descope's OpenID
// issuer `https://api.descope.com/{project}`. Descope registers only public
// (non-confidential) clients through DCR.

function descope() {
  const project = args.project ?? 'P2abc123def456';
  if (!/^P[A-Za-z0-9]{7,}$/.test(project)) fail('--project must be a Descope project id ("P" then letters and digits)');
  const issuer = `${ORIGIN}/v1/apps/${project}`; // https://api.descope.com/v1/apps/{project}
  const ep = {
    authorization: '/oauth2/v1/apps/authorize',
    token: '/oauth2/v1/apps/token',
    userinfo: '/oauth2/v1/apps/userinfo',
    jwks: `/${project}/.well-known/jwks.json`,
    registration: `/v1/mgmt/inboundapp/app/${project}/register`,
  };
  const meta = () => metadata(issuer, ep, { revocation_endpoint: `${ORIGIN}/oauth2/v1/apps/revoke` });
  const sub = `U${sha256(`descope\0${USER.sub}`).toString('hex').slice(0, 27)}`;
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      [`/v1/apps/${project}/.well-known/openid-configuration`]: document(meta()),
      // RFC 8414's path-inserted location.
      [`/.well-known/oauth-authorization-server/v1/apps/${project}`]: document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'none', publicOnly: true },
    idClaims: () => ({ sub }),
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub,
      aud: [project, ...grant.resources],
      azp: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: () => ({ sub, email: USER.email, email_verified: true, name: USER.name }),
  };
}

// ----- Stytch Connected Apps ---------------------------------------------------
// Uncertain: the authorization endpoint is a page of the customer's own
// application in reality (configured in Stytch's dashboard); /v1/oauth2/authorize
// stands in for it. Token, userinfo, keys and the discovery documents are
// Stytch's documented paths on the project domain.

function stytch() {
  const project = args.project ?? 'project-test-11111111-2222-3333-4444-555555555555';
  const env = project.match(/^project-(test|live)-/)?.[1];
  if (!env) fail('--project must be a Stytch project id (project-test-… or project-live-…)');
  const issuer = ORIGIN; // https://{project domain}
  const sub = `user-${env}-${guidFor('stytch-user')}`;
  const ep = {
    authorization: '/v1/oauth2/authorize',
    token: '/v1/oauth2/token',
    userinfo: '/v1/oauth2/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: '/v1/oauth2/register',
  };
  const meta = () => metadata(issuer, ep, { token_endpoint_auth_methods_supported: [...BASIC_AND_POST, 'none'] });
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(meta()),
      '/.well-known/oauth-authorization-server': document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic', idPrefix: `connected-app-${env}-` },
    idClaims: () => ({ sub }),
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub,
      aud: [project, ...grant.resources],
      client_id: grant.clientId,
      scope: grant.scope,
      nbf: now(),
    }),
    userinfo: () => ({ sub, email: USER.email, email_verified: true, name: USER.name }),
  };
}

// ----- Keycard -----------------------------------------------------------------
// Uncertain: the key set's and userinfo's paths. Keycard's documentation
// names the zone's endpoints but not these paths.

function keycard() {
  const zone = args.zone ?? 'z1a2b3c4';
  if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(zone)) fail('--zone must be letters, digits and -');
  const issuer = ORIGIN; // https://{zone}.keycard.cloud
  const ep = {
    authorization: '/oauth/authorize',
    token: '/oauth/token',
    userinfo: '/oauth/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: '/oauth/register',
  };
  const meta = () => metadata(issuer, ep, { client_id_metadata_document_supported: true });
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(meta()),
      '/.well-known/oauth-authorization-server': document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: always,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    cimd: true,
    // The audience is the zone; the protected resource is in its own claim.
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub: grant.sub,
      aud: issuer,
      resource: grant.resources.length ? oneOrMany(grant.resources) : undefined,
      client_id: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: (record) => standardUserinfo(record),
  };
}

// ----- A plain OpenID provider ---------------------------------------------------

function generic() {
  const issuer = ORIGIN;
  const ep = { authorization: '/authorize', token: '/token', userinfo: '/userinfo', jwks: '/jwks', registration: '/register' };
  const meta = () => metadata(issuer, ep);
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(meta()),
      '/.well-known/oauth-authorization-server': document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: always,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub: grant.sub,
      aud: grant.resources.length ? oneOrMany(grant.resources) : grant.clientId,
      client_id: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: (record) => standardUserinfo(record),
  };
}

const PROFILES = {
  entra, auth0, okta, keycloak, google, github, cognito, authentik, clerk, workos, descope, stytch, keycard, generic,
};

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

let ORIGIN; // http://127.0.0.1:PORT, known once listening
let P; // the profile of --idp
let ROUTES; // Map path -> { METHOD: handler }

function route(path) {
  const exact = ROUTES.get(path);
  if (exact) return exact;
  return P.prefixRoutes?.find(([prefix, matches]) => path.startsWith(prefix) && matches(path))?.[2];
}

function logLine(entry) {
  const parts = [`${entry.method} ${entry.path}`];
  if (entry.grant_type !== null) parts.push(`grant_type=${entry.grant_type}`);
  if (entry.client_auth !== null) parts.push(`client_auth=${entry.client_auth}`);
  if (entry.client_id) parts.push(`client_id=${entry.client_id}`);
  for (const key of ['scope', 'resource', 'audience', 'access_type', 'prompt']) {
    if (entry[key] !== null && entry[key] !== undefined) parts.push(`${key}=${JSON.stringify(entry[key])}`);
  }
  console.error(`emulator[${IDP}]: ${parts.join(' ')} -> ${entry.status}`);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/__emulator/log') {
    return req.method === 'GET' ? sendJson(res, 200, LOG) : sendJson(res, 405, { error: 'use GET' });
  }
  const entry = {
    at: new Date().toISOString(),
    method: req.method,
    path: url.pathname,
    status: undefined,
    client_id: null,
    grant_type: null, // token requests only, as are client_auth
    client_auth: null,
    scope: null,
    resource: null,
    audience: null,
    access_type: null,
    prompt: null,
  };
  res.on('finish', () => {
    entry.status = res.statusCode;
    LOG.push(entry);
    logLine(entry);
  });

  const handlers = route(url.pathname);
  if (!handlers) return sendJson(res, 404, { error: 'not_found', error_description: `no ${url.pathname} at this IdP` });
  const handler = handlers[req.method];
  if (!handler) {
    return sendJson(res, 405, { error: 'invalid_request', error_description: `${req.method} not allowed` },
      { allow: Object.keys(handlers).join(', ') });
  }
  try {
    await handler(req, res, url, entry);
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    if (err.oauth && P.sendTokenError && handlers === TOKEN) return P.sendTokenError(req, res, err);
    return typeof err.body === 'string'
      ? (res.writeHead(err.status, { 'content-type': 'text/plain', ...err.headers }), res.end(err.body))
      : sendJson(res, err.status, err.body, err.headers);
  }
  return undefined;
}

const server = http.createServer((req, res) => {
  if (!ROUTES) return sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
  handle(req, res).catch((err) => {
    console.error(`emulator[${IDP}]: ${req.method} ${req.url} failed:`, err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  });
  return undefined;
});

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

if (!args['ignore-stdin']) {
  // EOF on stdin means the parent is gone (or closed the pipe on purpose):
  // never outlive it. Whatever is written to stdin is ignored.
  process.stdin.on('data', () => {});
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${PORT}: ${err.message}`));

// Listens on 127.0.0.1 only: nothing but this machine reaches the emulator or
// its /__emulator/ endpoint.
server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  ORIGIN = `http://127.0.0.1:${port}`;
  // Issuers and documents name the real port, so the profile is built now.
  P = PROFILES[IDP]();
  ROUTES = new Map(Object.entries(P.routes()));
  process.stdout.write(`${JSON.stringify({ origin: ORIGIN, port, issuer: P.issuer })}\n`);
});
