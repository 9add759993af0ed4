#!/usr/bin/env node
// The interop matrix: real MCP client code against portcullis in front of the
// sample MCP server, with tokens from the loopback test IdP (verify mode) or
// from portcullis itself (gateway mode). Each cell starts its own processes,
// runs one client's whole flow, and stops them. See docs/interop.md.
//
// Usage: node tests/interop/matrix.mjs [--bin PATH] [--only TEXT] [--verbose]
//   --bin      the portcullis binary (default: target/debug/portcullis of this checkout)
//   --only     run the cells whose row contains TEXT (e.g. "opaque", "sdk-v2")
//   --verbose  print the processes' output for passing cells too
//
// Prints one row per cell, then `N passed, N failed`; exits 1 if any failed.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { killAll } from './harness/processes.mjs';
import { startStack, stopStack } from './harness/stack.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const CELL_TIMEOUT_MS = 30_000;
const START_TIMEOUT_MS = 10_000;
const RUN_TIMEOUT_MS = 300_000;

// ---------------------------------------------------------------------------
// The cells
// ---------------------------------------------------------------------------

// client: which driver in clients/; registration: how the client gets its
// credentials (`dcr`, or the name of a pre-registered client);
// authMethod: the token endpoint authentication it uses.
const DYNAMIC_CLIENTS = [
  { client: 'sdk-v1', registration: 'dcr', authMethod: 'client_secret_basic' },
  { client: 'sdk-v2', registration: 'dcr', authMethod: 'none' },
  { client: 'oauth4webapi', registration: 'dcr', authMethod: 'client_secret_basic' },
  { client: 'oauth4webapi', registration: 'dcr', authMethod: 'client_secret_post' },
  { client: 'oauth4webapi', registration: 'dcr', authMethod: 'none' },
];

// `aud` = client id only works for a client portcullis is told about in advance.
const PREREGISTERED_CLIENTS = [
  { client: 'sdk-v1', registration: 'client-rs', authMethod: 'client_secret_basic' },
  { client: 'sdk-v2', registration: 'client-rs', authMethod: 'client_secret_basic' },
  { client: 'oauth4webapi', registration: 'client-rs', authMethod: 'client_secret_basic' },
  { client: 'oauth4webapi', registration: 'client-rs', authMethod: 'client_secret_post' },
];

const OPAQUE_CLIENTS = [
  { client: 'sdk-v1', registration: 'dcr', authMethod: 'client_secret_basic' },
  { client: 'sdk-v2', registration: 'dcr', authMethod: 'none' },
  { client: 'oauth4webapi', registration: 'dcr', authMethod: 'client_secret_basic' },
];

// Gateway mode only: a client registering its public key and authenticating
// with signed assertions (RFC 7523).
const KEYED_CLIENTS = [{ client: 'oauth4webapi', registration: 'dcr', authMethod: 'private_key_jwt' }];

// Gateway mode, clients without registration: the client id is the URL of the
// client's metadata document, published on its (loopback, TLS) site.
const DOCUMENT_CLIENTS = [
  { client: 'sdk-v1', registration: 'cimd', authMethod: 'none' },
  { client: 'sdk-v2', registration: 'cimd', authMethod: 'none' },
  { client: 'oauth4webapi', registration: 'cimd', authMethod: 'none' },
  { client: 'oauth4webapi', registration: 'cimd', authMethod: 'private_key_jwt' },
];

// Gateway mode: the client configured in [[gateway.clients]].
const CONFIGURED_CLIENTS = PREREGISTERED_CLIENTS.map((c) => ({ ...c, registration: 'configured' }));

// The Python MCP SDK registers as the MCP specification's examples do (a public client) and
// confidentially, and uses metadata documents where offered.
const PYTHON_CELLS = [
  { mode: 'verify', profile: 'rfc8707', registration: 'dcr', authMethod: 'none' },
  { mode: 'verify', profile: 'resource-claim', registration: 'dcr', authMethod: 'client_secret_post' },
  { mode: 'verify', profile: 'aud-client-id', registration: 'client-rs', authMethod: 'client_secret_basic' },
  { mode: 'gateway', profile: '-', registration: 'dcr', authMethod: 'none' },
  { mode: 'gateway', profile: '-', registration: 'dcr', authMethod: 'client_secret_basic' },
  { mode: 'gateway', profile: '-', registration: 'cimd', authMethod: 'none' },
  { mode: 'gateway-oidc', profile: 'aud-client-id', registration: 'dcr', authMethod: 'none' },
].map((c) => ({ client: 'sdk-python', ...c }));

