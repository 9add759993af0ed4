// Okta, a custom authorization server (--idp okta): documents appended to the
// issuer, Okta's access token claims, registration refused.

import { args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { rand, sha256, alnum } from '../ids.mjs';
import { hasScope } from '../tokens.mjs';
import { document, refuse, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess, jwtAccess, standardUserinfo } from './profile.mjs';

// ----- Okta (custom authorization server) ------------------------------------

export function okta() {
  const server = args['auth-server'] ?? 'default';
  const audience = args.audience ?? 'api://default';
  const base = `/oauth2/${server}`;
  const issuer = ORIGIN + base;
  const uid = `00u${sha256(`okta\0${USER.sub}`).toString('hex').slice(0, 17)}`;
  const ep = {
    authorization: `${base}/v1/authorize`,
    token: `${base}/v1/token`,
    userinfo: `${base}/v1/userinfo`,
    jwks: `${base}/v1/keys`,
  };
  const meta = () => metadata(issuer, ep, {
    introspection_endpoint: `${issuer}/v1/introspect`,
    revocation_endpoint: `${issuer}/v1/revoke`,
    end_session_endpoint: `${issuer}/v1/logout`,
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'none'],
    response_modes_supported: ['query', 'fragment', 'form_post', 'okta_post_message'],
  });
  return {
    issuer,
    // Both documents under the issuer, the RFC 8414 one APPENDED to it (the
    // path-inserted /.well-known/oauth-authorization-server/oauth2/{as} is 404).
    routes: () => ({
      ...standardRoutes(ep),
      [`${base}/.well-known/openid-configuration`]: document(meta()),
      [`${base}/.well-known/oauth-authorization-server`]: document(meta()),
      // Dynamic registration is an admin API that needs an SSWS API token
      // (error body uncertain).
      '/oauth2/v1/clients': refuse(401, {
        errorCode: 'E0000011', errorSummary: 'Invalid token provided', errorLink: 'E0000011',
        errorId: `oae${alnum(22)}`, errorCauses: [],
      }),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    idHeader: { typ: undefined },
    idClaims: (grant) => ({
      sub: uid, ver: 1, jti: `ID.${rand(24)}`, amr: ['pwd'], idp: `00o${alnum(17)}`,
      ...(hasScope(grant, 'profile') ? { preferred_username: USER.email } : {}),
    }),
    // Okta's access tokens: sub is the user's login, uid its id, scp an array.
    accessToken: (grant) => jwtAccess({
      ver: 1, jti: `AT.${rand(24)}`, iss: issuer, aud: audience, cid: grant.clientId, uid,
      scp: grant.scopes, auth_time: grant.authTime, sub: USER.email,
    }, { typ: undefined }),
    userinfo: (record) => ({ ...standardUserinfo(record, uid), preferred_username: USER.email }),
  };
}
