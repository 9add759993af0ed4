// A strict OAuth client built on oauth4webapi, doing each step of MCP
// authorization itself: the 401 challenge, RFC 9728 protected resource
// metadata, RFC 8414 discovery with the exact issuer check, RFC 7591
// registration or a client ID metadata document (with `none` or
// `private_key_jwt`, RFC 7523), PKCE S256 with `resource` (RFC 8707), the RFC 9207 `iss`
// check, the code and refresh grants, and JSON-RPC over plain fetch.

import * as oauth from 'oauth4webapi';

import { authorize } from '../harness/agent.mjs';
import {
  challengesOf, check, echoRequest, expectEcho, expectInvalidToken, expectRefused, postMcp, resultText, singleBearer,
} from '../harness/checks.mjs';
import { freePort } from '../harness/processes.mjs';
import { revokeAtIdp } from '../harness/stack.mjs';

const AUTH = {
  client_secret_basic: (client) => oauth.ClientSecretBasic(client.client_secret),
  client_secret_post: (client) => oauth.ClientSecretPost(client.client_secret),
  none: () => oauth.None(),
  private_key_jwt: (_client, privateKey) => oauth.PrivateKeyJwt(privateKey),
};

/**
 * The client's metadata document, published on its site (`ctx.documents`): the document URL is the
 * client id. For `private_key_jwt` it carries the public half of a key made now; returns the client and
 * the private key.
 */
async function publishDocument(ctx, as, method) {
  check(as.client_id_metadata_document_supported === true, 'metadata documents are not advertised');
  check(as.token_endpoint_auth_methods_supported?.includes(method), `${method} is not advertised`);
  const documentPath = `/oauth4webapi-${method}/client.json`;
  const clientId = ctx.documents.url(documentPath);
  const client = {
    client_id: clientId,
    token_endpoint_auth_method: method,
    id_token_signed_response_alg: as.id_token_signing_alg_values_supported[0],
  };
  const document = {
    ...client,
    client_name: `portcullis interop (oauth4webapi, metadata document, ${method})`,
    // Loopback redirect URIs match on any port (RFC 8252 §7.3).
    redirect_uris: ['http://127.0.0.1/callback'],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
  };
  let privateKey;
  if (method === 'private_key_jwt') ({ privateKey, jwks: document.jwks } = await clientKey());
  ctx.documents.publish(documentPath, document);
  return { client, privateKey, documentPath };
}

/** A key made for this run: the private half for PrivateKeyJwt, the public half as a JWKS. */
async function clientKey() {
  const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const jwk = await crypto.subtle.exportKey('jwk', pair.publicKey);
  return {
    privateKey: { key: pair.privateKey, kid: 'interop-1' },
    jwks: { keys: [{ ...jwk, kid: 'interop-1', alg: 'ES256', use: 'sig' }] },
  };
}

/** `tools/call echo` through portcullis with oauth4webapi's protected resource request. */
async function callEcho(ctx, accessToken, text, options) {
  const headers = new Headers({ 'content-type': 'application/json', accept: 'application/json, text/event-stream' });
  // Throws WWWAuthenticateChallengeError on any challenge, even on a 200.
  const res = await oauth.protectedResourceRequest(accessToken, 'POST', new URL(ctx.mcpUrl), headers,
    JSON.stringify(echoRequest(10, text)), options);
  const body = await res.text();
  check(res.status === 200, `echo: HTTP ${res.status}: ${body.slice(0, 200)}`);
  const message = JSON.parse(body);
  check(resultText(message.result) === text, `echo answered ${body.slice(0, 200)}`);
}

/** The `aud` each IdP profile puts in JWT access tokens. */
function expectedAudience(ctx, clientId) {
  switch (ctx.profile) {
    case 'aud-client-id': return clientId;
    case 'resource-claim': return ctx.issuer;
    default: return ctx.mcpUrl;
  }
}

/**
 * @param ctx the cell context; `ctx.authMethod` is the token endpoint auth
 *   method to register with (or use with `ctx.preregistered`).
 */