// FastMCP's client, on the same SDK: dynamic registration (as a public client) in both modes.
const FASTMCP_CELLS = [
  { mode: 'verify', profile: 'rfc8707', registration: 'dcr', authMethod: 'none' },
  { mode: 'gateway', profile: '-', registration: 'dcr', authMethod: 'none' },
].map((c) => ({ client: 'fastmcp', ...c }));

// Verify mode: one row per IdP profile and client. Gateway mode: portcullis is
// the authorization server (no IdP, so no profile).
const CELLS = [
  ...DYNAMIC_CLIENTS.map((c) => ({ ...c, mode: 'verify', profile: 'rfc8707' })),
  ...PREREGISTERED_CLIENTS.map((c) => ({ ...c, mode: 'verify', profile: 'aud-client-id' })),
  ...DYNAMIC_CLIENTS.map((c) => ({ ...c, mode: 'verify', profile: 'resource-claim' })),
  ...OPAQUE_CLIENTS.map((c) => ({ ...c, mode: 'verify', profile: 'opaque' })),
  ...DYNAMIC_CLIENTS.map((c) => ({ ...c, mode: 'gateway', profile: '-' })),
  ...CONFIGURED_CLIENTS.map((c) => ({ ...c, mode: 'gateway', profile: '-' })),
  ...KEYED_CLIENTS.map((c) => ({ ...c, mode: 'gateway', profile: '-' })),
  ...DOCUMENT_CLIENTS.map((c) => ({ ...c, mode: 'gateway', profile: '-' })),
  // Gateway mode signing users in at an upstream OpenID provider (the IdP as
  // portcullis's own client; its `iss` never reaches the MCP client).
  ...DYNAMIC_CLIENTS.map((c) => ({ ...c, mode: 'gateway-oidc', profile: 'aud-client-id' })),
  ...CONFIGURED_CLIENTS.slice(0, 2).map((c) => ({ ...c, mode: 'gateway-oidc', profile: 'aud-client-id' })),
  // The official Python SDK: sign-in, refresh when the token expires, a new authorization after a 401.
  ...PYTHON_CELLS,
  ...FASTMCP_CELLS,
];

const DRIVERS = {
  'sdk-v1': () => import('./clients/mcp-sdk-v1.mjs'),
  'sdk-v2': () => import('./clients/mcp-sdk-v2.mjs'),
  oauth4webapi: () => import('./clients/oauth4webapi.mjs'),
  'sdk-python': () => import('./clients/mcp-sdk-python.mjs'),
  fastmcp: () => import('./clients/fastmcp.mjs'),
};

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

function rowOf(cell) {
  const registration = cell.registration === 'dcr' ? `dcr ${cell.authMethod}` : `${cell.registration} ${cell.authMethod}`;
  return [cell.client, cell.mode, cell.profile, registration];
}

async function runCell(cell, bin) {
  const started = performance.now();
  const abort = new AbortController();
  let stack;
  let timer;
  const starting = startStack({
    bin,
    mode: cell.mode,
    profile: cell.profile,
    metadataDocuments: cell.registration === 'cimd',
    timeoutMs: START_TIMEOUT_MS,
  });
  starting.catch(() => {}); // handled through `work`; this only keeps it from counting as unhandled
  const work = (async () => {
    const driver = await DRIVERS[cell.client]();
    stack = await starting;
    if (abort.signal.aborted) throw new Error('cell aborted');
    return driver.run({
      ...stack,
      // The profile shapes the tokens the client sees only in verify mode; in
      // gateway mode they are always portcullis's own (`aud` = the resource).
      profile: cell.mode === 'verify' ? cell.profile : '-',
      authMethod: cell.authMethod,
      preregistered: ['dcr', 'cimd'].includes(cell.registration) ? undefined : stack.preregisteredClient,
      signal: abort.signal,
    });
  })();
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`cell timed out after ${CELL_TIMEOUT_MS / 1000} s`)), CELL_TIMEOUT_MS);
  });
  const result = { cell };
  try {
    result.note = await Promise.race([work, deadline]);
    result.ok = true;
  } catch (err) {
    result.ok = false;
    result.error = err;
    abort.abort();
  } finally {
    clearTimeout(timer);
    // A timed-out driver may still be waiting on something; it fails on its
    // own once the processes are gone.
    work.catch(() => {});
    result.logs = stack ? stack.procs.map((p) => p.output()).filter(Boolean).join('\n') : '';
    result.config = stack?.config;
    if (stack) await stopStack(stack);
    // Timed out while starting: stop the processes once they are up.
    else starting.then(stopStack, () => {});
    result.ms = performance.now() - started;
  }
  return result;
}

