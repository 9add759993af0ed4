#!/usr/bin/env node
// Loopback OpenID Provider for portcullis integration tests.
//
// Built on `oidc-provider` so that the access tokens the tests present to
// portcullis are minted by a real, spec-following authorization server rather
// than hand-rolled by the test itself. See README.md next to this file.
//
// Usage:
//   node tests/interop/idp.mjs --profile <rfc8707|aud-client-id|resource-claim|opaque>
//                              [--dcr] [--token-exchange] [--port N] [--keys-file PATH] [--ignore-stdin]
//
// With --token-exchange it is also an enterprise IdP (MCP enterprise-managed
// authorization): its token endpoint takes RFC 8693 token exchanges of its own
// ID tokens for identity assertion JWT authorization grants (ID-JAG).
//
// Contract with the parent process:
//   * stdout carries exactly one line, `{"issuer":"http://127.0.0.1:PORT","port":PORT}`,
//     printed once the server accepts connections. Everything else goes to stderr.
//   * The process exits when its stdin reaches EOF (the parent died or dropped
//     the pipe), on SIGTERM and on SIGINT.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

// stdout is reserved for the readiness line, which the parent parses. The
// provider prints its development notices with console.info (i.e. stdout), so
// every console method is routed to stderr before the library is loaded.
const writeStdout = process.stdout.write.bind(process.stdout);
for (const method of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[method] = (...args) => console.error(...args);
}

const { Provider, errors } = await import('oidc-provider');

// ---------------------------------------------------------------------------
// Command line and environment
// ---------------------------------------------------------------------------

const PROFILES = new Set(['rfc8707', 'aud-client-id', 'resource-claim', 'opaque']);

function fail(message) {
  console.error(`idp: ${message}`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      profile: { type: 'string' },
      port: { type: 'string', default: '0' },
      'keys-file': { type: 'string' },
      // Dynamic Client Registration (RFC 7591), as MCP clients use it.
      dcr: { type: 'boolean', default: false },
      // RFC 8693 token exchange of ID tokens for ID-JAGs (enterprise IdP).
      'token-exchange': { type: 'boolean', default: false },
      // For running the IdP by hand in the background, where stdin is
      // /dev/null and would otherwise make it exit at once.
      'ignore-stdin': { type: 'boolean', default: false },
    },
    strict: true,
  }));
} catch (err) {
  fail(err.message);
}

const PROFILE = args.profile;
if (!PROFILES.has(PROFILE)) {
  fail(`--profile must be one of: ${[...PROFILES].join(', ')}`);
}

const DCR = args.dcr;
const TOKEN_EXCHANGE = args['token-exchange'];

const PORT = Number(args.port);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  fail('--port must be an integer between 0 and 65535');
}

function positiveIntFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) fail(`${name} must be a positive integer`);
  return value;
}

// Short lifetimes let tests exercise expiry without sleeping for minutes.
const ACCESS_TOKEN_TTL = positiveIntFromEnv('IDP_AT_TTL', 600);
const LOG_REQUESTS = process.env.IDP_LOG === '1';

// ---------------------------------------------------------------------------
// Clients, scopes, resources
// ---------------------------------------------------------------------------

// The JWS algorithm of every token issued to a client. Access-token signing is
// chosen per client (not per request) in getResourceServerInfo below, which is
// the hook oidc-provider consults for JWT access tokens.
const CLIENTS = [
  { id: 'client-rs', secret: 'secret-rs', alg: 'RS256' },
  { id: 'client-es256', secret: 'secret-es', alg: 'ES256' },
];
const ALG_BY_CLIENT = new Map(CLIENTS.map((c) => [c.id, c.alg]));

// The resource server's own client (portcullis), used only to call the RFC 7662
// introspection endpoint: no grants, no redirects.
const INTROSPECTION_CLIENT = { id: 'portcullis-rs', secret: 'secret-introspect' };

// Enterprise-managed authorization: the client users sign in to at this IdP,
// and the client_id the same application has at the MCP authorization server
// (the mapping an administrator sets up out of band, extension section 6.1).
const ENTERPRISE_CLIENT = { id: 'enterprise-chat', secret: 'secret-chat', mcpClientId: 'chat-app' };
// Users the IdP's policy does not let use MCP servers through the exchange.
const ENTERPRISE_DENIED = new Set(['mallory']);
const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const ID_JAG_TYPE = 'urn:ietf:params:oauth:token-type:id-jag';
const ID_JAG_TTL = 300;

