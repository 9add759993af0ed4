// Microsoft Entra ID (--idp entra): tenant, common and organizations paths, v1
// and v2 access tokens for the API, Microsoft Graph's tokens and userinfo,
// `resource` refused.

import { fail, args, TTL, GUID } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { rand, sha256, guidFor } from '../ids.mjs';
import { hasScope, signJwt, lifetime } from '../tokens.mjs';
import { HttpError } from '../http.mjs';
import { document, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess } from './profile.mjs';

// ----- Microsoft Entra ID ---------------------------------------------------

export function entra() {
  const tid = (args.tenant ?? '0b5c6f2e-1f9a-4c3e-9b1d-7a2e4c6d8f10').toLowerCase();
  if (!GUID.test(tid)) fail('--tenant must be a GUID (the Directory (tenant) ID)');
  const version = args['token-version'] ?? '2';
  if (version !== '1' && version !== '2') fail('--token-version must be 1 or 2');
  const appIdUri = args['app-id-uri'] ?? 'api://mcp-api';
  const applicationId = (args['application-id'] ?? '5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f').toLowerCase();
  if (!GUID.test(applicationId)) fail('--application-id must be a GUID');

  const issuerV2 = `${ORIGIN}/${tid}/v2.0`;
  const issuerV1 = `${ORIGIN}/${tid}/`; // https://sts.windows.net/{tid}/ in reality
  const GRAPH = '00000003-0000-0000-c000-000000000000';
  const oid = guidFor('entra-oid');
  const apiPrefix = `${appIdUri}/`;
  // `{app-id-uri}/.default` asks for every delegated permission the API's
  // client has consent for; Entra then puts their names in scp, never
  // ".default". This emulated API has one: access_as_user.
  const permission = (scope) => {
    const name = scope.slice(scope.lastIndexOf('/') + 1);
    return name === '.default' ? 'access_as_user' : name;
  };
  const apiScopes = (grant) => grant.scopes.filter((s) => s.startsWith(apiPrefix));
  const common = (grant) => ({
    tid,
    oid,
    sub: grant.sub,
    name: USER.name,
    aio: rand(12),
    uti: rand(16),
    rh: `0.${rand(12)}.`,
  });

  const endpoints = (t) => ({
    authorization: `/${t}/oauth2/v2.0/authorize`,
    token: `/${t}/oauth2/v2.0/token`,
    userinfo: '/oidc/userinfo', // https://graph.microsoft.com/oidc/userinfo
    jwks: `/${t}/discovery/v2.0/keys`,
  });
  // Entra's documents, as published: no code_challenge_methods_supported
  // although S256 works (a known obstacle for MCP clients, which refuse to
  // proceed without it), no registration endpoint, pairwise subjects, and for
  // the multi-tenant ones the issuer as a literal `{tenantid}` template.
  const discovery = (t) => metadata(t === tid ? issuerV2 : `${ORIGIN}/{tenantid}/v2.0`, endpoints(t), {
    code_challenge_methods_supported: undefined,
    token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
    response_modes_supported: ['query', 'fragment', 'form_post'],
    response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
    grant_types_supported: undefined,
    subject_types_supported: ['pairwise'],
    request_uri_parameter_supported: false,
    end_session_endpoint: `${ORIGIN}/${t}/oauth2/v2.0/logout`,
    device_authorization_endpoint: `${ORIGIN}/${t}/oauth2/v2.0/devicecode`,
    frontchannel_logout_supported: true,
    http_logout_supported: true,
    tenant_region_scope: t === tid ? 'EU' : null,
    cloud_instance_name: 'microsoftonline.com',
    cloud_graph_host_name: 'graph.windows.net',
    msgraph_host: 'graph.microsoft.com',
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'nonce', 'preferred_username',
      'name', 'tid', 'ver', 'at_hash', 'c_hash', 'email'],
  });

  return {
    issuer: issuerV2,
    routes() {
      const routes = {};
      for (const t of [tid, 'common', 'organizations']) {
        Object.assign(routes, standardRoutes(endpoints(t)), {
          [`/${t}/v2.0/.well-known/openid-configuration`]: document(discovery(t)),
        });
      }
      return routes; // and no RFC 8414 document, no registration endpoint
    },
    tokenAuth: BASIC_AND_POST,
    resource: 'refused',
    resourceRefusal: {
      error: 'invalid_target',
      error_description: 'AADSTS9010010: The resource parameter provided in the request doesn\'t match with the requested scopes.',
    },
    refresh: withOfflineAccess,
    // Entra returns a new refresh token with every refresh and does not revoke
    // the one redeemed; and a refresh token may be redeemed for another
    // resource's scopes (multi-resource refresh tokens).
    rotation: 'reissue',
    refreshAnyScope: true,
    oidc: true,
    idClaims: (grant) => ({
      iss: issuerV2,
      tid,
      oid,
      ver: '2.0',
      email: undefined,
      email_verified: undefined,
      ...(hasScope(grant, 'profile') ? { preferred_username: USER.email } : {}),
      ...(hasScope(grant, 'email') ? { email: USER.email } : {}),
    }),
    accessToken(grant) {
      const api = apiScopes(grant);
      if (api.length) {
        const scp = [...new Set(api.map(permission))].join(' ');
        const claims = version === '2'
          ? { aud: applicationId, iss: issuerV2, azp: grant.clientId, azpacr: grant.clientIsPublic ? '0' : '1',
            ...common(grant), scp, preferred_username: USER.email, ver: '2.0' }
          // v1 tokens name the user by upn/unique_name: preferred_username is a v2.0 claim.
          : { aud: appIdUri, iss: issuerV1, appid: grant.clientId, appidacr: grant.clientIsPublic ? '0' : '1',
            ...common(grant), scp, upn: USER.email, unique_name: USER.email, ver: '1.0' };
        const full = { ...claims, ...lifetime(TTL, { nbf: true }) };
        return { token: signJwt(full), claims: full };
      }
      // No scope of the API: the token is for Microsoft Graph. Graph's tokens
      // carry a nonce in the JWT header and the signature covers its SHA-256
      // instead, so no one but Graph can verify them: a resource server must
      // not try (and must not take them).
      const nonce = rand(32);
      const full = {
        aud: GRAPH, iss: issuerV1, appid: grant.clientId, appidacr: grant.clientIsPublic ? '0' : '1',
        ...common(grant), scp: 'openid profile email User.Read', upn: USER.email, unique_name: USER.email,
        ver: '1.0', ...lifetime(TTL, { nbf: true }),
      };
      return { token: signJwt(full, { nonce }, { nonce: sha256(nonce).toString('base64url') }), claims: full };
    },
    tokenResponse(body, grant) {
      const api = apiScopes(grant);
      const scope = api.length
        ? [...new Set(api.map((s) => apiPrefix + permission(s)))].join(' ')
        : 'openid profile email User.Read';
      return { ...body, scope, ext_expires_in: body.expires_in };
    },
    // graph.microsoft.com/oidc/userinfo takes Graph's tokens only.
    userinfo(record) {
      if (record.claims?.aud !== GRAPH) {
        throw new HttpError(401, {
          error: { code: 'InvalidAuthenticationToken', message: 'Access token validation failure. Invalid audience.' },
        }, { 'www-authenticate': 'Bearer realm=""' });
      }
      return { sub: record.grant.sub, name: USER.name, family_name: '', given_name: USER.name, email: USER.email };
    },
  };
}
