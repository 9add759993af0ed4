#!/usr/bin/env node
// IdP presets end to end: for each IdP portcullis has a preset for, a loopback emulation of that IdP's
// quirks (emulator.mjs: its issuer form, its paths, its tokens' aud and claims, opaque tokens, refused or
// ignored parameters, missing refresh tokens, templated issuers), portcullis configured with nothing but
// the preset's few values (`[dangerous] idp_origin` moves the derived URLs to the emulator), and the MCP
// TypeScript SDK (v2) as the client:
//
// * gateway mode, every preset: the SDK registers with portcullis, the user signs in at the emulated IdP
//   through portcullis, the SDK calls a tool and refreshes; what portcullis sent the IdP (client
//   authentication, `audience`, `access_type`, no `resource` where it is refused) is read back from the
//   emulator's log;
// * verify mode, the presets whose tokens can be bound to the server: the SDK signs in at the emulated
//   IdP itself (registering where the IdP allows it, else as a client registered there) and calls a
//   tool with the IdP's token;
// * the same IdP with a plain configuration (`generic-oidc`, or the issuer as people write it) shows the
//   failure the preset absorbs: a refused token, a gate that cannot start, a parameter never sent;
// * Google's and GitHub's opaque tokens in verify mode, each checked at that IdP's token-info endpoint
//   (tokeninfo's aud; GitHub's check-token API of the server's own app);
// * `portcullis check-config` refuses verify mode for the IdPs whose tokens cannot be bound, and
//   `portcullis doctor` names the IdP and what stops MCP clients there.
//
// Usage: node tests/interop/idps.mjs [--bin PATH] [--only NAME]
// Prints one line per check, then `N passed, N failed`; exits 1 if any failed.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';

import { HeadlessOAuthProvider } from './clients/headless-provider.mjs';
import { runSdkFlow } from './clients/mcp-sdk-flow.mjs';
import { sdk } from './clients/mcp-sdk-v2.mjs';
import { check, echoRequest, expectEcho, postMcp, resultText } from './harness/checks.mjs';
import { freePort, killAll, start } from './harness/processes.mjs';
import { runChecks, step } from './harness/report.mjs';
import {
  GATEWAY_USER, SCOPE, signInAndConsent, startGateway, startPortcullis, startUpstream, tomlString,
} from './harness/stack.mjs';

const { values: args } = parseArgs({
  options: { bin: { type: 'string', default: 'target/debug/portcullis' }, only: { type: 'string' } },
});
const HERE = path.dirname(fileURLToPath(import.meta.url));
const TIMEOUT_MS = 30_000;
const TENANT = '0b5c6f2e-1f9a-4c3e-9b1d-7a2e4c6d8f10';
const OTHER_TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const API_APP = '5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f';
/** portcullis's own client at the IdP (gateway mode). */
const UPSTREAM_CLIENT = { id: 'portcullis', secret: 'upstream secret+/=' };
/** An MCP client registered at the IdP by the operator (verify mode, IdPs without registration). */
const IDP_APP = 'mcp-app';

const CLIENT_METADATA = {
  client_name: 'portcullis IdP preset test',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
};

const tempDirs = [];
function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-idps-'));
  tempDirs.push(dir);
  return dir;
}

/** The emulated IdP; `{ proc, origin, issuer, log() }`. */
async function startEmulator(idp, extra = []) {
  const clientArgs = ['--client', `${UPSTREAM_CLIENT.id}:${UPSTREAM_CLIENT.secret}`, '--public-client', IDP_APP];
  const { proc, match } = await start(`emulator ${idp}`, process.execPath,
    [path.join(HERE, 'emulator.mjs'), '--idp', idp, ...clientArgs, ...extra], {
      ready: /^(\{"origin".*\})$/,
      timeoutMs: TIMEOUT_MS,
    });
  const { origin, issuer } = JSON.parse(match[1]);
  const log = async () => (await fetch(`${origin}/__emulator/log`)).json();
  return { proc, origin, issuer, log };
}