function formatTable(rows) {
  const header = ['client', 'mode', 'profile', 'registration', 'result', 'time'];
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  const line = (r) => r.map((v, i) => v.padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

function describeError(err) {
  const lines = [err?.stack ?? String(err)];
  // oauth4webapi and the SDK put the interesting part in `cause`.
  let cause = err?.cause;
  for (let depth = 0; cause && depth < 3; depth += 1) {
    lines.push(`cause: ${typeof cause === 'object' ? JSON.stringify(cause, null, 0)?.slice(0, 600) : cause}`);
    cause = cause?.cause;
  }
  return lines.join('\n');
}

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        bin: { type: 'string', default: path.join(HERE, '..', '..', 'target', 'debug', 'portcullis') },
        only: { type: 'string' },
        verbose: { type: 'boolean', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`matrix: ${err.message}`);
    process.exit(2);
  }
  const bin = path.resolve(args.bin);
  if (!fs.existsSync(bin)) {
    console.error(`matrix: no portcullis binary at ${bin} (build it, or pass --bin)`);
    process.exit(2);
  }
  if (!fs.existsSync(path.join(HERE, 'node_modules', 'oidc-provider'))) {
    console.error('matrix: packages missing: run `npm ci` in tests/interop');
    process.exit(2);
  }

  const cells = CELLS.filter((c) => !args.only || rowOf(c).join(' ').includes(args.only));
  if (cells.length === 0) {
    console.error(`matrix: no cell matches ${JSON.stringify(args.only)}`);
    process.exit(2);
  }

  const runDeadline = setTimeout(async () => {
    console.error(`matrix: the whole run exceeded ${RUN_TIMEOUT_MS / 1000} s, stopping`);
    await killAll();
    process.exit(1);
  }, RUN_TIMEOUT_MS);

  console.log(`portcullis interop matrix: ${cells.length} cells, binary ${bin}`);
  const results = [];
  for (const cell of cells) {
    const result = await runCell(cell, bin);
    results.push(result);
    const status = result.ok ? 'pass' : 'FAIL';
    console.error(`  ${status}  ${rowOf(cell).join(' / ')}${result.ok ? '' : `: ${result.error?.message?.split('\n')[0]}`}`);
  }
  clearTimeout(runDeadline);

  const rows = results.map((r) => [...rowOf(r.cell), r.ok ? 'pass' : 'FAIL', `${(r.ms / 1000).toFixed(1)} s`]);
  console.log('');
  console.log(formatTable(rows));

  for (const r of results) {
    if (r.ok && !args.verbose) continue;
    console.log('');
    console.log(`--- ${rowOf(r.cell).join(' / ')}: ${r.ok ? `pass (${r.note ?? ''})` : 'FAIL'}`);
    if (!r.ok) console.log(describeError(r.error));
    if (!r.ok || args.verbose) {
      if (r.config) console.log(`portcullis configuration:\n${r.config.replace(/^/gm, '  ')}`);
      if (r.logs) console.log(`process output:\n${r.logs}`);
    }
  }

  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log('');
  console.log(`${passed} passed, ${failed} failed`);
  await killAll();
  process.exitCode = failed === 0 ? 0 : 1;
}

main().catch(async (err) => {
  console.error(`matrix: ${describeError(err)}`);
  await killAll();
  process.exit(1);
});
