#!/usr/bin/env node
// Three portcullis replicas in gateway mode on one PostgreSQL database, behind HAProxy (Debian's) in
// round-robin, so that consecutive requests of one sign-in land on different replicas:
//
// * the replicas start at once on an empty database: one schema, one signing key, the same JWKS;
// * real clients (the MCP TypeScript SDK, oauth4webapi) register, sign in, refresh and call tools
//   through the balancer; the audit logs show each sign-in's steps spread over the replicas;
// * a token any replica minted is accepted by every replica;
// * a refresh race on two replicas (one client's two processes refreshing with one stored token): both
//   are answered within the reuse grace, with two new tokens of the grant; the old token presented past
//   the grace is reuse (what a thief's use looks like), and the whole grant is revoked;
// * a key rotation mid-run (keys rotate on the shared store): every replica publishes the new key
//   within keys_reload_secs, before any signs with it; sign-ins keep working throughout;
// * `kill -9` of a replica in the middle of concurrent sign-ins: the clients retry through the
//   balancer and all finish;
// * a PostgreSQL restart (stop, then start) in the middle of traffic: the token endpoint answers 503
//   temporarily_unavailable and /readyz 503 while it is down, and everything works again after,
//   without restarting portcullis; nothing registered, granted or rotated before is lost.
//
// Needs DATABASE_URL (a PostgreSQL server it may create a database on) and haproxy; without
// DATABASE_URL it says it is skipped. The PostgreSQL restart needs pg_ctlcluster and root, and is
// reported as skipped otherwise.
//
// Usage: node tests/interop/replicas.mjs [--bin PATH]

import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { authorize } from './harness/agent.mjs';
import { echoRequest, postMcp, resultText } from './harness/checks.mjs';
import { freePort, killAll, run, start } from './harness/processes.mjs';
import { record, runChecks, step } from './harness/report.mjs';
import { GATEWAY_USER, SCOPE, signInAndConsent, startUpstream } from './harness/stack.mjs';
import * as oauth4webapi from './clients/oauth4webapi.mjs';
import * as sdkV1 from './clients/mcp-sdk-v1.mjs';

const { values: args } = parseArgs({ options: { bin: { type: 'string', default: 'target/debug/portcullis' } } });
const TIMEOUT_MS = 60_000;
const REPLICAS = 3;
const KEYS_RELOAD_SECS = 2;
// Two presentations within one second of each other are always less than 2 s apart on the store's
// clock (whole seconds).
const REUSE_GRACE_SECS = 2;
const CONFIGURED = { client_id: 'configured-client', client_secret: 'replica-secret_with.unreserved~chars' };


const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function psql(databaseUrl, sql) {
  return execFileSync('psql', [databaseUrl, '-v', 'ON_ERROR_STOP=1', '-tAc', sql], { encoding: 'utf8' }).trim();
}

