// Clients at the token endpoint: finding one by its id (given, registered, or
// a client ID metadata document) and authenticating it by the methods the IdP
// takes.

import { IDP } from './cli.mjs';
import { CLIENTS, P } from './state.mjs';
import { safeEqual } from './ids.mjs';
import { oauthError, basicCredentials } from './http.mjs';

// ---------------------------------------------------------------------------
// Clients: lookup and token endpoint authentication
// ---------------------------------------------------------------------------

/**
 * The client named `id`: a configured or registered one, or (IdPs with client
 * ID metadata documents) the document at `id` when it is an http(s) URL. The
 * document is fetched on every use (no caching), and only public clients
 * (token_endpoint_auth_method "none") are taken from documents.
 */
export async function findClient(id) {
  if (!id) return undefined;
  const known = CLIENTS.get(id);
  if (known) return known;
  if (!P.cimd || !/^https?:\/\//.test(id)) return undefined;
  try {
    const response = await fetch(id, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(5000) });
    if (!response.ok) return undefined;
    const doc = await response.json();
    const method = doc.token_endpoint_auth_method ?? 'none';
    if (doc.client_id !== id || !Array.isArray(doc.redirect_uris) || method !== 'none') return undefined;
    return { id, secret: null, redirectUris: doc.redirect_uris.filter((u) => typeof u === 'string') };
  } catch (err) {
    console.error(`emulator[${IDP}]: client ID metadata document ${id}: ${err.message}`);
    return undefined;
  }
}

/**
 * Authenticates the client of a token request by the methods the IdP takes
 * (P.tokenAuth). Returns { client, method } or throws invalid_client; `method`
 * is also recorded for the log before anything is checked.
 */
export async function authenticateClient(req, form, entry) {
  const basic = basicCredentials(req);
  const postSecret = form.get('client_secret');
  let method;
  let id;
  let secret;
  if (basic) {
    method = 'client_secret_basic';
    if (basic.malformed) throw oauthError(401, 'invalid_client', 'malformed HTTP Basic credentials', 'incorrect_client_credentials');
    if (postSecret !== null) {
      throw oauthError(400, 'invalid_request', 'more than one client authentication method (RFC 6749 section 2.3)');
    }
    if (form.get('client_id') !== null && form.get('client_id') !== basic.id) {
      throw oauthError(400, 'invalid_request', 'client_id in the body differs from the HTTP Basic user');
    }
    ({ id, secret } = basic);
  } else if (postSecret !== null) {
    method = 'client_secret_post';
    id = form.get('client_id');
    secret = postSecret;
  } else {
    method = 'none';
    id = form.get('client_id');
  }
  entry.client_auth = method;
  entry.client_id = id;
  const unauthorized = (why) => {
    const err = oauthError(401, 'invalid_client', why, 'incorrect_client_credentials');
    if (method === 'client_secret_basic') err.headers['www-authenticate'] = 'Basic realm="token"';
    return err;
  };
  const client = await findClient(id);
  if (!client) throw unauthorized(`unknown client ${JSON.stringify(id ?? '')}`);
  if (method === 'none') {
    if (client.secret !== null) throw unauthorized('client authentication required');
  } else {
    if (!P.tokenAuth.includes(method)) throw unauthorized(`${method} is not a client authentication method of this IdP`);
    if (client.secret === null || !safeEqual(secret, client.secret)) throw unauthorized('client authentication failed');
  }
  return { client, method };
}
