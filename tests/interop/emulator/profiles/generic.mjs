// A plain OpenID provider (--idp generic): the common behaviour, both
// discovery documents, aud from `resource` or the client.

import { ORIGIN } from '../state.mjs';
import { oneOrMany } from '../tokens.mjs';
import { metadata, rootIssuerRoutes } from '../routes.mjs';
import { BASIC_AND_POST, always, jwtAccess, standardUserinfo } from './profile.mjs';

// ----- A plain OpenID provider ---------------------------------------------------

export function generic() {
  const issuer = ORIGIN;
  const ep = { authorization: '/authorize', token: '/token', userinfo: '/userinfo', jwks: '/jwks', registration: '/register' };
  const meta = () => metadata(issuer, ep);
  return {
    issuer,
    routes: rootIssuerRoutes(ep, meta),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: always,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic' },
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub: grant.sub,
      aud: grant.resources.length ? oneOrMany(grant.resources) : grant.clientId,
      client_id: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: (record) => standardUserinfo(record),
  };
}
