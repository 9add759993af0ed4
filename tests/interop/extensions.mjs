#!/usr/bin/env node
// MCP's authorization extensions end to end, with the MCP TypeScript SDK (v2) as the client and
// portcullis in gateway mode in front of its sample MCP server:
//
// * Client credentials (`oauth-client-credentials`): a configured client with a secret
//   (ClientCredentialsProvider, client_secret_basic) and one with public keys
//   (PrivateKeyJwtProvider, private_key_jwt) get tokens with no user and call tools; a policy rule
//   `deny_if = "machine"` keeps them off a server meant for people, and the audit log marks them.
// * Enterprise-managed authorization (`enterprise-managed-authorization`): the test IdP, as an
//   enterprise IdP, signs alice in to its client, exchanges her ID token (RFC 8693) for an ID-JAG for
//   this gateway and server (the SDK's discoverAndRequestJwtAuthGrant), and the SDK's
//   CrossAppAccessProvider presents it with the jwt-bearer grant: tools are called as alice with no
//   consent page. Forged, replayed, expired, wrong-audience and wrong-resource assertions are refused
//   with invalid_grant; the IdP's own policy refuses mallory.
// * `portcullis doctor` finds both extensions advertised and served.
//
// Usage: node tests/interop/extensions.mjs [--bin PATH]
// Prints one line per check, then `N passed, N failed`; exits 1 if any failed.

import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import {
  Client,
  ClientCredentialsProvider,
  CrossAppAccessProvider,
  PrivateKeyJwtProvider,
  StreamableHTTPClientTransport,
  discoverAndRequestJwtAuthGrant,
} from '@modelcontextprotocol/client';

import { authorize } from './harness/agent.mjs';
import { echoRequest, postMcp, resultText } from './harness/checks.mjs';
import { killAll } from './harness/processes.mjs';
import { runChecks, step } from './harness/report.mjs';
import { startIdp, startPortcullis, startUpstream } from './harness/stack.mjs';

const { values: args } = parseArgs({ options: { bin: { type: 'string', default: 'target/debug/portcullis' } } });
const TIMEOUT_MS = 60_000;
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const NIGHTLY = { id: 'nightly', secret: 'nightly secret+/=' };
const CHAT = { id: 'chat-app', secret: 'chat-secret' };
/** The application users sign in to at the enterprise IdP (idp.mjs --token-exchange). */
const ENTERPRISE = { id: 'enterprise-chat', secret: 'secret-chat' };


