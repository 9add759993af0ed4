// The official Python MCP SDK (`mcp` 2.x, pinned in tests/interop/requirements.txt and installed
// into tests/interop/.venv by scripts/test). The SDK runs in clients/mcp_sdk_python.py; this driver
// is its browser: it performs each authorization request the SDK asks for, through the
// authorization server's pages, and hands back the URL the browser lands on. Then it checks what
// the SDK reports: one authorization for sign-in and refresh, a second after the 401, and the
// authorization request's resource and PKCE.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { authorize } from '../harness/agent.mjs';
import { check, expectAnonymousChallenge, expectEcho, expectInvalidToken } from '../harness/checks.mjs';
import { freePort } from '../harness/processes.mjs';
import { withLoginHint } from './headless-provider.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const PYTHON = path.join(HERE, '..', '.venv', 'bin', 'python');
const SCRIPT = path.join(HERE, 'mcp_sdk_python.py');

/**
 * Runs `script` (the Python SDK's by default) with `settings`, answering its authorization requests;
 * resolves to its result. `redirectUrl` is where the browser stops: the client's redirect URI, or, when
 * not given, the one each authorization request names.
 */
export function runScript(settings, ctx, redirectUrl, script = SCRIPT) {
  if (!fs.existsSync(PYTHON)) {
    throw new Error(`no Python environment at ${PYTHON}: scripts/test creates it from tests/interop/requirements.txt`);
  }
  const child = spawn(PYTHON, [script, JSON.stringify(settings)], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr = [];
  child.stderr.on('data', (chunk) => stderr.push(chunk.toString()));
  const onAbort = () => child.kill('SIGKILL');
  ctx.signal?.addEventListener('abort', onAbort, { once: true });
  const lines = readline.createInterface({ input: child.stdout });
  return new Promise((resolve, reject) => {
    let outcome;
    lines.on('line', async (line) => {
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        stderr.push(`stdout: ${line}\n`);
        return;
      }
      if (message.authorize) {
        try {
          const target = withLoginHint(message.authorize, settings.login_hint);
          const stopAt = redirectUrl ?? new URL(message.authorize).searchParams.get('redirect_uri');
          const landed = await authorize(target, stopAt, { signal: ctx.signal, fillForm: ctx.fillForm });
          child.stdin.write(`${JSON.stringify({ callback: landed.href })}\n`);
        } catch (err) {
          outcome = { error: err };
          child.kill('SIGKILL');
        }
      } else if (message.result) {
        outcome = { result: message.result };
      } else if (message.error) {
        outcome = { error: new Error(`the Python SDK failed:\n${message.error}`) };
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      ctx.signal?.removeEventListener('abort', onAbort);
      const log = stderr.join('').trim().split('\n').slice(-30).map((l) => `  [python] ${l}`).join('\n');
      if (outcome?.result && code === 0) resolve(outcome.result);
      else {
        const err = outcome?.error ?? new Error(`the Python client exited (${signal ?? `code ${code}`}) without a result`);
        if (log) err.message += `\n${log}`;
        reject(err);
      }
    });
  });
}

export async function run(ctx) {
  const notes = [];
  await expectAnonymousChallenge(ctx);
  const redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
  const clientMetadata = {
    client_name: 'portcullis interop (Python MCP SDK)',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: ctx.authMethod,
  };
  const settings = { mcp_url: ctx.mcpUrl, redirect_url: redirectUrl, client_metadata: clientMetadata };
  if (ctx.documents) {
    const documentPath = '/sdk-python/client.json';
    settings.client_metadata_url = ctx.documents.publish(documentPath, {
      ...clientMetadata,
      client_id: ctx.documents.url(documentPath),
      redirect_uris: ['http://127.0.0.1/callback'],
    });
  }
  if (ctx.preregistered) {
    settings.preregistered = {
      client_id: ctx.preregistered.client_id,
      client_secret: ctx.preregistered.client_secret,
      token_endpoint_auth_method: ctx.authMethod,
    };
  }

  const result = await runScript(settings, ctx, redirectUrl);

  const request = result.authorization_request;
  check(request.resource === ctx.mcpUrl, `authorization request resource=${request.resource}, expected ${ctx.mcpUrl}`);
  check(request.code_challenge_method === 'S256', 'authorization request without S256 PKCE');
  notes.push(`scope=${JSON.stringify(request.scope ?? null)}`);
  check(result.authorizations === 2, `expected 2 authorizations (sign-in, after the 401), saw ${result.authorizations}`);
  if (settings.client_metadata_url) {
    check(ctx.asMetadata.client_id_metadata_document_supported === true, 'metadata documents not advertised');
    check(result.client_id === settings.client_metadata_url,
      `client_id=${result.client_id}, expected the metadata document ${settings.client_metadata_url}`);
    check(ctx.documents.fetches('/sdk-python/client.json') >= 1, 'portcullis never fetched the metadata document');
    notes.push('client id = metadata document');
  } else if (!settings.preregistered) {
    check(result.registrations === 1, `expected one registration, saw ${result.registrations}`);
  }
  // Sign-in, the refresh, the second sign-in: three stored token sets.
  check(result.token_saves === 3, `expected 3 token saves, saw ${result.token_saves}`);
  notes.push(`refresh token ${result.refresh_token_rotated ? 'rotated' : 'kept'}`);

  // What the SDK met after its tampered token, checked by hand: one invalid_token challenge.
  await expectInvalidToken(ctx, result.access_token);
  await expectEcho(ctx, result.access_token, 'the Python SDK token, plain fetch');
  return notes.join(', ');
}
