// Auth0 (--idp auth0): the audience parameter (or `resource` with
// --resource-as-audience), opaque tokens without one, optional registration.

import { args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { rand } from '../ids.mjs';
import { hasScope, b64json } from '../tokens.mjs';
import { HttpError } from '../http.mjs';
import { document, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess, jwtAccess } from './profile.mjs';

// ----- Auth0 -----------------------------------------------------------------

export function auth0() {
  const issuer = `${ORIGIN}/`;
  const ep = {
    authorization: '/authorize',
    token: '/oauth/token',
    userinfo: '/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: args.dcr ? '/oidc/register' : undefined,
  };
  const sub = `auth0|${USER.sub}`;
  const OIDC_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access', 'address', 'phone']);
  return {
    issuer,
    // Only the OpenID document: /.well-known/oauth-authorization-server is 404
    // (uncertain: Auth0 may have added it for MCP since).
    routes: () => ({ ...standardRoutes(ep), '/.well-known/openid-configuration': document(metadata(issuer, ep, {
      revocation_endpoint: `${ORIGIN}/oauth/revoke`,
      device_authorization_endpoint: `${ORIGIN}/oauth/device/code`,
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt'],
      code_challenge_methods_supported: ['S256', 'plain'],
      response_modes_supported: ['query', 'fragment', 'form_post'],
    })) }),
    tokenAuth: BASIC_AND_POST,
    // `resource` is ignored unless the tenant has the Resource Parameter
    // Compatibility Profile (--resource-as-audience): then it is the audience.
    resource: 'ignored',
    onAuthorize(grant, q) {
      grant.audience = q.get('audience') ?? (args['resource-as-audience'] ? q.get('resource') : null) ?? undefined;
    },
    refresh: withOfflineAccess,
    rotation: 'rotate', // with Refresh Token Rotation on, as MCP set-ups have it
    oidc: true,
    dcr: { defaultAuth: 'client_secret_post' },
    idClaims: (grant) => ({
      sub,
      sid: grant.sid,
      ...(hasScope(grant, 'profile') ? { nickname: USER.login, updated_at: '2024-01-01T00:00:00.000Z' } : {}),
    }),
    accessToken(grant) {
      if (!grant.audience) {
        // Without an audience Auth0 issues a token only its /userinfo
        // understands. It is a JWE (five segments, "dir" + A256GCM) that no
        // one else can decrypt; here random bytes in that shape.
        const header = b64json({ alg: 'dir', enc: 'A256GCM', iss: issuer });
        return { token: `${header}..${rand(12)}.${rand(64)}.${rand(16)}` };
      }
      return jwtAccess({
        iss: issuer,
        sub,
        aud: hasScope(grant, 'openid') ? [grant.audience, `${ORIGIN}/userinfo`] : grant.audience,
        azp: grant.clientId,
        scope: grant.scope,
        permissions: grant.scopes.filter((s) => !OIDC_SCOPES.has(s)),
      });
    },
    userinfo(record) {
      const aud = record.claims?.aud;
      if (record.claims && !(Array.isArray(aud) && aud.includes(`${ORIGIN}/userinfo`))) {
        throw new HttpError(401, 'Unauthorized', { 'www-authenticate': 'Bearer error="invalid_token"' });
      }
      return {
        sub, nickname: USER.login, name: USER.name, email: USER.email, email_verified: true, updated_at: '2024-01-01T00:00:00.000Z',
      };
    },
  };
}
