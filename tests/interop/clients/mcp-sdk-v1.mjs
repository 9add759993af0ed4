// MCP TypeScript SDK v1 (`@modelcontextprotocol/sdk`): Client +
// StreamableHTTPClientTransport with an OAuthClientProvider.

import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

import { runSdkFlow } from './mcp-sdk-flow.mjs';

const sdk = {
  name: 'sdk-v1',
  Client,
  StreamableHTTPClientTransport,
  UnauthorizedError,
  // v1 takes the code alone; it does not look at `iss`.
  finishAuth: (transport, params) => transport.finishAuth(params.get('code')),
};

/**
 * Registers dynamically without naming a token endpoint auth method, so the
 * IdP's default (client_secret_basic) applies, unless the cell provides a
 * pre-registered client.
 */
export async function run(ctx) {
  return runSdkFlow(sdk, ctx, {
    clientMetadata: {
      client_name: 'portcullis interop (MCP SDK v1)',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    preregistered: ctx.preregistered,
  });
}
