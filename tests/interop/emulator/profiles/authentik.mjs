// authentik (--idp authentik): the per-application issuer, shared endpoints,
// access tokens whose audience is the client.

import { fail, args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { sha256 } from '../ids.mjs';
import { document, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess, jwtAccess } from './profile.mjs';

// ----- authentik -------------------------------------------------------------

export function authentik() {
  const slug = args.slug ?? 'mcp';
  if (!/^[A-Za-z0-9_-]+$/.test(slug)) fail('--slug must be letters, digits, - and _');
  const issuer = `${ORIGIN}/application/o/${slug}/`;
  // authentik's default subject mode: a hash of the user's id.
  const sub = sha256(`authentik\0${USER.sub}`).toString('hex');
  const uid = sha256(`authentik-uid\0${USER.sub}`).toString('hex').slice(0, 40);
  const ep = {
    authorization: '/application/o/authorize/',
    token: '/application/o/token/',
    userinfo: '/application/o/userinfo/',
    jwks: `/application/o/${slug}/jwks/`,
  };
  const userClaims = {
    email: USER.email, email_verified: true, name: USER.name, given_name: USER.name,
    preferred_username: USER.login, nickname: USER.login, groups: ['authentik Admins', 'mcp-users'],
  };
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      [`/application/o/${slug}/.well-known/openid-configuration`]: document(metadata(issuer, ep, {
        introspection_endpoint: `${ORIGIN}/application/o/introspect/`,
        revocation_endpoint: `${ORIGIN}/application/o/revoke/`,
        end_session_endpoint: `${ORIGIN}/application/o/${slug}/end-session/`,
        code_challenge_methods_supported: ['plain', 'S256'],
      })),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    idClaims: (grant) => ({
      sub, uid, azp: grant.clientId, acr: 'goauthentik.io/providers/oauth2/default', sid: grant.sid, ...userClaims,
    }),
    // The access token's audience is the client itself.
    accessToken: (grant) => jwtAccess({
      iss: issuer, sub, aud: grant.clientId, auth_time: grant.authTime, acr: 'goauthentik.io/providers/oauth2/default',
      sid: grant.sid, azp: grant.clientId, uid, scope: grant.scope, ...userClaims,
    }),
    userinfo: () => ({ sub, ...userClaims }),
  };
}