/** Connects with `authProvider`, calls the sample server's `echo`; the echoed text, or the error. */
async function callEcho(mcpUrl, authProvider, text) {
  const client = new Client({ name: 'portcullis-extensions-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider });
  try {
    await client.connect(transport);
    const result = await client.callTool({ name: 'echo', arguments: { text } });
    return resultText(result);
  } finally {
    await client.close().catch(() => {});
  }
}

function basic(id, secret) {
  const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
}

/** A token request to `tokenEndpoint` with HTTP Basic client credentials: `{ status, body }`. */
async function tokenRequest(tokenEndpoint, client, form) {
  const res = await fetch(tokenEndpoint, {
    method: 'POST',
    headers: { authorization: basic(client.id, client.secret), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: await res.json() };
}

/** `user` signs in to the enterprise application at the IdP (code flow with PKCE): its ID token. */
async function signInAtIdp(idp, user) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const redirectUri = 'http://127.0.0.1:9/callback';
  const url = new URL(idp.metadata.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: ENTERPRISE.id,
    redirect_uri: redirectUri,
    scope: 'openid',
    state: crypto.randomBytes(8).toString('hex'),
    nonce: crypto.randomBytes(8).toString('hex'),
    code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    login_hint: user,
  }).toString();
  const back = await authorize(url, redirectUri, { signal: AbortSignal.timeout(TIMEOUT_MS) });
  const code = back.searchParams.get('code');
  if (!code) throw new Error(`the IdP answered ${back}`);
  const { status, body } = await tokenRequest(idp.metadata.token_endpoint, ENTERPRISE, {
    grant_type: 'authorization_code',
    code,
    redirect_uri: redirectUri,
    code_verifier: verifier,
  });
  if (status !== 200 || !body.id_token) throw new Error(`IdP token endpoint: ${status} ${JSON.stringify(body)}`);
  return body.id_token;
}

/** The lines of the audit log, parsed. */
function auditLines(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-extensions-'));
  const audit = path.join(dir, 'audit.log');
  try {
    const idp = await startIdp('rfc8707', { timeoutMs: TIMEOUT_MS, tokenExchange: true });
    const upstream = await startUpstream(args.bin, { timeoutMs: TIMEOUT_MS });

    // The private_key_jwt client's key pair: the private JWK stays with the client, the public one
    // is configured at the gateway.
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signerKey = privateKey.export({ format: 'jwk' });
    const jwksFile = path.join(dir, 'signer.jwks.json');
    const publicJwk = { ...publicKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'signer-1' };
    fs.writeFileSync(jwksFile, JSON.stringify({ keys: [publicJwk] }));

    const server = (p, extra = []) => [
      '[[server]]',
      `path = "/${p}"`,
      `upstream = "${upstream.url}"`,
      'scopes = ["mcp:tools"]',
      'gateway = true',
      ...extra,
      '',
    ];
    const configFor = (port) => [
      `public_url = "http://127.0.0.1:${port}"`,
      `listen = "127.0.0.1:${port}"`,
      '',
      '[store]',
      `url = ${JSON.stringify(`sqlite://${path.join(dir, 'portcullis.db')}`)}`,
      '[audit]',
      `path = ${JSON.stringify(audit)}`,
      '[gateway]',
      `operator_key_file = ${JSON.stringify(path.join(dir, 'operator.key'))}`,
      '[[gateway.clients]]',
      `client_id = "${NIGHTLY.id}"`,
      `client_secret = ${JSON.stringify(NIGHTLY.secret)}`,
      'grant_types = ["client_credentials"]',
      'scopes = ["mcp:tools"]',
      '[[gateway.clients]]',
      'client_id = "signer"',
      `jwks_file = ${JSON.stringify(jwksFile)}`,
      'grant_types = ["client_credentials"]',
      '[[gateway.clients]]',
      `client_id = "${CHAT.id}"`,
      `client_secret = "${CHAT.secret}"`,
      `grant_types = ["${JWT_BEARER}"]`,
      '[[gateway.trusted_idps]]',
      `issuer = "${idp.issuer}"`,
      `clients = ["${CHAT.id}"]`,
      'subject_prefix = "acme:"',
      '',
      ...server('mcp'),
      ...server('people', ['[[server.policy]]', 'name = "people-only"', 'deny_if = "machine"']),
    ].join('\n');
    const { gate } = await startPortcullis(args.bin, configFor, dir, { timeoutMs: TIMEOUT_MS });
    const issuer = gate.url;
    const mcp = `${gate.url}/mcp`;
    const people = `${gate.url}/people`;
    const metadata = await (await fetch(`${gate.url}/.well-known/oauth-authorization-server`)).json();

    await step('AS metadata advertises client_credentials, jwt-bearer, private_key_jwt and its algorithms', () => {
      const grants = metadata.grant_types_supported ?? [];
      const methods = metadata.token_endpoint_auth_methods_supported ?? [];
      const algs = metadata.token_endpoint_auth_signing_alg_values_supported ?? [];
      const ok = grants.includes('client_credentials') && grants.includes(JWT_BEARER)
        && methods.includes('client_secret_basic') && methods.includes('private_key_jwt') && algs.includes('ES256');
      return ok || JSON.stringify({ grants, methods, algs });
    });

    await step('portcullis doctor checks both extensions and finds nothing wrong', async () => {
      const stdout = await new Promise((resolve, reject) => {
        execFile(args.bin, ['doctor', mcp, '--json'], { timeout: TIMEOUT_MS }, (err, out) => {
          if (err && err.code !== 1) reject(err);
          else resolve(out);
        });
      });
      const checks = JSON.parse(stdout).checks;
      const ext = checks.filter((c) => c.id.startsWith('ext.'));
      const ok = ext.length === 4 && ext.every((c) => c.status === 'pass') && !checks.some((c) => c.status === 'fail');
      return ok || JSON.stringify(checks.filter((c) => c.id.startsWith('ext.') || c.status === 'fail'));
    });

    // --- Client credentials ---------------------------------------------------------------------
    await step('client credentials (client_secret_basic, ClientCredentialsProvider): tools/call', async () => {
      const provider = new ClientCredentialsProvider({
        clientId: NIGHTLY.id,
        clientSecret: NIGHTLY.secret,
        expectedIssuer: issuer,
      });
      const text = await callEcho(mcp, provider, 'from a machine');
      const at = claimsOf(provider.tokens().access_token);
      const ok = text === 'from a machine' && at.sub === `client:${NIGHTLY.id}` && at.gty === 'client_credentials'
        && !provider.tokens().refresh_token;
      return ok || `echo ${text}, token ${JSON.stringify(at)}`;
    });
    await step('client credentials (private_key_jwt, PrivateKeyJwtProvider): tools/call', async () => {
      const provider = new PrivateKeyJwtProvider({
        clientId: 'signer',
        privateKey: signerKey,
        algorithm: 'ES256',
        expectedIssuer: issuer,
      });
      const text = await callEcho(mcp, provider, 'signed');
      return text === 'signed' || `echo ${text}`;
    });
    await step('a machine caller is refused by the policy of a server meant for people (403, people-only)', async () => {
      const provider = new ClientCredentialsProvider({
        clientId: NIGHTLY.id,
        clientSecret: NIGHTLY.secret,
        expectedIssuer: issuer,
      });
      try {
        const text = await callEcho(people, provider, 'x');
        return `called: ${text}`;
      } catch (err) {
        return /403|people-only/.test(String(err?.message)) || String(err?.message);
      }
    });
    await step('client credentials refusals: wrong secret 401 invalid_client, wrong grant unauthorized_client', async () => {
      const token = metadata.token_endpoint;
      const cc = { grant_type: 'client_credentials', resource: mcp };
      const wrong = await tokenRequest(token, { id: NIGHTLY.id, secret: 'wrong' }, cc);
      const chat = await tokenRequest(token, CHAT, cc);
      const ok = wrong.status === 401 && wrong.body.error === 'invalid_client'
        && chat.status === 400 && chat.body.error === 'unauthorized_client';
      return ok || JSON.stringify({ wrong, chat });
    });

    // --- Enterprise-managed authorization -------------------------------------------------------
    const aliceIdToken = await signInAtIdp(idp, 'alice');
    const grants = [];
    const exchange = (ctx, overrides = {}) => discoverAndRequestJwtAuthGrant({
      idpUrl: idp.issuer,
      audience: ctx.authorizationServerUrl,
      resource: ctx.resourceUrl,
      idToken: aliceIdToken,
      clientId: ENTERPRISE.id,
      clientSecret: ENTERPRISE.secret,
      scope: ctx.scope,
      fetchFn: ctx.fetchFn,
      ...overrides,
    });
    await step('enterprise: ID token exchanged at the IdP for an ID-JAG, presented with jwt-bearer: tools/call as alice', async () => {
      const provider = new CrossAppAccessProvider({
        assertion: async (ctx) => {
          const { jwtAuthGrant } = await exchange(ctx);
          grants.push(jwtAuthGrant);
          return jwtAuthGrant;
        },
        clientId: CHAT.id,
        clientSecret: CHAT.secret,
        expectedIssuer: issuer,
      });
      const text = await callEcho(people, provider, 'from alice');
      const at = claimsOf(provider.tokens().access_token);
      const ok = text === 'from alice' && at.sub === 'acme:alice' && at.client_id === CHAT.id
        && at.aud === people && !provider.tokens().refresh_token && grants.length === 1;
      return ok || `echo ${text}, token ${JSON.stringify(at)}, ${grants.length} grants`;
    });
    const present = (assertion) => tokenRequest(metadata.token_endpoint, CHAT, { grant_type: JWT_BEARER, assertion });
    const refusedAsGrant = async (assertion, words) => {
      const { status, body } = await present(assertion);
      const ok = status === 400 && body.error === 'invalid_grant' && words.test(body.error_description ?? '');
      return ok || `${status} ${JSON.stringify(body)}`;
    };
    await step('a replayed ID-JAG is refused (invalid_grant, already used)', () => refusedAsGrant(grants[0], /already used/));
    await step('a forged ID-JAG is refused (invalid_grant, signature)', async () => {
      const [header, payload] = grants[0].split('.');
      const claims = JSON.parse(Buffer.from(payload, 'base64url'));
      const forgedPayload = Buffer.from(JSON.stringify({ ...claims, sub: 'admin', jti: 'forged-1' })).toString('base64url');
      const forged = `${header}.${forgedPayload}.${grants[0].split('.')[2]}`;
      return refusedAsGrant(forged, /signature/i);
    });
    await step('an expired ID-JAG is refused (invalid_grant, expired)', async () => {
      const now = Math.floor(Date.now() / 1000);
      const res = await fetch(`${idp.issuer}/__test/id-jag`, {
        method: 'POST',
        body: JSON.stringify({ sub: 'alice', aud: issuer, resource: mcp, client_id: CHAT.id, iat: now - 600, exp: now - 300 }),
      });
      return refusedAsGrant((await res.json()).assertion, /expired/);
    });
    const ctx = { authorizationServerUrl: issuer, resourceUrl: mcp, scope: 'mcp:tools', fetchFn: fetch };
    await step('an ID-JAG for another authorization server is refused (invalid_grant, aud)', async () => {
      const { jwtAuthGrant } = await exchange(ctx, { audience: 'https://other-as.example.com' });
      return refusedAsGrant(jwtAuthGrant, /aud/);
    });
    await step('an ID-JAG for another resource is refused (invalid_grant, resource)', async () => {
      const { jwtAuthGrant } = await exchange(ctx, { resource: 'https://elsewhere.example.com/mcp' });
      return refusedAsGrant(jwtAuthGrant, /resource/);
    });
    await step('an ID-JAG presented by a client without the grant is refused (unauthorized_client)', async () => {
      const { jwtAuthGrant } = await exchange(ctx);
      const { status, body } = await tokenRequest(metadata.token_endpoint, NIGHTLY, { grant_type: JWT_BEARER, assertion: jwtAuthGrant });
      const ok = status === 400 && body.error === 'unauthorized_client';
      return ok || `${status} ${JSON.stringify(body)}`;
    });
    await step('the enterprise IdP refuses the exchange for a user its policy excludes (mallory)', async () => {
      const idToken = await signInAtIdp(idp, 'mallory');
      try {
        await exchange(ctx, { idToken });
        return 'exchanged';
      } catch (err) {
        return /access_denied|may not use/.test(String(err?.message)) || String(err?.message);
      }
    });

    await step('the audit log marks machine callers and records both grants', () => {
      const lines = auditLines(audit);
      const issued = lines.filter((l) => l.event === 'gateway.token_issued');
      const requests = lines.filter((l) => l.event === 'mcp.request' && l.decision);
      const machineCall = requests.find((l) => l.subject === `client:${NIGHTLY.id}` && l.caller === 'machine' && l.name === 'echo');
      const refusedMachine = requests.find((l) => l.server === '/people' && l.rule === 'people-only' && l.caller === 'machine');
      const aliceCall = requests.find((l) => l.subject === 'acme:alice' && l.caller === 'user' && l.name === 'echo');
      const ok = issued.some((l) => l.grant_type === 'client_credentials' && l.subject === `client:${NIGHTLY.id}`)
        && issued.some((l) => l.grant_type === JWT_BEARER && l.subject === 'acme:alice')
        && machineCall && refusedMachine && aliceCall;
      const text = fs.readFileSync(audit, 'utf8');
      const leaked = [NIGHTLY.secret, CHAT.secret, grants[0]].filter((s) => text.includes(s));
      return (ok && leaked.length === 0) || `ok=${Boolean(ok)}, leaked ${leaked.length}: ${JSON.stringify(lines.slice(-12))}`;
    });
    await step('the upstream never sees the access token', async () => {
      const provider = new ClientCredentialsProvider({ clientId: NIGHTLY.id, clientSecret: NIGHTLY.secret, expectedIssuer: issuer });
      const client = new Client({ name: 'portcullis-extensions-test', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(mcp), { authProvider: provider }));
      const seen = resultText(await client.callTool({ name: 'whoami', arguments: {} }));
      await client.close();
      const token = provider.tokens().access_token;
      return (!seen.includes(token) && !/authorization/i.test(seen)) || seen;
    });
    // A raw request with a token obtained by the grant, as any HTTP client would send it.
    await step('a client_credentials token works for a plain JSON-RPC POST', async () => {
      const { body } = await tokenRequest(metadata.token_endpoint, NIGHTLY, { grant_type: 'client_credentials', resource: mcp });
      const res = await postMcp(mcp, echoRequest(1, 'raw'), body.access_token);
      const text = await res.text();
      return (res.status === 200 && text.includes('raw')) || `${res.status} ${text}`;
    });
  } finally {
    await killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runChecks(main);
