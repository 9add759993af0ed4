// WorkOS AuthKit (--idp workos): registration, client ID metadata documents,
// aud from `resource`.

import { USER, ORIGIN } from '../state.mjs';
import { sha256 } from '../ids.mjs';
import { oneOrMany } from '../tokens.mjs';
import { metadata, rootIssuerRoutes } from '../routes.mjs';
import { BASIC_AND_POST, always, jwtAccess } from './profile.mjs';

// ----- WorkOS AuthKit --------------------------------------------------------
// Uncertain: AuthKit's access token claims beyond iss/sub/sid/aud/exp (we add
// client_id and scope); aud is the requested resource (RFC 8707), absent
// without one.

export function workos() {
  const issuer = ORIGIN; // https://{name}.authkit.app
  const ulid = (label) => `01${sha256(`${label}\0${USER.sub}`).toString('hex').toUpperCase().slice(0, 24)}`;
  const sub = `user_${ulid('workos-user')}`;
  const ep = {
    authorization: '/oauth2/authorize',
    token: '/oauth2/token',
    userinfo: '/oauth2/userinfo',
    jwks: '/oauth2/jwks',
    registration: '/oauth2/register',
  };
  const meta = () => metadata(issuer, ep, { client_id_metadata_document_supported: true });
  return {
    issuer,
    routes: rootIssuerRoutes(ep, meta),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: always,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    cimd: true,
    idClaims: () => ({ sub }),
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub,
      sid: `session_${ulid(`workos-session\0${grant.sid}`)}`,
      aud: grant.resources.length ? oneOrMany(grant.resources) : undefined,
      client_id: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: () => ({ sub, email: USER.email, email_verified: true, name: USER.name, given_name: USER.name }),
  };
}
