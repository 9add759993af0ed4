// Keycard (--idp keycard): the zone as audience, the resource in its own
// claim, client ID metadata documents.

import { fail, args } from '../cli.mjs';
import { ORIGIN } from '../state.mjs';
import { oneOrMany } from '../tokens.mjs';
import { metadata, rootIssuerRoutes } from '../routes.mjs';
import { BASIC_AND_POST, always, jwtAccess, standardUserinfo } from './profile.mjs';

// ----- Keycard -----------------------------------------------------------------
// Uncertain: the key set's and userinfo's paths. Keycard's documentation
// names the zone's endpoints but not these paths.

export function keycard() {
  const zone = args.zone ?? 'z1a2b3c4';
  if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(zone)) fail('--zone must be letters, digits and -');
  const issuer = ORIGIN; // https://{zone}.keycard.cloud
  const ep = {
    authorization: '/oauth/authorize',
    token: '/oauth/token',
    userinfo: '/oauth/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: '/oauth/register',
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
    // The audience is the zone; the protected resource is in its own claim.
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub: grant.sub,
      aud: issuer,
      resource: grant.resources.length ? oneOrMany(grant.resources) : undefined,
      client_id: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: (record) => standardUserinfo(record),
  };
}