/** Preset parameters as TOML lines. */
function lines(params) {
  return Object.entries(params).map(([k, v]) => `${k} = ${Array.isArray(v) ? `[${v.map(tomlString).join(', ')}]` : tomlString(v)}`);
}

/** portcullis in verify mode with `[server.verify]` = `verify` lines; a cell context. */
async function startVerify(upstream, emulator, verify, { scopes = [SCOPE] } = {}) {
  const dir = tempDir();
  const configFor = (port) => [
    `public_url = "http://127.0.0.1:${port}"`,
    `listen = "127.0.0.1:${port}"`,
    '',
    '[dangerous]',
    `idp_origin = ${tomlString(emulator.origin)}`,
    '',
    '[[server]]',
    'path = "/mcp"',
    `upstream = ${tomlString(upstream.url)}`,
    `scopes = [${scopes.map(tomlString).join(', ')}]`,
    '',
    '[server.verify]',
    ...verify,
    '',
  ].join('\n');
  const { gate } = await startPortcullis(args.bin, configFor, dir, { timeoutMs: TIMEOUT_MS });
  return { gate, mcpUrl: `${gate.url}/mcp`, prmUrl: `${gate.url}/.well-known/oauth-protected-resource/mcp` };
}

/** portcullis in gateway mode signing users in at `[gateway.upstream]` = `upstreamLines`; a cell context. */
async function startGatewayWith(upstream, emulator, upstreamLines) {
  const { gate } = await startGateway(args.bin, tempDir(), {
    upstreamUrl: upstream.url,
    upstreamLogin: [
      '[gateway.upstream]',
      ...upstreamLines,
      `client_id = ${tomlString(UPSTREAM_CLIENT.id)}`,
      `client_secret = ${tomlString(UPSTREAM_CLIENT.secret)}`,
      '',
    ],
    user: GATEWAY_USER,
    client: { client_id: 'configured-client', client_secret: 'unused-secret', name: 'configured' },
    idpOrigin: emulator.origin,
    timeoutMs: TIMEOUT_MS,
  });
  const meta = await (await fetch(`${gate.url}/.well-known/oauth-authorization-server`)).json();
  return {
    gate,
    issuer: meta.issuer,
    asMetadata: meta,
    mcpUrl: `${gate.url}/mcp`,
    prmUrl: `${gate.url}/.well-known/oauth-protected-resource/mcp`,
    fillForm: signInAndConsent,
  };
}

/**
 * The SDK signs in at the IdP the server names (registering there, or as `preregistered`) and calls
 * `echo`; the provider, for its tokens and requests.
 */
