// Clerk (--idp clerk): opaque or JWT access tokens without aud, optional
// registration.

import { args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { sha256 } from '../ids.mjs';
import { metadata, rootIssuerRoutes } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess, opaque, jwtAccess } from './profile.mjs';

// ----- Clerk -------------------------------------------------------------------
// Uncertain: the format of Clerk's OAuth access tokens. Opaque by default
// (the `oat_` prefix is our reading of Clerk's machine-token prefixes); with
// --jwt, JWTs whose claims below are a best guess. Clerk's documentation says
// nothing of `resource`, and integrations report its access tokens carry no
// aud at all: this emulation ignores `resource` and issues no aud.

export function clerk() {
  const issuer = ORIGIN; // https://clerk.example.com (the Frontend API domain)
  const sub = `user_${sha256(`clerk\0${USER.sub}`).toString('base64url').replace(/[-_]/g, '').slice(0, 27)}`;
  const ep = {
    authorization: '/oauth/authorize',
    token: '/oauth/token',
    userinfo: '/oauth/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: args.dcr ? '/oauth/register' : undefined,
  };
  const meta = () => metadata(issuer, ep, { revocation_endpoint: `${ORIGIN}/oauth/token/revoke` });
  return {
    issuer,
    routes: rootIssuerRoutes(ep, meta),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    idClaims: () => ({ sub }),
    accessToken: (grant) => (args.jwt
      ? jwtAccess({ iss: issuer, sub, client_id: grant.clientId, scope: grant.scope })
      : opaque('oat_')),
    userinfo: () => ({
      sub, user_id: sub, email: USER.email, email_verified: true, name: USER.name,
      given_name: USER.name, family_name: '', preferred_username: USER.login,
    }),
  };
}
