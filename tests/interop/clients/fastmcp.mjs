// FastMCP's client (`fastmcp` 4.x, pinned in tests/interop/requirements.txt), which runs in
// clients/fastmcp_client.py; this driver is its browser (see runScript). Then it checks what FastMCP
// reports: one authorization for sign-in and refresh, a second after the 401, the authorization
// request's resource and PKCE.

import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { check, expectAnonymousChallenge, expectEcho, expectInvalidToken } from '../harness/checks.mjs';
import { runScript } from './mcp-sdk-python.mjs';

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fastmcp_client.py');

export async function run(ctx) {
  await expectAnonymousChallenge(ctx);
  const result = await runScript({ mcp_url: ctx.mcpUrl }, ctx, undefined, SCRIPT);
  const request = result.authorization_request;
  check(request.resource === ctx.mcpUrl, `authorization request resource=${request.resource}, expected ${ctx.mcpUrl}`);
  check(request.code_challenge_method === 'S256', 'authorization request without S256 PKCE');
  check(new URL(request.redirect_uri).hostname === '127.0.0.1', `redirect_uri ${request.redirect_uri}`);
  check(result.authorizations === 2, `expected 2 authorizations (sign-in, after the 401), saw ${result.authorizations}`);
  await expectInvalidToken(ctx, result.access_token);
  await expectEcho(ctx, result.access_token, 'the FastMCP token, plain fetch');
  return [`scope=${JSON.stringify(request.scope ?? null)}`, `refresh token ${result.refresh_token_rotated ? 'rotated' : 'kept'}`].join(', ');
}
