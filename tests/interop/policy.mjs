#!/usr/bin/env node
// Policy end to end, with real MCP clients and a real MCP server: two users of the test IdP (alice in
// the `finance` group, bob not; the IdP puts `groups` in their access tokens) sign in with the MCP
// TypeScript SDK (v1) and the Python MCP SDK through portcullis in verify mode. Behind it, the
// TypeScript SDK's own McpServer answers in SSE on `/sse` and in JSON on `/json`. One rule lets only
// `finance` call `payments_*`: alice lists and calls `payments_send`; bob does not see it in either
// answer form, and his call is refused.
//
// Usage: node tests/interop/policy.mjs [--bin PATH]
// Prints one line per check, then `N passed, N failed`; exits 1 if any failed.

import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';

import { HeadlessOAuthProvider } from './clients/headless-provider.mjs';
import { runScript } from './clients/mcp-sdk-python.mjs';
import { freePort, killAll } from './harness/processes.mjs';
import { record, runChecks } from './harness/report.mjs';
import { startIdp, startPortcullis } from './harness/stack.mjs';

const { values: args } = parseArgs({ options: { bin: { type: 'string', default: 'target/debug/portcullis' } } });
const TIMEOUT_MS = 60_000;
const TOOLS = ['echo', 'get_balance', 'payments_send'];

/** The TypeScript SDK's McpServer, stateless: SSE answers on /sse, JSON answers on /json. */
async function startUpstream() {
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const mcp = new McpServer({ name: 'policy-upstream', version: '1.0.0' });
    for (const name of TOOLS) {
      mcp.tool(name, `The ${name} tool.`, async () => ({ content: [{ type: 'text', text: `${name} done` }] }));
    }
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: req.url === '/json',
    });
    res.on('close', () => {
      transport.close();
      mcp.close();
    });
    await mcp.connect(transport);
    await transport.handleRequest(req, res, body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** The TypeScript SDK as an application uses it: sign in as `user`, list tools, call `tool`. */
async function tsProbe(mcpUrl, user, tool, signal) {
  const redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
  const provider = new HeadlessOAuthProvider({
    redirectUrl,
    clientMetadata: {
      client_name: 'portcullis policy test (MCP SDK v1)',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    signal,
    loginHint: user,
  });
  const url = new URL(mcpUrl);
  const client = () => new Client({ name: 'portcullis-policy-test', version: '1.0.0' });
  let transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  try {
    await client().connect(transport);
    throw new Error('connected without authorization');
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
  }
  await transport.finishAuth(provider.callbackParams().get('code'));
  transport = new StreamableHTTPClientTransport(url, { authProvider: provider });
  const c = client();
  await c.connect(transport);
  const tools = (await c.listTools()).tools.map((t) => t.name);
  let call;
  try {
    const result = await c.callTool({ name: tool, arguments: { amount: 5 } });
    call = result.isError ? 'error' : 'ok';
  } catch (err) {
    call = `refused: ${err.message}`;
  }
  await c.close().catch(() => {});
  return { tools, call };
}

/** The Python MCP SDK, the same steps (clients/mcp_sdk_python.py in its policy mode). */
async function pythonProbe(mcpUrl, user, tool, signal) {
  const redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
  return runScript({
    mcp_url: mcpUrl,
    redirect_url: redirectUrl,
    client_metadata: {
      client_name: 'portcullis policy test (Python MCP SDK)',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    policy_tool: tool,
    login_hint: user,
  }, { signal }, redirectUrl);
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-policy-'));
  const signal = AbortSignal.timeout(TIMEOUT_MS * 4);
  const upstream = await startUpstream();
  try {
    const idp = await startIdp('rfc8707', { timeoutMs: TIMEOUT_MS });
    const server = (p) => [
      '[[server]]',
      `path = "/${p}"`,
      `upstream = "${upstream.url}/${p}"`,
      'scopes = ["mcp:tools"]',
      '[[server.policy]]',
      'name = "finance-payments"',
      'tools = ["payments_*"]',
      'allow_if = \'"finance" in groups\'',
      '[server.verify]',
      `issuer = "${idp.issuer}"`,
      '',
    ].join('\n');
    const configFor = (port) => [
      `public_url = "http://127.0.0.1:${port}"`,
      `listen = "127.0.0.1:${port}"`,
      '',
      server('sse'),
      server('json'),
    ].join('\n');
    const { gate } = await startPortcullis(args.bin, configFor, dir, { timeoutMs: TIMEOUT_MS });

    for (const [clientName, probe] of [['TS SDK', tsProbe], ['Python SDK', pythonProbe]]) {
      for (const form of ['sse', 'json']) {
        const mcpUrl = `${gate.url}/${form}`;
        for (const [user, allowed] of [['alice', true], ['bob', false]]) {
          const name = `${clientName}, ${form.toUpperCase()} answers, ${user}`;
          try {
            const { tools, call } = await probe(mcpUrl, user, 'payments_send', signal);
            const expected = allowed ? TOOLS : TOOLS.filter((t) => t !== 'payments_send');
            const listed = [...tools].sort().join(',');
            record(`${name}: tools/list shows ${expected.join(', ')}`, listed === expected.join(','), `listed ${listed}`);
            const refused = call.startsWith('refused') && /403|forbidden|finance-payments/i.test(call);
            record(`${name}: payments_send ${allowed ? 'called' : 'refused'}`, allowed ? call === 'ok' : refused, call);
          } catch (err) {
            record(name, false, err.stack ?? err.message);
          }
        }
      }
    }
  } finally {
    upstream.server.close();
    await killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

runChecks(main);
