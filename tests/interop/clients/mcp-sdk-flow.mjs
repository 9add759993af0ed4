// The documented interactive flow of the MCP TypeScript SDK, shared by v1
// (`@modelcontextprotocol/sdk`) and v2 (`@modelcontextprotocol/client`):
//
//   connect -> 401 -> the SDK discovers, registers and calls
//   redirectToAuthorization -> UnauthorizedError -> the application gets the
//   code on its redirect URI -> transport.finishAuth -> a new transport and
//   connect -> listTools, callTool.
//
// Then a tampered access token is planted in the provider: the SDK must get a
// 401 invalid_token, refresh with its refresh token and retry on its own.

import { freePort } from '../harness/processes.mjs';
import {
  check, expectAnonymousChallenge, expectEcho, expectInvalidToken, resultText,
} from '../harness/checks.mjs';
import { HeadlessOAuthProvider } from './headless-provider.mjs';

/**
 * @param {object} sdk `{ Client, StreamableHTTPClientTransport, UnauthorizedError, finishAuth(transport, params), name }`
 * @param {object} ctx the cell context (see harness/stack.mjs)
 * @param {object} options `{ clientMetadata, preregistered }`
 */
export async function runSdkFlow(sdk, ctx, { clientMetadata, preregistered }) {
  const notes = [];
  await expectAnonymousChallenge(ctx);

  const redirectUrl = `http://127.0.0.1:${await freePort()}/callback`;
  // With a metadata document, the client publishes its metadata instead of registering it; a loopback
  // redirect URI matches on any port (RFC 8252 §7.3), as for native apps.
  const documentPath = `/${sdk.name}/client.json`;
  const clientMetadataUrl = ctx.documents?.publish(documentPath, {
    ...clientMetadata,
    client_id: ctx.documents.url(documentPath),
    redirect_uris: ['http://127.0.0.1/callback'],
    token_endpoint_auth_method: 'none',
  });
  const provider = new HeadlessOAuthProvider({
    redirectUrl,
    clientMetadata: { ...clientMetadata, redirect_uris: [redirectUrl] },
    preregistered,
    signal: ctx.signal,
    fillForm: ctx.fillForm,
    clientMetadataUrl,
  });
  const url = new URL(ctx.mcpUrl);
  const newClient = () => new sdk.Client({ name: `portcullis-interop-${sdk.name}`, version: '1.0.0' });

  // 1. The first connect meets the 401 and ends in the authorization redirect.
  let transport = new sdk.StreamableHTTPClientTransport(url, { authProvider: provider });
  let client = newClient();
  try {
    await client.connect(transport);
    throw new Error('connect succeeded without authorization');
  } catch (err) {
    if (!(err instanceof sdk.UnauthorizedError)) throw err;
  }
  const params = provider.callbackParams();
  const authUrl = provider.authorizations.at(-1).url;
  check(authUrl.searchParams.get('resource') === ctx.mcpUrl,
    `authorization request resource=${authUrl.searchParams.get('resource')}, expected ${ctx.mcpUrl}`);
  check(authUrl.searchParams.get('code_challenge_method') === 'S256', 'authorization request without S256 PKCE');
  notes.push(`scope=${JSON.stringify(authUrl.searchParams.get('scope'))}`);
  if (clientMetadataUrl) {
    check(ctx.asMetadata.client_id_metadata_document_supported === true, 'metadata documents not advertised');
    check(provider.registrations === 0, `registered ${provider.registrations} times despite the metadata document`);
    check(authUrl.searchParams.get('client_id') === clientMetadataUrl,
      `authorization request client_id=${authUrl.searchParams.get('client_id')}, expected ${clientMetadataUrl}`);
    check(ctx.documents.fetches(documentPath) >= 1, 'portcullis never fetched the metadata document');
    notes.push('client id = metadata document');
  } else if (!preregistered) {
    check(provider.registrations === 1, `expected one registration, saw ${provider.registrations}`);
  }

  // 2. The application hands the callback to the transport, then reconnects.
  await sdk.finishAuth(transport, params);
  await client.close().catch(() => {});
  transport = new sdk.StreamableHTTPClientTransport(url, { authProvider: provider });
  client = newClient();
  await client.connect(transport);
  try {
    const { tools } = await client.listTools();
    check(tools.some((t) => t.name === 'echo'), `tools/list has no echo: ${tools.map((t) => t.name).join(', ')}`);
    const first = await client.callTool({ name: 'echo', arguments: { text: 'hello from the SDK' } });
    check(resultText(first) === 'hello from the SDK', `echo answered ${JSON.stringify(first)}`);

    const issued = provider.tokens();
    check(typeof issued.refresh_token === 'string' && issued.refresh_token,
      'the IdP issued no refresh token to the SDK');

    // 3. A tampered token: portcullis refuses it with one invalid_token challenge.
    const bad = await expectInvalidToken(ctx, issued.access_token);

    // 4. The SDK meets the same refusal, refreshes and retries by itself.
    const savesBefore = provider.tokenSaves;
    provider.replaceAccessToken(bad);
    const second = await client.callTool({ name: 'echo', arguments: { text: 'after refresh' } });
    check(resultText(second) === 'after refresh', `echo after refresh answered ${JSON.stringify(second)}`);
    const refreshed = provider.tokens();
    check(provider.tokenSaves === savesBefore + 1, 'the SDK did not store new tokens after the 401');
    check(provider.authorizations.length === 1, 'the SDK re-authorized instead of refreshing');
    check(refreshed.access_token !== issued.access_token && refreshed.access_token !== bad,
      'the refresh did not yield a new access token');
    await expectEcho(ctx, refreshed.access_token, 'refreshed token, plain fetch');
    notes.push(`refresh token ${refreshed.refresh_token === issued.refresh_token ? 'kept' : 'rotated'}`);
  } finally {
    await client.close().catch(() => {});
  }
  return notes.join(', ');
}
