// MCP TypeScript SDK v2 (`@modelcontextprotocol/client`): the same Client and
// StreamableHTTPClientTransport API; finishAuth takes the callback parameters
// and checks `iss` (RFC 9207) against the discovered issuer.

import { Client, StreamableHTTPClientTransport, UnauthorizedError } from '@modelcontextprotocol/client';

import { runSdkFlow } from './mcp-sdk-flow.mjs';

/** The SDK as `runSdkFlow` drives it. */
export const sdk = {
  name: 'sdk-v2',
  Client,
  StreamableHTTPClientTransport,
  UnauthorizedError,
  finishAuth: (transport, params) => transport.finishAuth(params),
};

/** Registers dynamically as a public client (`none`), as desktop MCP clients do. */
export async function run(ctx) {
  return runSdkFlow(sdk, ctx, {
    clientMetadata: {
      client_name: 'portcullis interop (MCP SDK v2)',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    preregistered: ctx.preregistered,
  });
}
