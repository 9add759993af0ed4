// Route tables and discovery documents: the common endpoints as routes, fixed
// documents, refusing routes, and discovery metadata.

import { ORIGIN, P } from './state.mjs';
import { sendJson } from './http.mjs';
import { authorize, token, userinfo, jwks, register } from './endpoints.mjs';

// ---------------------------------------------------------------------------
// Route tables and discovery documents
// ---------------------------------------------------------------------------

export const AUTHORIZE = { GET: authorize };
export const TOKEN = { POST: token };
const USERINFO = { GET: userinfo, POST: userinfo };
const JWKS = { GET: jwks };
const REGISTER = { POST: register };

/** A GET route answering a fixed JSON document (built when the route table is). */
export const document = (body) => ({ GET: (req, res) => sendJson(res, 200, body, { 'cache-control': 'public, max-age=60' }) });

/** A route answering `status` with `body` to any method (endpoints that refuse). */
export const refuse = (status, body) => {
  const handler = (req, res) => sendJson(res, status, body);
  return { GET: handler, POST: handler, PUT: handler, DELETE: handler };
};

/** The common routes of the endpoints `ep` names (paths). */
export function standardRoutes(ep) {
  return {
    [ep.authorization]: AUTHORIZE,
    [ep.token]: TOKEN,
    ...(ep.userinfo ? { [ep.userinfo]: USERINFO } : {}),
    ...(ep.jwks ? { [ep.jwks]: JWKS } : {}),
    ...(ep.registration ? { [ep.registration]: REGISTER } : {}),
  };
}

/**
 * The route table of an issuer at the origin's root: the common routes, and
 * both discovery documents (`meta()`, built when the table is) at their
 * well-known paths.
 */
export const rootIssuerRoutes = (ep, meta) => () => ({
  ...standardRoutes(ep),
  '/.well-known/openid-configuration': document(meta()),
  '/.well-known/oauth-authorization-server': document(meta()),
});

/**
 * Discovery metadata (OpenID Connect Discovery / RFC 8414) for the endpoints
 * `ep` names. `extra` adds members or, set to undefined, removes them.
 */
export function metadata(issuer, ep, extra = {}) {
  const at = (path) => (path ? ORIGIN + path : undefined);
  return {
    issuer,
    authorization_endpoint: at(ep.authorization),
    token_endpoint: at(ep.token),
    userinfo_endpoint: at(ep.userinfo),
    jwks_uri: at(ep.jwks),
    registration_endpoint: at(ep.registration),
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
    token_endpoint_auth_methods_supported: P.tokenAuth,
    code_challenge_methods_supported: ['S256'],
    ...extra,
  };
}