async function signInAndCall(ctx, { preregistered } = {}) {
  const redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
  const provider = new HeadlessOAuthProvider({
    redirectUrl,
    clientMetadata: { ...CLIENT_METADATA, redirect_uris: [redirectUrl] },
    preregistered,
  });
  const url = new URL(ctx.mcpUrl);
  let transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  let client = new Client({ name: 'portcullis-idps', version: '1.0.0' });
  try {
    await client.connect(transport);
    throw new Error('connect succeeded without authorization');
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  await transport.finishAuth(provider.callbackParams());
  await client.close().catch(() => {});
  transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  client = new Client({ name: 'portcullis-idps', version: '1.0.0' });
  await client.connect(transport);
  try {
    const result = await client.callTool({ name: 'echo', arguments: { text: 'through the preset' } });
    check(resultText(result) === 'through the preset', `echo answered ${JSON.stringify(result)}`);
  } finally {
    await client.close().catch(() => {});
  }
  return provider;
}

/** A request with `token` is refused with 401; the challenge's error_description. */
async function expectRefusedWith(ctx, token, words) {
  const res = await postMcp(ctx.mcpUrl, echoRequest(9, 'refused'), token);
  await res.body?.cancel();
  const challenge = res.headers.get('www-authenticate') ?? '';
  check(res.status === 401, `expected 401, got ${res.status}`);
  check(challenge.includes(words), `the challenge does not say ${JSON.stringify(words)}: ${challenge}`);
  return challenge;
}

/** portcullis cannot start with `config`; its error output. */
async function expectNoStart(configFor, words) {
  try {
    const { gate } = await startPortcullis(args.bin, configFor, tempDir(), { timeoutMs: TIMEOUT_MS });
    await gate.proc.kill();
  } catch (err) {
    check(err.message.includes(words), `portcullis did not start, but not because of ${JSON.stringify(words)}: ${err.message.slice(0, 600)}`);
    return;
  }
  throw new Error('portcullis started');
}

/** Runs portcullis with `argv`: `{ code, stdout, stderr }`. */
function portcullis(argv) {
  return new Promise((resolve) => {
    execFile(args.bin, argv, { timeout: TIMEOUT_MS }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** `portcullis check-config` on `text`: its exit code and output. */
async function checkConfig(text) {
  const file = path.join(tempDir(), 'portcullis.toml');
  fs.writeFileSync(file, text);
  const { code, stdout, stderr } = await portcullis(['check-config', file]);
  return { code, output: stdout + stderr };
}

/** The authorization requests (GET) and token requests (POST) the emulator saw. */
async function seen(emulator) {
  const log = await emulator.log();
  return {
    authorizations: log.filter((e) => e.method === 'GET' && /authori[sz]e|\/auth$|o\/oauth2\/v2\/auth/.test(e.path)),
    tokens: log.filter((e) => e.method === 'POST' && e.grant_type),
  };
}

/** A JWT's claims, unverified (for assertions on what the IdP issued). */
function claimsOf(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

// ---------------------------------------------------------------------------
// The presets
// ---------------------------------------------------------------------------

/**
 * Per preset: the emulator's flags, the preset's parameters, and the extra checks of gateway mode,
 * verify mode and the plain configuration.
 */
const PRESETS = [
  {
    idp: 'entra',
    emulator: ['--tenant', TENANT, '--application-id', API_APP, '--app-id-uri', 'api://mcp-api'],
    params: { tenant: TENANT },
    // Gateway mode, the API's token kept for the MCP server: named in the scope, never by resource.
    gatewayExtra: ['audience = "api://mcp-api"', 'forward_token_header = "x-upstream-token"'],
    async gatewaySent(emulator) {
      const { authorizations, tokens } = await seen(emulator);
      const a = authorizations.at(-1);
      check(a.resource === null, `portcullis sent resource=${a.resource} to Entra ID`);
      check(a.scope.split(' ').includes('api://mcp-api/.default'), `scope was ${a.scope}`);
      check(a.scope.split(' ').includes('offline_access'), `no offline_access in ${a.scope}`);
      check(tokens.every((t) => t.status === 200), `a token request failed: ${JSON.stringify(tokens)}`);
    },
  },
  {
    idp: 'auth0',
    emulator: ['--dcr', '--resource-as-audience'],
    params: { domain: 'example.us.auth0.com' },
    gatewayExtra: ['audience = "https://api.example.com"', 'forward_token_header = "x-upstream-token"'],
    async gatewaySent(emulator) {
      const a = (await seen(emulator)).authorizations.at(-1);
      check(a.audience === 'https://api.example.com', `audience was ${a.audience}`);
      check(a.scope.split(' ').includes('offline_access'), `no offline_access in ${a.scope}`);
    },
    // Verify: with registration and the Resource Parameter Compatibility Profile on, the SDK's own
    // sign-in yields a JWT for this server.
    verify: { register: true },
    // The issuer as people write it: Auth0's has a trailing slash.
    plainVerify: (emulator) => [`issuer = ${tomlString(emulator.origin)}`],
    plainFails: { start: 'differ only by a trailing slash' },
  },
  {
    idp: 'okta',
    emulator: [],
    params: { domain: 'example.okta.com' },
    verify: { clients: true },
    plainVerify: (emulator) => [`issuer = ${tomlString(`${emulator.origin}/oauth2/default`)}`],
    plainFails: { token: 'api://default' },
  },
  {
    idp: 'keycloak',
    emulator: ['--realm', 'mcp', '--audience', 'mcp-server'],
    params: { domain: 'sso.example.com', realm: 'mcp' },
    verify: { clients: true, extra: ['audiences = ["mcp-server"]'] },
    // Without a client registered there, MCP clients try to register: Keycloak refuses.
    plainVerify: (emulator) => [`issuer = ${tomlString(`${emulator.origin}/realms/mcp`)}`, 'audiences = ["mcp-server"]'],
    plainFails: { register: 'Trusted Hosts' },
  },
  {
    idp: 'google',
    emulator: [],
    params: {},
    gatewayExtra: ['forward_token_header = "x-upstream-token"'],
    async gatewaySent(emulator) {
      const a = (await seen(emulator)).authorizations.at(-1);
      check(a.access_type === 'offline' && a.prompt === 'consent',
        `access_type=${a.access_type} prompt=${a.prompt}: Google issues no refresh token without access_type=offline`);
    },
    // The plain configuration never asks for a refresh token.
    plainGateway: (emulator) => [`issuer = ${tomlString(emulator.origin)}`, 'forward_token_header = "x-upstream-token"'],
    async plainGatewaySent(emulator) {
      const a = (await seen(emulator)).authorizations.at(-1);
      check(a.access_type === null, `access_type=${a.access_type}`);
    },
    opaque: true,
  },
  {
    idp: 'github',
    emulator: [],
    params: {},
    async gatewaySent(emulator) {
      const { tokens } = await seen(emulator);
      check(tokens.at(-1).client_auth === 'client_secret_post', `client authentication: ${tokens.at(-1).client_auth}`);
    },
    // Not an OpenID provider: nothing to discover.
    plainGateway: (emulator) => [`issuer = ${tomlString(emulator.origin)}`],
    plainFails: { start: 'no authorization server metadata found' },
    opaque: true,
  },
  {
    idp: 'cognito',
    emulator: ['--region', 'eu-west-1', '--pool', 'eu-west-1_AbCdEf123'],
    params: { region: 'eu-west-1', user_pool_id: 'eu-west-1_AbCdEf123' },
    verify: { clients: true, idToken: true },
    plainVerify: (emulator) => [`issuer = ${tomlString(`${emulator.origin}/eu-west-1_AbCdEf123`)}`],
    plainFails: { token: 'no aud claim' },
  },
  {
    idp: 'authentik',
    emulator: ['--slug', 'mcp'],
    params: { domain: 'auth.example.com', application: 'mcp' },
    verify: { clients: true },
    plainVerify: (emulator) => [`issuer = ${tomlString(`${emulator.origin}/application/o/mcp/`)}`],
    plainFails: { token: IDP_APP },
  },
  {
    idp: 'clerk',
    emulator: ['--dcr', '--jwt'],
    params: { domain: 'clerk.example.com' },
    verify: { clients: true },
    // Its access tokens name no audience at all.
    plainVerify: (emulator) => [`issuer = ${tomlString(emulator.origin)}`],
    plainFails: { token: 'no aud claim' },
  },
  { idp: 'workos', emulator: [], params: { domain: 'example.authkit.app' }, verify: { register: true } },
  {
    idp: 'descope',
    emulator: ['--project', 'P2abc123def456'],
    params: { project_id: 'P2abc123def456' },
    verify: { register: true },
    // The project's key set lives under /{project}; its issuer does not.
    plainVerify: (emulator) => [`issuer = ${tomlString(`${emulator.origin}/P2abc123def456`)}`],
    plainFails: { start: 'no authorization server metadata found' },
  },
  {
    idp: 'stytch',
    emulator: ['--project', 'project-test-11111111-2222-3333-4444-555555555555'],
    params: { domain: 'example.customers.stytch.com', project_id: 'project-test-11111111-2222-3333-4444-555555555555' },
    // aud is the project, not this server: bound by the client listed.
    verify: { clients: true },
    plainVerify: (emulator) => [`issuer = ${tomlString(emulator.origin)}`],
    plainFails: { token: 'project-test-11111111' },
  },
  {
    idp: 'keycard',
    emulator: ['--zone', 'z1a2b3c4'],
    params: { zone: 'z1a2b3c4' },
    verify: { register: true },
    plainVerify: (emulator) => [`issuer = ${tomlString(emulator.origin)}`],
    plainFails: { token: 'aud was' },
  },
];

async function gatewayChecks(p, upstream) {
  await step(`${p.idp}: gateway mode, the SDK signs in at ${p.idp} through portcullis, calls a tool and refreshes`, async () => {
    const emulator = await startEmulator(p.idp, p.emulator);
    try {
      const ctx = await startGatewayWith(upstream, emulator, [`idp = ${tomlString(p.idp)}`, ...lines(p.params), ...(p.gatewayExtra ?? [])]);
      try {
        const notes = await runSdkFlow(sdk, ctx, { clientMetadata: CLIENT_METADATA });
        const { authorizations } = await seen(emulator);
        check(authorizations.length === 1, `${authorizations.length} sign-ins at the IdP`);
        if (p.gatewaySent) await p.gatewaySent(emulator);
        check(typeof notes === 'string', 'the SDK flow reported nothing');
      } finally {
        await ctx.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
  if (!p.plainGateway) return;
  await step(`${p.idp}: gateway mode with a plain configuration shows what the preset absorbs`, async () => {
    const emulator = await startEmulator(p.idp, p.emulator);
    try {
      if (p.plainFails?.start) {
        const upstreamLines = p.plainGateway(emulator);
        await expectNoStart(
          (port) => gatewayConfig(port, upstream, upstreamLines),
          p.plainFails.start,
        );
        return;
      }
      const ctx = await startGatewayWith(upstream, emulator, p.plainGateway(emulator));
      try {
        await runSdkFlow(sdk, ctx, { clientMetadata: CLIENT_METADATA });
        await p.plainGatewaySent(emulator);
      } finally {
        await ctx.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
}

/** A gateway configuration without local accounts, for a gate that is expected not to start. */
function gatewayConfig(port, upstream, upstreamLines) {
  const dir = tempDir();
  return [
    `public_url = "http://127.0.0.1:${port}"`,
    `listen = "127.0.0.1:${port}"`,
    '[store]',
    `url = ${tomlString(`sqlite://${path.join(dir, 'p.db')}`)}`,
    '[gateway]',
    `operator_key_file = ${tomlString(path.join(dir, 'operator.key'))}`,
    '[gateway.upstream]',
    ...upstreamLines,
    `client_id = ${tomlString(UPSTREAM_CLIENT.id)}`,
    `client_secret = ${tomlString(UPSTREAM_CLIENT.secret)}`,
    '[[server]]',
    'path = "/mcp"',
    `upstream = ${tomlString(upstream.url)}`,
    'gateway = true',
    '',
  ].join('\n');
}

async function verifyChecks(p, upstream) {
  if (!p.verify) return;
  const preregistered = p.verify.clients ? { client_id: IDP_APP } : undefined;
  const presetLines = [
    `idp = ${tomlString(p.idp)}`,
    ...lines(p.params),
    ...(p.verify.clients ? [`clients = [${tomlString(IDP_APP)}]`] : []),
    ...(p.verify.extra ?? []),
  ];
  await step(`${p.idp}: verify mode, the SDK signs in at ${p.idp} ${p.verify.register ? '(registering there)' : 'as a client registered there'} and calls a tool`, async () => {
    const emulator = await startEmulator(p.idp, p.emulator);
    try {
      const ctx = await startVerify(upstream, emulator, presetLines);
      try {
        const provider = await signInAndCall(ctx, { preregistered });
        if (p.verify.register) check(provider.registrations === 1, `registered ${provider.registrations} times at the IdP`);
        if (p.verify.idToken) {
          // Cognito's ID tokens say token_use = id (and carry aud = the client id, which this server never
          // accepts as an audience either).
          const { id_token: idToken } = await tokensByHand(emulator, emulator.issuer, 'openid');
          check(typeof idToken === 'string', 'no ID token to present');
          await expectRefusedWith(ctx, idToken, 'an ID token was presented as an access token');
        }
        if (p.plainFails?.token || p.plainFails?.register) {
          const access = provider.tokens().access_token;
          await ctx.gate.proc.kill();
          const plain = await startVerify(upstream, emulator, p.plainVerify(emulator));
          try {
            if (p.plainFails.token) await expectRefusedWith(plain, access, p.plainFails.token);
            if (p.plainFails.register) {
              let refused;
              try {
                await signInAndCall(plain);
              } catch (err) {
                refused = err;
              }
              check(refused && String(refused.message).includes(p.plainFails.register),
                `the SDK's registration at the IdP was not refused as expected: ${refused?.message}`);
            }
          } finally {
            await plain.gate.proc.kill();
          }
        }
        return undefined;
      } finally {
        await ctx.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
  if (p.plainFails?.start) {
    await step(`${p.idp}: verify mode with the issuer as people write it does not start, and says why`, async () => {
      const emulator = await startEmulator(p.idp, p.emulator);
      try {
        await expectNoStart((port) => [
          `public_url = "http://127.0.0.1:${port}"`,
          `listen = "127.0.0.1:${port}"`,
          '[[server]]',
          'path = "/mcp"',
          `upstream = ${tomlString(upstream.url)}`,
          '[server.verify]',
          ...p.plainVerify(emulator),
          '',
        ].join('\n'), p.plainFails.start);
      } finally {
        await emulator.proc.kill();
      }
    });
  }
}

/** Entra ID: v1 tokens, the multi-tenant templated issuer, and the resource parameter it refuses. */
async function entraChecks(upstream) {
  await step('entra: verify mode takes v1 tokens (sts.windows.net issuer, App ID URI audience); the v2 issuer alone refuses them', async () => {
    const emulator = await startEmulator('entra', ['--tenant', TENANT, '--token-version', '1', '--app-id-uri', 'api://mcp-api']);
    try {
      const preset = await startVerify(upstream, emulator, [
        'idp = "entra"', `tenant = ${tomlString(TENANT)}`, 'audiences = ["api://mcp-api"]', `clients = [${tomlString(IDP_APP)}]`,
      ]);
      const plain = await startVerify(upstream, emulator, [
        `issuer = ${tomlString(`${emulator.origin}/${TENANT}/v2.0`)}`, 'audiences = ["api://mcp-api"]',
      ]);
      try {
        // A client registered at Entra ID asks for the API's scope (never resource), as Entra ID requires.
        const { access_token: token } = await tokensByHand(emulator, `${emulator.origin}/${TENANT}/v2.0`, `openid api://mcp-api/${SCOPE}`);
        check(claimsOf(token).iss === `${emulator.origin}/${TENANT}/`, `v1 iss was ${claimsOf(token).iss}`);
        await expectEcho(preset, token, 'v1 token through the preset');
        await expectRefusedWith(plain, token, 'iss was');
      } finally {
        await preset.gate.proc.kill();
        await plain.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
  await step('entra: the SDK signing in at Entra ID itself is refused there (resource, AADSTS9010010): why gateway mode', async () => {
    const emulator = await startEmulator('entra', ['--tenant', TENANT]);
    try {
      const ctx = await startVerify(upstream, emulator, [
        'idp = "entra"', `tenant = ${tomlString(TENANT)}`, `audiences = [${tomlString(API_APP)}]`, `clients = [${tomlString(IDP_APP)}]`,
      ]);
      try {
        let refused;
        try {
          await signInAndCall(ctx, { preregistered: { client_id: IDP_APP } });
        } catch (err) {
          refused = err;
        }
        check(refused && /AADSTS9010010|invalid_target/.test(refused.message), `not refused by the IdP: ${refused?.message}`);
      } finally {
        await ctx.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
  await step('entra: gateway mode with a multi-tenant app lets in the listed tenant; a plain issuer cannot start', async () => {
    const emulator = await startEmulator('entra', ['--tenant', TENANT]);
    try {
      const ctx = await startGatewayWith(upstream, emulator, ['idp = "entra"', 'tenant = "organizations"', `tenants = [${tomlString(TENANT)}]`]);
      try {
        await runSdkFlow(sdk, ctx, { clientMetadata: CLIENT_METADATA });
      } finally {
        await ctx.gate.proc.kill();
      }
      const other = await startGatewayWith(upstream, emulator, ['idp = "entra"', 'tenant = "organizations"', `tenants = [${tomlString(OTHER_TENANT)}]`]);
      try {
        let refused;
        try {
          await runSdkFlow(sdk, other, { clientMetadata: CLIENT_METADATA });
        } catch (err) {
          refused = err;
        }
        check(refused, 'a user of a tenant not listed signed in');
      } finally {
        await other.gate.proc.kill();
      }
      await expectNoStart(
        (port) => gatewayConfig(port, upstream, [`issuer = ${tomlString(`${emulator.origin}/organizations/v2.0`)}`]),
        '{tenantid}',
      );
    } finally {
      await emulator.proc.kill();
    }
  });
}

/**
 * The authorization code flow by hand, as a client registered at the IdP (`IDP_APP` unless `client`
 * says otherwise); the token response. `meta` gives the endpoints of an IdP without discovery.
 */
async function tokensByHand(emulator, issuer, scope, { client = { id: IDP_APP }, meta: given } = {}) {
  const meta = given ?? await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  const verifier = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url');
  const challenge = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))).toString('base64url');
  const redirectUri = 'http://127.0.0.1:9/callback';
  const auth = new URL(meta.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: 'code', client_id: client.id, redirect_uri: redirectUri, scope, state: 's',
    code_challenge: challenge, code_challenge_method: 'S256',
  })) auth.searchParams.set(k, v);
  const res = await fetch(auth, { redirect: 'manual' });
  const code = new URL(res.headers.get('location')).searchParams.get('code');
  check(code, `no code: ${res.status} ${res.headers.get('location')}`);
  const form = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: client.id, code_verifier: verifier };
  if (client.secret) form.client_secret = client.secret;
  const token = await fetch(meta.token_endpoint, {
    method: 'POST',
    headers: { accept: 'application/json' },
    body: new URLSearchParams(form),
  });
  const body = await token.json();
  check(token.status === 200 && body.access_token, `token: ${token.status} ${JSON.stringify(body)}`);
  return body;
}

/** Google's and GitHub's opaque tokens in verify mode, each checked at the IdP's token-info endpoint. */
async function tokenInfoChecks(upstream) {
  await step('google: verify mode checks each opaque token at tokeninfo: a listed client\'s token passes, another client\'s is refused', async () => {
    const emulator = await startEmulator('google');
    try {
      const ctx = await startVerify(upstream, emulator, ['idp = "google"', `clients = [${tomlString(IDP_APP)}]`], { scopes: [] });
      const plain = await startVerify(upstream, emulator, [`issuer = ${tomlString(emulator.origin)}`], { scopes: [] });
      try {
        const { access_token: ours } = await tokensByHand(emulator, emulator.issuer, 'openid email');
        check(ours.startsWith('ya29.'), `not an opaque Google token: ${ours.slice(0, 12)}`);
        await expectEcho(ctx, ours, 'opaque Google token through the preset');
        const { access_token: theirs } = await tokensByHand(emulator, emulator.issuer, 'openid email', { client: UPSTREAM_CLIENT });
        await expectRefusedWith(ctx, theirs, 'aud was');
        await expectRefusedWith(ctx, `${ours}x`, 'inactive');
        await expectRefusedWith(plain, ours, 'not a JWT');
      } finally {
        await ctx.gate.proc.kill();
        await plain.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
  await step('github: verify mode asks GitHub\'s check-token API about each token: the app\'s own token passes, another app\'s is refused', async () => {
    const emulator = await startEmulator('github');
    try {
      const ctx = await startVerify(upstream, emulator, [
        'idp = "github"', '', '[server.verify.introspection]',
        `client_id = ${tomlString(UPSTREAM_CLIENT.id)}`, `client_secret = ${tomlString(UPSTREAM_CLIENT.secret)}`,
      ], { scopes: [] });
      try {
        const meta = {
          authorization_endpoint: `${emulator.origin}/login/oauth/authorize`,
          token_endpoint: `${emulator.origin}/login/oauth/access_token`,
        };
        const { access_token: ours } = await tokensByHand(emulator, emulator.origin, 'read:user', { client: UPSTREAM_CLIENT, meta });
        check(ours.startsWith('gho_'), `not a GitHub token: ${ours.slice(0, 6)}`);
        await expectEcho(ctx, ours, 'GitHub token through the preset');
        const { access_token: theirs } = await tokensByHand(emulator, emulator.origin, 'read:user', { meta });
        await expectRefusedWith(ctx, theirs, 'inactive');
        const { tokens } = await seen(emulator);
        check(tokens.length === 2, `${tokens.length} token requests`);
      } finally {
        await ctx.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
}

/** check-config refuses verify mode where tokens cannot be bound, naming gateway mode. */
async function checkConfigChecks() {
  await step('check-config: verify mode with an opaque-token IdP (google, github) is refused, naming gateway mode', async () => {
    for (const idp of ['google', 'github']) {
      const { code, output } = await checkConfig([
        'public_url = "https://mcp.example.com"',
        '[[server]]', 'path = "/mcp"', 'upstream = "http://127.0.0.1:3001/mcp"',
        '[server.verify]', `idp = ${tomlString(idp)}`, '',
      ].join('\n'));
      check(code === 1 && output.includes('opaque access tokens') && output.includes(`[gateway.upstream] idp = "${idp}"`),
        `${idp}: ${output}`);
    }
  });
}

/** doctor in front of an MCP server that names Entra ID as its authorization server. */
async function doctorChecks(upstream) {
  await step('doctor: an MCP server whose authorization server is Entra ID is named, with what stops MCP clients there', async () => {
    const emulator = await startEmulator('entra', ['--tenant', TENANT]);
    try {
      const ctx = await startVerify(upstream, emulator, [
        'idp = "entra"', `tenant = ${tomlString(TENANT)}`, `clients = [${tomlString(IDP_APP)}]`,
      ]);
      try {
        const { stdout } = await portcullis(['doctor', ctx.mcpUrl, '--json']);
        const report = JSON.parse(stdout);
        const byId = Object.fromEntries(report.checks.map((c) => [c.id, c]));
        check(byId['idp.recognised']?.status === 'pass' && byId['idp.recognised'].detail.includes('idp = "entra"'),
          JSON.stringify(byId['idp.recognised']));
        check(byId['idp.registration']?.status === 'fail', JSON.stringify(byId['idp.registration']));
        check(byId['idp.resource']?.status === 'fail' && byId['idp.resource'].fix.includes('portcullis init --idp entra'),
          JSON.stringify(byId['idp.resource']));
      } finally {
        await ctx.gate.proc.kill();
      }
    } finally {
      await emulator.proc.kill();
    }
  });
}

async function main() {
  const upstream = await startUpstream(args.bin, { timeoutMs: TIMEOUT_MS });
  try {
    for (const p of PRESETS) {
      if (args.only && args.only !== p.idp) continue;
      await gatewayChecks(p, upstream);
      await verifyChecks(p, upstream);
    }
    if (!args.only || args.only === 'entra') await entraChecks(upstream);
    if (!args.only || args.only === 'google' || args.only === 'github') await tokenInfoChecks(upstream);
    if (!args.only) {
      await checkConfigChecks();
      await doctorChecks(upstream);
    }
  } finally {
    await killAll();
    for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  }
}

runChecks(main);
