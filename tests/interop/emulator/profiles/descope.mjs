// Descope inbound apps (--idp descope): the project issuer, registration of
// public clients only, aud of the project and the resources.

import { fail, args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { sha256 } from '../ids.mjs';
import { document, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, withOfflineAccess, jwtAccess } from './profile.mjs';

// ----- Descope (inbound apps) --------------------------------------------------
// Uncertain: the access token's aud. We put [project id, resource…]; a
// third-party SDK's documentation says Descope binds aud to [client id,
// project id] for its MCP servers. The JWKS path is that of Descope's OpenID
// issuer `https://api.descope.com/{project}`. Descope registers only public
// (non-confidential) clients through DCR.

export function descope() {
  const project = args.project ?? 'P2abc123def456';
  if (!/^P[A-Za-z0-9]{7,}$/.test(project)) fail('--project must be a Descope project id ("P" then letters and digits)');
  const issuer = `${ORIGIN}/v1/apps/${project}`; // https://api.descope.com/v1/apps/{project}
  const ep = {
    authorization: '/oauth2/v1/apps/authorize',
    token: '/oauth2/v1/apps/token',
    userinfo: '/oauth2/v1/apps/userinfo',
    jwks: `/${project}/.well-known/jwks.json`,
    registration: `/v1/mgmt/inboundapp/app/${project}/register`,
  };
  const meta = () => metadata(issuer, ep, { revocation_endpoint: `${ORIGIN}/oauth2/v1/apps/revoke` });
  const sub = `U${sha256(`descope\0${USER.sub}`).toString('hex').slice(0, 27)}`;
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      [`/v1/apps/${project}/.well-known/openid-configuration`]: document(meta()),
      // RFC 8414's path-inserted location.
      [`/.well-known/oauth-authorization-server/v1/apps/${project}`]: document(meta()),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'honoured',
    refresh: withOfflineAccess,
    rotation: 'rotate',
    oidc: true,
    dcr: { defaultAuth: 'none', publicOnly: true },
    idClaims: () => ({ sub }),
    accessToken: (grant) => jwtAccess({
      iss: issuer,
      sub,
      aud: [project, ...grant.resources],
      azp: grant.clientId,
      scope: grant.scope,
    }),
    userinfo: () => ({ sub, email: USER.email, email_verified: true, name: USER.name }),
  };
}