// Scopes a resource server (an MCP server behind portcullis) understands.
// Requested scopes outside this list are silently dropped from access tokens.
const RESOURCE_SCOPES = 'mcp:tools mcp:admin';

// Stand-in resource used by the profiles that tolerate a request without a
// `resource` parameter. A URN rather than a URL so it can never collide with a
// resource a test asks for on purpose.
const DEFAULT_RESOURCE = 'urn:portcullis-test-idp:default-resource';

// Subject of authorization_code logins when the request carries no login_hint.
const DEFAULT_ACCOUNT = 'test-user';
// The `groups` claim of the access tokens of some test accounts.
const ACCOUNT_GROUPS = { alice: ['finance', 'staff'], bob: ['staff'] };

// Profiles whose access tokens name the requested resource in `aud` and
// therefore need one.
const RESOURCE_REQUIRED = new Set(['rfc8707', 'opaque']);

function isAcceptableResource(value) {
  const url = URL.parse(value);
  if (!url) return false;
  return url.protocol === 'https:' || (url.protocol === 'http:' && url.hostname === '127.0.0.1');
}

// ---------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------

// Key state: the active RS256 and ES256 private JWKs, plus RS256 keys that
// were rotated out with ?keep_old=1 and are still published in the JWKS.
function generateSigningKey(alg) {
  // The key leaves generateKeyPairSync as PKCS#8 and is re-imported before the
  // JWK export. Exporting the generated KeyObject itself can deadlock Node 20:
  // the export holds the key's mutex while allocating, and a garbage
  // collection at that moment runs the finished key-generation job's
  // destructor, which takes the same mutex (seen as a hang in about 1 start
  // in 100).
  const encoding = { privateKeyEncoding: { type: 'pkcs8', format: 'pem' } };
  const { privateKey: pem } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048, ...encoding })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256', ...encoding });
  const jwk = crypto.createPrivateKey(pem).export({ format: 'jwk' });
  // A random kid (rather than a thumbprint) keeps kids unique even if a test
  // were to re-import the same key material.
  const kid = `${alg.toLowerCase()}-${crypto.randomBytes(9).toString('base64url')}`;
  return { ...jwk, kid, use: 'sig', alg };
}

function loadKeys(file) {
  let parsed;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    fail(`cannot read keys file ${file}: ${err.message}`);
  }
  const ok = parsed
    && parsed.rs256?.kty === 'RSA' && parsed.rs256.d && parsed.rs256.kid
    && parsed.es256?.kty === 'EC' && parsed.es256.d && parsed.es256.kid
    && (parsed.retired === undefined || Array.isArray(parsed.retired));
  if (!ok) fail(`keys file ${file} is not in the expected {"rs256","es256","retired"} format`);
  return { rs256: parsed.rs256, es256: parsed.es256, retired: parsed.retired ?? [] };
}

