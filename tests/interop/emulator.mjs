#!/usr/bin/env node
// Loopback emulator of one real identity provider, for tests of portcullis's
// IdP presets (crates/config/src/idp.rs).
//
// A preset turns a few values (a tenant id, a realm, a user pool…) into the
// real IdP's URLs. In tests the gateway moves every derived URL to one
// loopback origin and keeps the path (`Derived::rebase`), so this server
// answers each IdP's REAL path layout on that one origin: hosts that differ in
// reality (sts.windows.net, graph.microsoft.com, api.github.com,
// oauth2.googleapis.com, a Cognito hosted-UI domain…) all land here, which is
// why no two paths of one IdP may collide.
//
// Unlike idp.mjs (a spec-following provider built on oidc-provider), this one
// copies the IdP's HABITS: the claims and formats of its tokens, where it
// publishes what, which parameters it refuses or ignores, how its errors look.
// The facts come from each IdP's documentation as far as it goes; the ones we
// are unsure of are marked "uncertain" where they are implemented.
//
// Usage:
//   node tests/interop/emulator.mjs --idp NAME [--port N]
//        [--client ID:SECRET]... [--public-client ID]... [--user SUB] [--ttl SECS]
//        [--ignore-stdin] [IdP flags]
//
//   NAME: entra auth0 okta keycloak google github cognito authentik clerk
//         workos descope stytch keycard generic
//   IdP flags (refused with any other --idp):
//     entra      --tenant GUID --token-version 1|2 --app-id-uri URI --application-id GUID
//     auth0      --dcr --resource-as-audience
//     okta       --auth-server ID --audience AUD
//     keycloak   --realm NAME --audience AUD --oauth-metadata
//     github     --expiring
//     cognito    --region REGION --pool POOL_ID
//     authentik  --slug SLUG
//     clerk      --dcr --jwt --domain-label X (accepted, unused)
//     descope    --project ID
//     stytch     --project ID
//     keycard    --zone ID
//
//   --client ID:SECRET    a confidential client (split at the first ':')
//   --public-client ID    a public client (no secret; PKCE required)
//   --user SUB            the signed-in user's subject (default user-1)
//   --ttl SECS            access and ID token lifetime (default 300)
//
// Every authorization request is approved at once, for one user (sub
// `user-1`, email ada@example.com, name Ada), with a redirect to the
// redirect_uri carrying `code` and `state` (no `iss`: none of these IdPs sends
// it). redirect_uri must be a loopback URL (http://127.0.0.1:PORT/… or
// http://localhost:PORT/…, any port).
//
// Test-only endpoint, on every IdP: GET /__emulator/log answers a JSON array
// of the requests seen so far (method, path, status, client_id, grant_type,
// client auth method, scope, and the values of resource / audience /
// access_type / prompt, null when not sent), so that a test can assert what
// the gateway sent to the IdP.
//
// Contract with the parent process (as idp.mjs):
//   * stdout carries exactly one line,
//     `{"origin":"http://127.0.0.1:PORT","port":PORT,"issuer":"<issuer>"}`,
//     printed once the server accepts connections; `issuer` is the one this
//     IdP puts in its ID tokens. Everything else goes to stderr, including one
//     line per request (never a secret).
//   * The process exits when its stdin reaches EOF (unless --ignore-stdin), on
//     SIGTERM and on SIGINT.
//
// The code is in emulator/: cli.mjs (the command line), state.mjs (clients,
// user, codes, tokens, the request log, the origin and the profile), ids.mjs
// (clock, random values, hashes, ids), tokens.mjs (scopes, claims, the signing
// key and JWTs), http.mjs (answers and reading requests), clients.mjs (client
// lookup and authentication), endpoints.mjs (the common endpoints), routes.mjs
// (route tables and discovery documents), profiles.mjs and profiles/ (one
// profile per IdP; profiles/profile.mjs says what a profile holds), server.mjs
// (routing and the request log). This file starts the server and stops it.

import { fail, args, IDP, PORT } from './emulator/cli.mjs';
import { ORIGIN, P, setOrigin, setProfile } from './emulator/state.mjs';
import { PROFILES } from './emulator/profiles.mjs';
import { setRoutes, server } from './emulator/server.mjs';

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

let shuttingDown = false;
function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

if (!args['ignore-stdin']) {
  // EOF on stdin means the parent is gone (or closed the pipe on purpose):
  // never outlive it. Whatever is written to stdin is ignored.
  process.stdin.on('data', () => {});
  process.stdin.on('end', shutdown);
  process.stdin.on('close', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${PORT}: ${err.message}`));

// Listens on 127.0.0.1 only: nothing but this machine reaches the emulator or
// its /__emulator/ endpoint.
server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  setOrigin(`http://127.0.0.1:${port}`);
  // Issuers and documents name the real port, so the profile is built now.
  setProfile(PROFILES[IDP]());
  setRoutes(new Map(Object.entries(P.routes())));
  process.stdout.write(`${JSON.stringify({ origin: ORIGIN, port, issuer: P.issuer })}\n`);
});