/** DATABASE_URL with another database name. */
function withDatabase(databaseUrl, name) {
  const url = new URL(databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

function claimsOf(jwt, part = 1) {
  return JSON.parse(Buffer.from(jwt.split('.')[part], 'base64url'));
}

/** A POST of an OAuth form; `{ status, body }`. */
async function postForm(url, form, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { text };
  }
  return { status: res.status, body };
}

/**
 * One whole sign-in by plain HTTP through `base` (the balancer): registration (a public client),
 * the authorization request with PKCE and `resource`, the gateway's sign-in and consent pages, the
 * code exchange; then a tool call. Returns the token response.
 */
async function signIn(base) {
  const mcp = `${base}/mcp`;
  const redirectUri = 'http://127.0.0.1:9/callback';
  const reg = await fetch(`${base}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: 'replica test', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'],
    }),
    signal: AbortSignal.timeout(10_000),
  });
  if (reg.status !== 201) throw new Error(`registration: HTTP ${reg.status} ${await reg.text()}`);
  const { client_id: clientId } = await reg.json();
  const verifier = crypto.randomBytes(32).toString('base64url');
  const url = new URL(`${base}/authorize`);
  url.search = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: SCOPE, state: 's',
    code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256', resource: mcp,
  }).toString();
  const back = await authorize(url, redirectUri, { fillForm: signInAndConsent, signal: AbortSignal.timeout(20_000) });
  const code = back.searchParams.get('code');
  if (!code) throw new Error(`authorization answered ${back}`);
  const { status, body } = await postForm(`${base}/token`, {
    grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier,
    client_id: clientId, resource: mcp,
  });
  if (status !== 200) throw new Error(`code exchange: HTTP ${status} ${JSON.stringify(body)}`);
  await expectEcho(mcp, body.access_token, 'signed in');
  return { ...body, clientId };
}

async function expectEcho(mcpUrl, token, text) {
  const res = await postMcp(mcpUrl, echoRequest(1, text), token, { signal: AbortSignal.timeout(10_000) });
  const raw = await res.text();
  if (res.status !== 200) throw new Error(`tools/call at ${mcpUrl}: HTTP ${res.status} ${raw.slice(0, 200)}`);
  const message = raw.startsWith('{') ? JSON.parse(raw) : JSON.parse(raw.split('\n').find((l) => l.startsWith('data:')).slice(5));
  if (resultText(message.result) !== text) throw new Error(`tools/call answered ${raw.slice(0, 200)}`);
}

/** A sign-in that starts over (up to `attempts` times) when a replica fails under it. */
async function signInRetrying(base, attempts = 4) {
  for (let i = 1; ; i += 1) {
    try {
      return { tokens: await signIn(base), attempts: i };
    } catch (err) {
      if (i >= attempts) throw err;
      await sleep(300);
    }
  }
}

async function main() {
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) {
    console.log('SKIPPED: DATABASE_URL is not set; the replica test needs PostgreSQL');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-replicas-'));
  const database = `portcullis_replicas_${process.pid}`;
  psql(databaseUrl, `DROP DATABASE IF EXISTS ${database}`);
  psql(databaseUrl, `CREATE DATABASE ${database}`);
  const storeUrl = withDatabase(databaseUrl, database);
  const canRestartPostgres = process.getuid?.() === 0 && fs.existsSync('/usr/bin/pg_ctlcluster')
    && new URL(databaseUrl).hostname === '127.0.0.1';
  const cluster = canRestartPostgres
    ? execFileSync('pg_lsclusters', ['--no-header'], { encoding: 'utf8' }).trim().split('\n')
      .map((l) => l.trim().split(/\s+/)).find((c) => c[2] === (new URL(databaseUrl).port || '5432'))
    : undefined;
  const env = { PORTCULLIS_OPERATOR_KEY: crypto.randomBytes(32).toString('base64url') };
  let haproxy;
  try {
    const upstream = await startUpstream(args.bin, { timeoutMs: TIMEOUT_MS });
    const lbPort = await freePort();
    const lb = `http://127.0.0.1:${lbPort}`;
    const ports = [];
    for (let i = 0; i < REPLICAS; i += 1) ports.push(await freePort());
    const configs = ports.map((port, i) => {
      const file = path.join(dir, `replica-${i + 1}.toml`);
      fs.writeFileSync(file, [
        `public_url = "${lb}"`,
        `listen = "127.0.0.1:${port}"`,
        '[store]',
        `url = ${JSON.stringify(storeUrl)}`,
        'max_connections = 5',
        '[audit]',
        `path = ${JSON.stringify(path.join(dir, `audit-${i + 1}.log`))}`,
        '[gateway]',
        `operator_key_file = ${JSON.stringify(path.join(dir, 'unused-operator.key'))}`,
        `keys_reload_secs = ${KEYS_RELOAD_SECS}`,
        `refresh_reuse_grace_secs = ${REUSE_GRACE_SECS}`,
        // Every client of this test registers from 127.0.0.1, and the allowance is shared by the replicas.
        'registrations_per_minute = 500',
        '[[gateway.clients]]',
        `client_id = "${CONFIGURED.client_id}"`,
        `client_secret = "${CONFIGURED.client_secret}"`,
        'redirect_uris = ["http://127.0.0.1/callback"]',
        '[[server]]',
        'path = "/mcp"',
        `upstream = "${upstream.url}"`,
        `scopes = ["${SCOPE}"]`,
        'gateway = true',
        '',
      ].join('\n'));
      return file;
    });
    const replicaUrls = ports.map((p) => `http://127.0.0.1:${p}`);
    const startReplica = (i) => start(`replica-${i + 1}`, args.bin, ['serve', '--config', configs[i]], {
      ready: /^portcullis listening on (http:\/\/\S+)$/,
      timeoutMs: TIMEOUT_MS,
      env,
    });
    // All at once, on an empty database.
    const replicas = await Promise.all(configs.map((_, i) => startReplica(i)));
    const admin = (cmd, input = '') => run('portcullis', args.bin, [...cmd, '--config', configs[0]], { input, env, timeoutMs: TIMEOUT_MS });

    await step('three replicas started together on an empty database: one signing key, one JWKS', async () => {
      const keys = (await admin(['keys', 'list'])).split('\n').filter((l) => /\b(ES256|EdDSA|RS256)\b/.test(l));
      const jwks = await Promise.all(replicaUrls.map(async (u) => JSON.stringify((await (await fetch(`${u}/jwks.json`)).json()).keys.map((k) => k.kid).sort())));
      return (keys.length === 1 && new Set(jwks).size === 1) || `keys: ${keys.join(' | ')}; jwks: ${jwks.join(' | ')}`;
    });

    const haproxyConfig = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(haproxyConfig, [
      'global',
      '  maxconn 512',
      'defaults',
      '  mode http',
      '  timeout connect 2s',
      '  timeout client 30s',
      '  timeout server 30s',
      '  retries 3',
      '  option redispatch',
      'frontend portcullis',
      `  bind 127.0.0.1:${lbPort}`,
      '  default_backend replicas',
      'backend replicas',
      '  balance roundrobin',
      '  option httpchk GET /readyz',
      '  http-check expect status 200',
      '  default-server inter 500ms fall 2 rise 2',
      ...ports.map((p, i) => `  server r${i + 1} 127.0.0.1:${p} check`),
      '',
    ].join('\n'));
    execFileSync('haproxy', ['-c', '-f', haproxyConfig], { stdio: 'pipe' });
    haproxy = spawn('haproxy', ['-db', '-f', haproxyConfig], { stdio: ['ignore', 'ignore', 'pipe'] });
    let haproxyLog = '';
    haproxy.stderr.on('data', (c) => { haproxyLog = (haproxyLog + c).slice(-4000); });
    let balanced = false;
    for (let i = 0; i < 50 && !balanced; i += 1) {
      await sleep(200);
      balanced = await fetch(`${lb}/readyz`).then((r) => r.status === 200, () => false);
    }
    if (!balanced) throw new Error(`haproxy did not come up:\n${haproxyLog}`);
    await admin(['users', 'add', GATEWAY_USER.username], `${GATEWAY_USER.password}\n`);

    const asMetadata = await (await fetch(`${lb}/.well-known/oauth-authorization-server`)).json();
    const ctx = (extra) => ({
      mcpUrl: `${lb}/mcp`, prmUrl: `${lb}/.well-known/oauth-protected-resource/mcp`, issuer: asMetadata.issuer,
      asMetadata, profile: '-', fillForm: signInAndConsent,
      signal: AbortSignal.timeout(TIMEOUT_MS), ...extra,
    });
    await step('MCP TypeScript SDK through the balancer: DCR, sign-in, tool call, refresh', async () => {
      await sdkV1.run(ctx({}));
    });
    await step('oauth4webapi through the balancer: DCR (client_secret_basic), sign-in, strict checks, refresh', async () => {
      await oauth4webapi.run(ctx({ authMethod: 'client_secret_basic' }));
    });
    await step('oauth4webapi through the balancer: the configured client', async () => {
      await oauth4webapi.run(ctx({ preregistered: CONFIGURED, authMethod: 'client_secret_basic' }));
    });
    const first = await signIn(lb);
    await step('a token minted through the balancer is accepted by every replica', async () => {
      for (const u of replicaUrls) await expectEcho(`${u}/mcp`, first.access_token, `at ${u}`);
    });

    await step(`a refresh race on two replicas: both answered within the reuse grace (${REUSE_GRACE_SECS} s); past it, reuse revokes the grant`, async () => {
      const form = { grant_type: 'refresh_token', refresh_token: first.refresh_token, client_id: first.clientId };
      const [a, b] = await Promise.all([postForm(`${replicaUrls[0]}/token`, form), postForm(`${replicaUrls[1]}/token`, form)]);
      if (a.status !== 200 || b.status !== 200) return `answers ${JSON.stringify([a, b])}`;
      if (a.body.refresh_token === b.body.refresh_token) return 'both answers carry the same refresh token';
      await sleep((REUSE_GRACE_SECS + 1) * 1000);
      const reused = await postForm(`${replicaUrls[2]}/token`, form);
      if (!(reused.status === 400 && reused.body.error === 'invalid_grant')) return `the old token past the grace: ${JSON.stringify(reused)}`;
      // That was a thief's use: both tokens the race issued are revoked with the grant.
      for (const won of [a, b]) {
        const after = await postForm(`${replicaUrls[2]}/token`, { ...form, refresh_token: won.body.refresh_token });
        if (!(after.status === 400 && after.body.error === 'invalid_grant')) return `a raced token after the reuse: ${JSON.stringify(after)}`;
      }
      return true;
    });

    await step(`a key rotation mid-run: every replica publishes the new key within ${KEYS_RELOAD_SECS} s, before it signs; sign-ins continue`, async () => {
      let stop = false;
      const failures = [];
      const traffic = (async () => {
        let n = 0;
        while (!stop) {
          try {
            await signIn(lb);
            n += 1;
          } catch (err) {
            failures.push(err.message);
          }
        }
        return n;
      })();
      const before = await admin(['keys', 'list']);
      const rotated = await admin(['keys', 'rotate', '--publish-ahead', String(KEYS_RELOAD_SECS * 2)]);
      const kid = rotated.match(/key (\S+) published/)?.[1];
      const rotatedAt = Date.now();
      const published = [];
      for (const u of replicaUrls) {
        for (;;) {
          const kids = (await (await fetch(`${u}/jwks.json`)).json()).keys.map((k) => k.kid);
          if (kids.includes(kid)) break;
          if (Date.now() - rotatedAt > (KEYS_RELOAD_SECS + 2) * 1000) break;
          await sleep(100);
        }
        published.push(Date.now() - rotatedAt);
      }
      // After the switch, new tokens are signed with the new key and accepted everywhere.
      await sleep(Math.max(0, KEYS_RELOAD_SECS * 2000 + 1000 - (Date.now() - rotatedAt)));
      const fresh = await signIn(lb);
      stop = true;
      const signIns = await traffic;
      const signedWith = claimsOf(fresh.access_token, 0).kid;
      for (const u of replicaUrls) await expectEcho(`${u}/mcp`, fresh.access_token, 'new key');
      for (const u of replicaUrls) await expectEcho(`${u}/mcp`, first.access_token, 'old key');
      const ok = kid && published.every((ms) => ms <= (KEYS_RELOAD_SECS + 1) * 1000) && signedWith === kid
        && failures.length === 0 && signIns > 0 && !before.includes(kid);
      return ok || `kid ${kid}, published after ${published.join('/')} ms, new token kid ${signedWith}, ${signIns} sign-ins, failures: ${failures.slice(0, 3).join(' | ')}`;
    });

    await step('each sign-in\'s steps landed on different replicas (audit logs)', () => {
      const perReplica = configs.map((_, i) => fs.readFileSync(path.join(dir, `audit-${i + 1}.log`), 'utf8'));
      const kinds = ['gateway.client_registered', 'gateway.sign_in', 'gateway.consent', 'gateway.token_issued', 'mcp.request'];
      const spread = kinds.map((k) => perReplica.filter((log) => log.includes(`"event":"${k}"`)).length);
      return spread.every((n) => n >= 2) || `replicas that logged ${kinds.map((k, i) => `${k}: ${spread[i]}`).join(', ')}`;
    });

    await step('kill -9 of a replica in the middle of concurrent sign-ins: every client finishes through the balancer', async () => {
      const clients = Array.from({ length: 6 }, async (_, i) => {
        await sleep(i * 150);
        return signInRetrying(lb);
      });
      await sleep(400);
      replicas[1].proc.child.kill('SIGKILL');
      const results = await Promise.allSettled(clients);
      const failed = results.filter((r) => r.status === 'rejected');
      const retried = results.filter((r) => r.status === 'fulfilled' && r.value.attempts > 1).length;
      return failed.length === 0 || `${failed.length} of 6 failed (${retried} retried): ${failed.map((f) => f.reason.message).join(' | ')}`;
    });

    // Back to three, for what follows.
    replicas[1] = await startReplica(1);

    if (!cluster) {
      record('PostgreSQL restart mid-traffic (SKIPPED: needs root, pg_ctlcluster and a local DATABASE_URL)', true);
    } else {
      const saved = await signIn(lb);
      await step('PostgreSQL stopped mid-traffic: 503 temporarily_unavailable and /readyz 503; after it is back everything works without a restart', async () => {
        let stop = false;
        const statuses = new Set();
        const traffic = (async () => {
          while (!stop) {
            const r = await postForm(`${replicaUrls[0]}/token`, { grant_type: 'refresh_token', refresh_token: 'not-a-token', client_id: saved.clientId }).catch((e) => ({ status: e.message }));
            statuses.add(r.status === 503 ? `503 ${r.body.error}` : String(r.status));
            await sleep(50);
          }
        })();
        execFileSync('pg_ctlcluster', [cluster[0], cluster[1], 'stop', '-m', 'fast'], { stdio: 'pipe' });
        let downAnswer;
        let readyDown = false;
        try {
          const until = Date.now() + 20_000;
          while (Date.now() < until && !(downAnswer && readyDown)) {
            await sleep(200);
            const t = await postForm(`${replicaUrls[0]}/token`, { grant_type: 'refresh_token', refresh_token: saved.refresh_token, client_id: saved.clientId });
            if (t.status === 503) downAnswer = t;
            readyDown = (await Promise.all(replicaUrls.map((u) => fetch(`${u}/readyz`).then((r) => r.status)))).every((s) => s === 503);
          }
        } finally {
          execFileSync('pg_ctlcluster', [cluster[0], cluster[1], 'start'], { stdio: 'pipe' });
        }
        let readyAgain = false;
        for (let i = 0; i < 100 && !readyAgain; i += 1) {
          await sleep(200);
          readyAgain = (await Promise.all(replicaUrls.map((u) => fetch(`${u}/readyz`).then((r) => r.status)))).every((s) => s === 200);
        }
        stop = true;
        await traffic;
        // Granted before the restart: the refresh token still works; and a new sign-in does.
        const refreshed = await postForm(`${lb}/token`, { grant_type: 'refresh_token', refresh_token: saved.refresh_token, client_id: saved.clientId });
        await signIn(lb);
        const ok = downAnswer?.body.error === 'temporarily_unavailable' && downAnswer.body && readyDown && readyAgain
          && refreshed.status === 200 && !statuses.has('500');
        return ok || `while down: ${JSON.stringify(downAnswer)}, readyz down ${readyDown}, ready again ${readyAgain}, refresh after ${JSON.stringify(refreshed)}, statuses ${[...statuses].join(',')}`;
      });
    }

    await step('nothing registered, granted or rotated was lost', async () => {
      const clients = Number(psql(storeUrl, 'SELECT count(*) FROM clients'));
      const keys = (await admin(['keys', 'list'])).split('\n').filter((l) => /\b(ES256|EdDSA|RS256)\b/.test(l)).length;
      const again = await postForm(`${lb}/token`, {
        grant_type: 'authorization_code', code: 'x', redirect_uri: 'http://127.0.0.1/callback', code_verifier: 'x'.repeat(43),
      }, { authorization: `Basic ${Buffer.from(`${CONFIGURED.client_id}:${encodeURIComponent(CONFIGURED.client_secret)}`).toString('base64')}` });
      // The configured client still authenticates (invalid_grant for the made-up code, not invalid_client).
      return (clients >= 10 && keys === 2 && again.body.error === 'invalid_grant') || `clients ${clients}, keys ${keys}, configured client: ${JSON.stringify(again)}`;
    });
  } finally {
    haproxy?.kill('SIGKILL');
    await killAll();
    try {
      psql(databaseUrl, `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    } catch (err) {
      console.error(`dropping ${database}: ${err.message}`);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runChecks(main);