export async function run(ctx) {
  const options = { [oauth.allowInsecureRequests]: true, signal: ctx.signal };
  const method = ctx.authMethod ?? 'client_secret_basic';
  const resource = new URL(ctx.mcpUrl);

  // 1. No token: the challenge names the protected resource metadata.
  const first = await postMcp(ctx.mcpUrl, echoRequest(1, 'anonymous'), undefined, { signal: ctx.signal });
  await first.body?.cancel();
  check(first.status === 401, `no token: HTTP ${first.status}`);
  const challenge = singleBearer(await challengesOf(first), first.headers.get('www-authenticate'));
  check(challenge.resource_metadata, 'no resource_metadata in the challenge');

  // 2. RFC 9728: the metadata's `resource` must be the URL we called, exactly.
  let prmUrl;
  const prmResponse = await oauth.resourceDiscoveryRequest(resource, {
    ...options,
    [oauth.customFetch]: (url, init) => {
      prmUrl = url;
      return fetch(url, init);
    },
  });
  check(prmUrl === challenge.resource_metadata,
    `resource_metadata ${challenge.resource_metadata} is not the well-known URL ${prmUrl}`);
  const prm = await oauth.processResourceDiscoveryResponse(resource, prmResponse);
  check(Array.isArray(prm.authorization_servers) && prm.authorization_servers.length > 0,
    'protected resource metadata names no authorization server');

  // 3. RFC 8414 discovery with the strict issuer comparison.
  const issuer = new URL(prm.authorization_servers[0]);
  const as = await oauth.processDiscoveryResponse(issuer,
    await oauth.discoveryRequest(issuer, { ...options, algorithm: 'oauth2' }));
  check(as.code_challenge_methods_supported?.includes('S256'), 'authorization server does not list S256');

  // 4. Registration, or the pre-registered client.
  const redirectUri = `http://127.0.0.1:${await freePort()}/callback`;
  let client;
  let privateKey;
  let documentPath;
  if (ctx.documents) {
    ({ client, privateKey, documentPath } = await publishDocument(ctx, as, method));
  } else if (ctx.preregistered) {
    client = {
      client_id: ctx.preregistered.client_id,
      client_secret: ctx.preregistered.client_secret,
      token_endpoint_auth_method: method,
      // Configured next to the client id, as an application would: the AS's ID token algorithm
      // (OpenID Connect's default, RS256, applies otherwise).
      ...(as.id_token_signing_alg_values_supported ? { id_token_signed_response_alg: as.id_token_signing_alg_values_supported[0] } : {}),
    };
  } else {
    check(as.registration_endpoint, 'authorization server has no registration_endpoint');
    // private_key_jwt: the public key is registered with the client (RFC 7591 `jwks`).
    let jwks;
    if (method === 'private_key_jwt') ({ privateKey, jwks } = await clientKey());
    const registration = await oauth.dynamicClientRegistrationRequest(as, {
      client_name: `portcullis interop (oauth4webapi, ${method})`,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: method,
      ...(jwks ? { jwks } : {}),
    }, options);
    client = await oauth.processDynamicClientRegistrationResponse(registration);
    check(client.token_endpoint_auth_method === method,
      `registered ${client.token_endpoint_auth_method}, asked for ${method}`);
    check(method.startsWith('client_secret_') === (client.client_secret !== undefined),
      `client_secret ${client.client_secret === undefined ? 'missing' : 'present'} for ${method}`);
  }
  const clientAuth = AUTH[method](client, privateKey);

  // 5. Authorization request: PKCE S256, state, resource, the challenge's scope.
  const codeVerifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  // Against portcullis as the authorization server, also ask for an ID token: oauth4webapi then checks
  // it strictly (signature from jwks_uri, iss = metadata issuer, aud, nonce) — the seed 000 failure.
  const wantIdToken = ctx.profile === '-';
  const nonce = wantIdToken ? oauth.generateRandomNonce() : undefined;
  const baseScope = challenge.scope ?? prm.scopes_supported?.join(' ') ?? '';
  const authUrl = new URL(as.authorization_endpoint);
  authUrl.search = new URLSearchParams({
    client_id: client.client_id,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope: wantIdToken ? `${baseScope} openid`.trim() : baseScope,
    code_challenge: await oauth.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    state,
    resource: prm.resource,
    ...(nonce ? { nonce } : {}),
  }).toString();
  const callback = await authorize(authUrl, redirectUri, { signal: ctx.signal, fillForm: ctx.fillForm });
  // Checks state, iss (RFC 9207) and error.
  const callbackParams = oauth.validateAuthResponse(as, client, callback, state);

  // 6. Code exchange, with `resource` again.
  const tokenResponse = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, callbackParams, redirectUri,
    codeVerifier, { ...options, additionalParameters: { resource: prm.resource } });
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, tokenResponse,
    wantIdToken ? { expectedNonce: nonce, requireIdToken: true } : undefined);
  check(tokens.refresh_token, 'no refresh token from the code exchange');
  if (wantIdToken) {
    const claims = oauth.getValidatedIdTokenClaims(tokens);
    check(claims.iss === as.issuer, `id_token iss ${claims.iss} is not the metadata issuer ${as.issuer}`);
  }

  // 7. JWT access tokens: RFC 9068 validation as a resource server would do it.
  if (ctx.profile !== 'opaque') {
    const request = new Request(ctx.mcpUrl, { headers: { authorization: `Bearer ${tokens.access_token}` } });
    await oauth.validateJwtAccessToken(as, request, expectedAudience(ctx, client.client_id), options);
  }

  // 8. The token works through portcullis; a tampered one gets invalid_token.
  await callEcho(ctx, tokens.access_token, 'hello from oauth4webapi', options);
  await expectInvalidToken(ctx, tokens.access_token);

  // 9. Refresh (with `resource`), then the new token works.
  const refresh = async (refreshToken) => oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, refreshToken,
      { ...options, additionalParameters: { resource: prm.resource } }));
  const refreshed = await refresh(tokens.refresh_token);
  check(refreshed.access_token !== tokens.access_token, 'the refresh returned the same access token');
  await callEcho(ctx, refreshed.access_token, 'after refresh', options);
  const notes = [`refresh token ${refreshed.refresh_token === tokens.refresh_token || !refreshed.refresh_token ? 'kept' : 'rotated'}`];
  if (documentPath) {
    check(ctx.documents.fetches(documentPath) >= 1, 'portcullis never fetched the metadata document');
    notes.push(`client id = metadata document${privateKey ? ', assertions signed with its key' : ''}`);
  }

  if (ctx.profile === 'opaque') {
    notes.push(await checkIntrospectionAndRevocation(ctx, as, options, refresh, refreshed.refresh_token ?? tokens.refresh_token));
  }
  return notes.join(', ');
}

