// Stytch Connected Apps (--idp stytch): the project-domain issuer, registered
// clients named connected-app-…, aud of the project and the resources.

import { fail, args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { now, guidFor } from '../ids.mjs';
import { metadata, rootIssuerRoutes } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess, jwtAccess } from './profile.mjs';

// ----- Stytch Connected Apps ---------------------------------------------------
// Uncertain: the authorization endpoint is a page of the customer's own
// application in reality (configured in Stytch's dashboard); /v1/oauth2/authorize
// stands in for it. Token, userinfo, keys and the discovery documents are
// Stytch's documented paths on the project domain.

export function stytch() {
  const project = args.project ?? 'project-test-11111111-2222-3333-4444-555555555555';
  const env = project.match(/^project-(test|live)-/)?.[1];
  if (!env) fail('--project must be a Stytch project id (project-test-… or project-live-…)');
  const issuer = ORIGIN; // https://{project domain}
  const sub = `user-${env}-${guidFor('stytch-user')}`;
  const ep = {
    authorization: '/v1/oauth2/authorize',
    token: '/v1/oauth2/token',
    userinfo: '/v1/oauth2/userinfo',
    jwks: '/.well-known/jwks.json',
    registration: '/v1/oauth2/register',
  };
  const meta = () => metadata(issuer, ep, { token_endpoint_auth_methods_supported: [...BASIC_AND_POST, 'none'] });
  return {
    issuer,
    routes: rootIssuerRoutes(ep, meta),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'client_secret_basic', idPrefix: `connected-app-${env}-` },
    idClaims: () => ({ sub }),
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub,
      aud: [project, ...grant.resources],
      client_id: grant.clientId,
      scope: grant.scope,
      nbf: now(),
    }),
    userinfo: () => ({ sub, email: USER.email, email_verified: true, name: USER.name }),
  };
}
