// Gateway mode, server side: authorization requests (approved without pages), code exchanges and refresh
// rotations against a running portcullis, with W concurrent workers; prints rate and median per step.
//   node bench/token.mjs BASE_URL [ROUNDS=300] [WORKERS=8]      (PHASES=1: each endpoint's own rate)
import { createHash, randomBytes } from 'node:crypto';

const [base, rounds = '300', workers = '8'] = process.argv.slice(2);
const ROUNDS = Number(rounds);
const WORKERS = Number(workers);
const redirectUri = 'http://127.0.0.1:9/cb';
const b64url = (b) => b.toString('base64url');

const reg = await (await fetch(`${base}/register`, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'], token_endpoint_auth_method: 'none' }),
})).json();

const times = { authorize: [], code: [], refresh: [] };
async function timed(step, fn) {
  const t = performance.now();
  const r = await fn();
  times[step].push(performance.now() - t);
  return r;
}

async function round() {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const url = new URL(`${base}/authorize`);
  for (const [k, v] of Object.entries({ response_type: 'code', client_id: reg.client_id, redirect_uri: redirectUri,
    code_challenge: challenge, code_challenge_method: 'S256', state: 's' })) url.searchParams.set(k, v);
  const res = await timed('authorize', () => fetch(url, { redirect: 'manual' }));
  const code = new URL(res.headers.get('location')).searchParams.get('code');
  if (!code) throw new Error(`no code: ${res.status} ${res.headers.get('location')}`);
  const token = async (params) => {
    const r = await fetch(`${base}/token`, { method: 'POST', body: new URLSearchParams({ client_id: reg.client_id, ...params }) });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`token: ${r.status} ${JSON.stringify(body)}`);
    return body;
  };
  const first = await timed('code', () => token({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }));
  await timed('refresh', () => token({ grant_type: 'refresh_token', refresh_token: first.refresh_token }));
}

// CODES_OUT=file: only authorization requests, ROUNDS of them by WORKERS; writes `client_id redirect_uri`
// then one `code code_verifier` per line, for a load generator to redeem (bench/exchange.sh).
if (process.env.CODES_OUT) {
  const lines = [`${reg.client_id} ${redirectUri}`];
  let i = 0;
  await Promise.all(Array.from({ length: WORKERS }, async () => {
    while (i < ROUNDS) {
      i += 1;
      const verifier = b64url(randomBytes(32));
      const url = new URL(`${base}/authorize`);
      for (const [k, v] of Object.entries({ response_type: 'code', client_id: reg.client_id, redirect_uri: redirectUri,
        code_challenge: b64url(createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256', state: 's' })) url.searchParams.set(k, v);
      const res = await fetch(url, { redirect: 'manual' });
      const code = new URL(res.headers.get('location')).searchParams.get('code');
      if (!code) throw new Error(`no code: ${res.status} ${res.headers.get('location')}`);
      lines.push(`${code} ${verifier}`);
    }
  }));
  (await import('node:fs')).writeFileSync(process.env.CODES_OUT, lines.join('\n') + '\n');
  process.exit(0);
}

// PHASES=1: each step for every round before the next step, so that each endpoint's own rate is measured
// (all authorizations, then all code exchanges, then all refreshes).
if (process.env.PHASES === '1') {
  const pool = async (n, fn) => {
    let i = 0;
    const started = performance.now();
    await Promise.all(Array.from({ length: WORKERS }, async () => {
      while (i < n) {
        const mine = i;
        i += 1;
        await fn(mine);
      }
    }));
    return (performance.now() - started) / 1000;
  };
  const flows = [];
  const authorizeTime = await pool(ROUNDS, async () => {
    const verifier = b64url(randomBytes(32));
    const url = new URL(`${base}/authorize`);
    for (const [k, v] of Object.entries({ response_type: 'code', client_id: reg.client_id, redirect_uri: redirectUri,
      code_challenge: b64url(createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256', state: 's' })) url.searchParams.set(k, v);
    const res = await fetch(url, { redirect: 'manual' });
    flows.push({ verifier, code: new URL(res.headers.get('location')).searchParams.get('code') });
  });
  const post = async (params) => {
    const r = await fetch(`${base}/token`, { method: 'POST', body: new URLSearchParams({ client_id: reg.client_id, ...params }) });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`token: ${r.status} ${JSON.stringify(body)}`);
    return body;
  };
  const refreshTokens = [];
  const codeTime = await pool(ROUNDS, async (i) => {
    const f = flows[i];
    refreshTokens[i] = (await post({ grant_type: 'authorization_code', code: f.code, redirect_uri: redirectUri, code_verifier: f.verifier })).refresh_token;
  });
  const refreshTime = await pool(ROUNDS, async (i) => {
    await post({ grant_type: 'refresh_token', refresh_token: refreshTokens[i] });
  });
  for (const [step, t] of [['authorize', authorizeTime], ['code', codeTime], ['refresh', refreshTime]]) {
    console.log(`${step.padEnd(10)} ${(ROUNDS / t).toFixed(0)}/s (${ROUNDS} in ${t.toFixed(1)} s, ${WORKERS} workers)`);
  }
  process.exit(0);
}

const started = performance.now();
let next = 0;
await Promise.all(Array.from({ length: WORKERS }, async () => {
  while (next < ROUNDS) {
    next += 1;
    await round();
  }
}));
const seconds = (performance.now() - started) / 1000;
const median = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(`${ROUNDS} sign-ins (authorize + code exchange + one refresh), ${WORKERS} workers, ${seconds.toFixed(1)} s: ${(ROUNDS / seconds).toFixed(0)} sign-ins/s`);
for (const [step, t] of Object.entries(times)) {
  console.log(`${step.padEnd(10)} median ${median(t).toFixed(2)} ms`);
}