/**
 * The IdP's introspection answer carries what portcullis needs, and a revoked
 * token is refused. The revoked token is a fresh one portcullis has never
 * seen: it caches positive introspection answers (up to 300 s), so revoking a
 * token it has already accepted takes effect only when that entry expires.
 */
async function checkIntrospectionAndRevocation(ctx, as, options, refresh, refreshToken) {
  const rs = { client_id: 'portcullis-rs' };
  const rsAuth = oauth.ClientSecretBasic('secret-introspect');
  const introspect = async (token) => oauth.processIntrospectionResponse(as, rs,
    await oauth.introspectionRequest(as, rs, rsAuth, token, options));

  const fresh = await refresh(refreshToken);
  const answer = await introspect(fresh.access_token);
  for (const claim of ['active', 'iss', 'aud', 'exp', 'scope', 'client_id', 'sub']) {
    check(answer[claim] !== undefined, `introspection answer without ${claim}: ${JSON.stringify(answer)}`);
  }
  check(answer.active === true && answer.aud === ctx.mcpUrl && answer.iss === ctx.issuer,
    `unexpected introspection answer ${JSON.stringify(answer)}`);

  await revokeAtIdp(ctx.issuer, fresh.access_token);
  const after = await introspect(fresh.access_token);
  check(after.active === false, `a revoked token still introspects as active: ${JSON.stringify(after)}`);
  await expectRefused(ctx, fresh.access_token, 'revoked opaque token');

  // And a token of the same kind that is not revoked still passes.
  const another = await refresh(fresh.refresh_token ?? refreshToken);
  await expectEcho(ctx, another.access_token, 'not revoked');
  return 'introspection + revocation checked';
}