function saveKeys(file, keys) {
  // Write-then-rename so a concurrently starting IdP never reads a partial file.
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.writeFileSync(tmp, `${JSON.stringify(keys, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

const KEYS_FILE = args['keys-file'] ? path.resolve(args['keys-file']) : undefined;
let keys;
if (KEYS_FILE && fs.existsSync(KEYS_FILE)) {
  keys = loadKeys(KEYS_FILE);
} else {
  keys = { rs256: generateSigningKey('RS256'), es256: generateSigningKey('ES256'), retired: [] };
  if (KEYS_FILE) saveKeys(KEYS_FILE, keys);
}

// ---------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------

// Session and interaction cookies must stay valid when the provider instance
// is replaced by a key rotation, so the cookie keys live for the process.
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];

// Process-wide storage for the provider's stateful artifacts (sessions,
// interactions, grants, codes, refresh tokens). oidc-provider's built-in
// memory adapter gives every Provider instance its own store, which would
// make a key rotation forget every refresh token and login; one store shared
// by all instances keeps them across the swap.
const STORE = new Map(); // "Model:id" -> { payload, expiresAt }
const GRANT_MEMBERS = new Map(); // grantId -> Set of "Model:id"
const SESSION_BY_UID = new Map(); // session uid -> session id
const BY_USER_CODE = new Map(); // user code -> id

class SharedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    STORE.set(key, { payload, expiresAt });
    if (payload.grantId) {
      if (!GRANT_MEMBERS.has(payload.grantId)) GRANT_MEMBERS.set(payload.grantId, new Set());
      GRANT_MEMBERS.get(payload.grantId).add(key);
    }
    if (this.model === 'Session' && payload.uid) SESSION_BY_UID.set(payload.uid, id);
    if (payload.userCode) BY_USER_CODE.set(payload.userCode, id);
  }

  async find(id) {
    const key = this.key(id);
    const entry = STORE.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      STORE.delete(key);
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    const id = SESSION_BY_UID.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = BY_USER_CODE.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = STORE.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    STORE.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of GRANT_MEMBERS.get(grantId) ?? []) STORE.delete(key);
    GRANT_MEMBERS.delete(grantId);
  }
}

function buildProvider(issuer, keyState) {
  const kidByAlg = { RS256: keyState.rs256.kid, ES256: keyState.es256.kid };

  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients: [
      ...CLIENTS.map((c) => ({
        client_id: c.id,
        client_secret: c.secret,
        // `native` lets the loopback redirect URI match on any port (RFC 8252
        // section 7.3), so a test may run its own callback listener.
        application_type: 'native',
        grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        // Registered method only; oidc-provider accepts client_secret_post and
        // client_secret_basic interchangeably for secret-based clients.
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: c.alg,
        scope: `openid offline_access ${RESOURCE_SCOPES}`,
      })),
      ...(TOKEN_EXCHANGE ? [{
        client_id: ENTERPRISE_CLIENT.id,
        client_secret: ENTERPRISE_CLIENT.secret,
        application_type: 'native',
        grant_types: ['authorization_code', TOKEN_EXCHANGE_GRANT],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        token_endpoint_auth_method: 'client_secret_basic',
        id_token_signed_response_alg: 'ES256',
        scope: 'openid',
      }] : []),
      {
        client_id: INTROSPECTION_CLIENT.id,
        client_secret: INTROSPECTION_CLIENT.secret,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],

    // Active keys first: for ID tokens oidc-provider signs with the first key
    // matching the algorithm. Retired keys stay published for verification.
    jwks: { keys: [keyState.rs256, keyState.es256, ...keyState.retired] },

    // Code flow only: keeps discovery free of implicit/hybrid noise.
    responseTypes: ['code'],
    scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES.split(' ')],
    claims: { openid: ['sub'] },
    cookies: { keys: COOKIE_KEYS },

    features: {
      // Logins are auto-approved by /__test/interaction (see below).
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },

      // Open registration (no initial access token), the way MCP clients
      // expect it. Registered clients get the library defaults: application
      // type `web` unless they say `native`, `client_secret_basic` unless they
      // name another method, and a generated id and secret.
      registration: { enabled: DCR },

      // RFC 7662, for the opaque tokens of the `opaque` profile. Only the
      // resource server's client, or the client a token was issued to, learns
      // anything about a token; anyone else gets {"active":false}.
      introspection: {
        enabled: PROFILE === 'opaque',
        async allowedPolicy(ctx, caller, token) {
          return caller.clientId === INTROSPECTION_CLIENT.id || caller.clientId === token.clientId;
        },
      },
      resourceIndicators: {
        enabled: true,

        // Called when a request carries no `resource`. With `oneOf` it picks
        // among previously granted resources; keep the library default there.
        async defaultResource(ctx, client, oneOf) {
          if (oneOf) return oneOf;
          // The enterprise application only signs users in (openid): its access token names no resource.
          if (RESOURCE_REQUIRED.has(PROFILE) && client?.clientId !== ENTERPRISE_CLIENT.id) {
            throw new errors.InvalidTarget('this authorization server requires a resource parameter (RFC 8707)');
          }
          return DEFAULT_RESOURCE;
        },

        // Code and refresh exchanges usually omit `resource`; reuse the one
        // granted at the authorization endpoint so they still yield JWTs.
        async useGrantedResource() {
          return true;
        },

        // The profile switch: decides `aud`, format, lifetime and signing key
        // of every access token.
        async getResourceServerInfo(ctx, resourceIndicator, client) {
          if (resourceIndicator !== DEFAULT_RESOURCE && !isAcceptableResource(resourceIndicator)) {
            throw new errors.InvalidTarget('resource must be an https:// URL or an http://127.0.0.1 URL');
          }
          let audience;
          switch (PROFILE) {
            case 'rfc8707': audience = resourceIndicator; break;
            case 'aud-client-id': audience = client.clientId; break;
            case 'resource-claim': audience = issuer; break;
            case 'opaque':
              // Opaque strings: the resource server learns `aud` and the rest
              // only through introspection.
              return {
                scope: RESOURCE_SCOPES,
                audience: resourceIndicator,
                accessTokenFormat: 'opaque',
                accessTokenTTL: ACCESS_TOKEN_TTL,
              };
            default: throw new Error(`unknown profile ${PROFILE}`);
          }
          // Dynamically registered clients sign with RS256.
          const alg = ALG_BY_CLIENT.get(client.clientId) ?? 'RS256';
          return {
            scope: RESOURCE_SCOPES,
            audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: ACCESS_TOKEN_TTL,
            // An explicit kid makes "new tokens use the rotated key" hold even
            // while an older RSA key is still in the keystore.
            jwt: { sign: { alg, kid: kidByAlg[alg] } },
          };
        },
      },
    },

    // Keycard-like profile: the audience is the issuer (the "zone") and the
    // protected resource travels in its own claim.
    async extraTokenClaims(ctx, token) {
      const resource = token.resourceServer?.identifier();
      if (PROFILE === 'resource-claim' && resource && resource !== DEFAULT_RESOURCE) {
        return { resource };
      }
      // JWT access tokens of client_credentials grants carry the client id as
      // `sub`; introspection answers would otherwise have none for them.
      if (PROFILE === 'opaque' && !token.accountId) {
        return { sub: token.clientId };
      }
      // Test accounts in groups, for policies that read them (login_hint picks the account).
      if (token.accountId && ACCOUNT_GROUPS[token.accountId]) {
        return { groups: ACCOUNT_GROUPS[token.accountId] };
      }
      return undefined;
    },

    // A refresh token for every authorization code a client allowed to refresh
    // redeems, with or without `offline_access`: MCP clients ask for the scopes
    // of the protected resource's challenge, which seldom include it, and expect
    // to refresh. Not bound to the login session either, so a refresh works
    // without a browser cookie.
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    async expiresWithSession() {
      return false;
    },

    interactions: {
      url(ctx, interaction) {
        return `/__test/interaction/${interaction.uid}`;
      },
    },

    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },

    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Grant: 86400,
      Session: 86400,
      RefreshToken: 86400,
    },
  });

  if (TOKEN_EXCHANGE) {
    provider.registerGrantType(
      TOKEN_EXCHANGE_GRANT,
      (ctx) => exchangeForIdJag(ctx, issuer, keyState),
      ['subject_token', 'subject_token_type', 'requested_token_type', 'audience', 'resource', 'scope'],
    );
  }

  provider.on('server_error', (ctx, err) => {
    console.error(`idp: server_error on ${ctx.method} ${ctx.path}:`, err);
  });

  return { provider, handler: provider.callback() };
}

// ---------------------------------------------------------------------------
// Enterprise IdP: ID token in, ID-JAG out (RFC 8693; MCP enterprise-managed
// authorization section 4)
// ---------------------------------------------------------------------------

function base64urlJson(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** A JWT signed ES256 with the IdP's current ES256 key. */
function signEs256(keyState, header, claims) {
  const input = `${base64urlJson({ alg: 'ES256', kid: keyState.es256.kid, ...header })}.${base64urlJson(claims)}`;
  const key = crypto.createPrivateKey({ key: keyState.es256, format: 'jwk' });
  const signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

/** The claims of an ID token this IdP issued, or undefined if it is not one (signature, iss, exp). */
function verifiedIdToken(token, issuerUrl, keyState) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return undefined;
  let header;
  let claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return undefined;
  }
  const jwk = [keyState.rs256, keyState.es256, ...keyState.retired].find((k) => k.kid === header.kid);
  if (!jwk || jwk.alg !== header.alg) return undefined;
  const { d, ...publicJwk } = jwk;
  const key = crypto.createPublicKey({ key: publicJwk, format: 'jwk' });
  const data = Buffer.from(`${parts[0]}.${parts[1]}`);
  const signature = Buffer.from(parts[2], 'base64url');
  const ok = header.alg === 'ES256'
    ? crypto.verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
    : crypto.verify('sha256', data, key, signature);
  if (!ok || claims.iss !== issuerUrl || !(claims.exp > Date.now() / 1000)) return undefined;
  return claims;
}

/** An ID-JAG as the extension's section 4.3 describes it. */
function mintIdJag(keyState, claims) {
  const now = Math.floor(Date.now() / 1000);
  return signEs256(keyState, { typ: 'oauth-id-jag+jwt' }, {
    jti: crypto.randomBytes(12).toString('base64url'),
    iat: now,
    exp: now + ID_JAG_TTL,
    ...claims,
  });
}

async function exchangeForIdJag(ctx, issuerUrl, keyState) {
  const { params, client } = ctx.oidc;
  if (params.requested_token_type !== ID_JAG_TYPE) {
    throw new errors.InvalidRequest(`requested_token_type must be ${ID_JAG_TYPE}`);
  }
  if (params.subject_token_type !== ID_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`subject_token_type must be ${ID_TOKEN_TYPE}`);
  }
  if (!params.audience || !params.resource) {
    throw new errors.InvalidRequest('audience and resource are required');
  }
  const idToken = verifiedIdToken(params.subject_token, issuerUrl, keyState);
  // Section 4.1: the subject token must have been issued to the client asking.
  const audiences = Array.isArray(idToken?.aud) ? idToken.aud : [idToken?.aud];
  if (!idToken || !audiences.includes(client.clientId)) {
    throw new errors.InvalidGrant('subject_token is not a valid ID token issued to this client');
  }
  if (client.clientId !== ENTERPRISE_CLIENT.id) {
    throw new errors.UnauthorizedClient('this client is not set up for MCP servers');
  }
  // The administrator's policy: who may use MCP servers this way.
  if (ENTERPRISE_DENIED.has(idToken.sub)) {
    throw new errors.AccessDenied(`${idToken.sub} may not use MCP servers`);
  }
  const scope = typeof params.scope === 'string' && params.scope ? params.scope : 'mcp:tools';
  ctx.body = {
    issued_token_type: ID_JAG_TYPE,
    access_token: mintIdJag(keyState, {
      iss: issuerUrl,
      sub: idToken.sub,
      aud: params.audience,
      resource: params.resource,
      client_id: ENTERPRISE_CLIENT.mcpClientId,
      scope,
      email: `${idToken.sub}@acme.example`,
    }),
    token_type: 'N_A',
    scope,
    expires_in: ID_JAG_TTL,
  };
}

// ---------------------------------------------------------------------------
// HTTP front: test-only endpoints, RFC 8414 alias, JWKS fetch counter
// ---------------------------------------------------------------------------

let issuer;
let current; // { provider, handler }; replaced wholesale on key rotation
let jwksFetches = 0;

function sendJson(res, status, body) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
  });
  res.end(payload);
}

function rotate(keepOld) {
  const next = {
    rs256: generateSigningKey('RS256'),
    es256: keys.es256,
    retired: keepOld ? [keys.rs256, ...keys.retired] : [],
  };
  // Build before swapping so a configuration error leaves the old one serving.
  // Grants, sessions and refresh tokens survive through SharedMemoryAdapter.
  const built = buildProvider(issuer, next);
  keys = next;
  current = built;
  if (KEYS_FILE) saveKeys(KEYS_FILE, keys);
  return keys.rs256.kid;
}

// Completes login and consent without a UI: the subject is the login_hint
// parameter (or DEFAULT_ACCOUNT) and every requested scope and resource is
// granted. Reached by following the redirects of the authorization endpoint
// with a cookie jar.
async function autoInteraction(req, res) {
  const { provider } = current;
  const interaction = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = interaction;

  if (prompt.name === 'login') {
    const accountId = typeof params.login_hint === 'string' && params.login_hint
      ? params.login_hint
      : DEFAULT_ACCOUNT;
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
    return;
  }

  if (prompt.name === 'consent') {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { details } = prompt;
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    if (details.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const savedGrantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId: savedGrantId } }, { mergeWithLastSubmission: true });
    return;
  }

  sendJson(res, 500, { error: `unsupported prompt ${prompt.name}` });
}

async function readForm(req, limit = 64 * 1024) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new Error('request body too large');
  }
  return new URLSearchParams(body);
}

// Revokes one opaque access token (authorization code, refresh or
// client_credentials grant), so that a test can watch introspection turn it
// inactive. JWT access tokens are not stored, so they cannot be revoked.
async function revoke(token) {
  const { provider } = current;
  for (const model of [provider.AccessToken, provider.ClientCredentials]) {
    const found = await model.find(token, { ignoreExpiration: true });
    if (found) {
      await found.destroy();
      return true;
    }
  }
  return false;
}

async function handleTestEndpoint(req, res, url) {
  if (url.pathname === '/__test/revoke') {
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'use POST' });
    const token = (await readForm(req)).get('token');
    if (!token) return sendJson(res, 400, { error: 'form field token is required' });
    const revoked = await revoke(token);
    return sendJson(res, revoked ? 200 : 404, { revoked });
  }
  // Forgets every refresh token, as an IdP does when sessions are revoked or
  // expire: a later refresh_token grant gets invalid_grant.
  if (url.pathname === '/__test/end-sessions') {
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'use POST' });
    let ended = 0;
    for (const key of [...STORE.keys()]) {
      if (key.startsWith('RefreshToken:')) {
        STORE.delete(key);
        ended += 1;
      }
    }
    return sendJson(res, 200, { ended });
  }
  if (url.pathname === '/__test/rotate') {
    if (req.method !== 'POST') return sendJson(res, 405, { error: 'use POST' });
    const kid = rotate(url.searchParams.get('keep_old') === '1');
    return sendJson(res, 200, { kid });
  }
  // An ID-JAG with the claims given (JSON) over the usual ones, signed with the
  // IdP's real key: for assertions no exchange would issue (expired ones).
  if (url.pathname === '/__test/id-jag') {
    if (req.method !== 'POST' || !TOKEN_EXCHANGE) return sendJson(res, 405, { error: 'POST, with --token-exchange' });
    let body = '';
    for await (const chunk of req) body += chunk;
    const claims = JSON.parse(body || '{}');
    return sendJson(res, 200, { assertion: mintIdJag(keys, { iss: issuer, ...claims }) });
  }
  if (url.pathname === '/__test/jwks-fetches') {
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'use GET' });
    return sendJson(res, 200, { count: jwksFetches });
  }
  if (url.pathname.startsWith('/__test/interaction/')) {
    if (req.method !== 'GET') return sendJson(res, 405, { error: 'use GET' });
    return autoInteraction(req, res);
  }
  return sendJson(res, 404, { error: 'unknown test endpoint' });
}

// The server only listens on 127.0.0.1, which is what keeps /__test/ (and the
// IdP as a whole) out of reach of anything but this machine.
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (LOG_REQUESTS) {
    res.on('finish', () => console.error(`idp: ${req.method} ${req.url} -> ${res.statusCode}`));
  }

  if (url.pathname.startsWith('/__test/')) {
    handleTestEndpoint(req, res, url).catch((err) => {
      console.error('idp: test endpoint failed:', err);
      if (!res.headersSent) sendJson(res, 500, { error: String(err?.message ?? err) });
      else res.destroy();
    });
    return;
  }

  // RFC 8414 metadata: oidc-provider only serves the OpenID Connect document,
  // whose content is a superset of what RFC 8414 asks for; serve it verbatim.
  if (url.pathname === '/.well-known/oauth-authorization-server') {
    req.url = `/.well-known/openid-configuration${url.search}`;
  }

  // Lets tests assert how often a verifier refetched the key set.
  if (url.pathname === '/jwks' && req.method === 'GET') {
    jwksFetches += 1;
  }

  current.handler(req, res);
});

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

let shuttingDown = false;
function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  if (LOG_REQUESTS) console.error(`idp: exiting (${reason})`);
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

if (!args['ignore-stdin']) {
  // EOF on stdin means the parent is gone (or closed the pipe on purpose):
  // never outlive it. Whatever is written to stdin is ignored.
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${PORT}: ${err.message}`));

server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  // The issuer carries the real port, so the provider is built only now.
  issuer = `http://127.0.0.1:${port}`;
  current = buildProvider(issuer, keys);
  writeStdout(`${JSON.stringify({ issuer, port })}\n`);
});
