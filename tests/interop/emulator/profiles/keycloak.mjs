// Keycloak (--idp keycloak): realm paths, the realm's default client scopes,
// anonymous registration refused by the Trusted Hosts policy.

import { args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { document, refuse, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, always, jwtAccess } from './profile.mjs';

// ----- Keycloak ----------------------------------------------------------------

export function keycloak() {
  const realm = args.realm ?? 'mcp';
  const base = `/realms/${realm}`;
  const issuer = ORIGIN + base;
  const oidc = `${base}/protocol/openid-connect`;
  const ep = {
    authorization: `${oidc}/auth`,
    token: `${oidc}/token`,
    userinfo: `${oidc}/userinfo`,
    jwks: `${oidc}/certs`,
  };
  const meta = () => metadata(issuer, ep, {
    introspection_endpoint: `${ORIGIN}${oidc}/token/introspect`,
    end_session_endpoint: `${ORIGIN}${oidc}/logout`,
    registration_endpoint: `${ORIGIN}${base}/clients-registrations/openid-connect`,
    code_challenge_methods_supported: ['plain', 'S256'],
    token_endpoint_auth_methods_supported: [
      'private_key_jwt', 'client_secret_basic', 'client_secret_post', 'tls_client_auth', 'client_secret_jwt',
    ],
  });
  // Anonymous registration meets the Trusted Hosts policy, which lets no host in by default.
  const trustedHosts = refuse(403, {
    error: 'insufficient_scope',
    error_description: 'Policy \'Trusted Hosts\' rejected request to client-registration service. Details: Host not trusted.',
  });
  // Keycloak always applies the realm's default client scopes (profile, email…),
  // asked for or not.
  const scopeOf = (grant) => [...new Set([...grant.scopes, 'profile', 'email'])].join(' ');
  const userClaims = {
    email_verified: true, name: USER.name, preferred_username: USER.login, given_name: USER.name, email: USER.email,
  };
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      [`${base}/.well-known/openid-configuration`]: document(meta()),
      // Keycloak 25 added the RFC 8414 document appended to the issuer, 26.4
      // the RFC 8414 (path-inserted) location; --oauth-metadata serves both,
      // without it this is an older Keycloak with the OpenID document only.
      ...(args['oauth-metadata'] ? {
        [`${base}/.well-known/oauth-authorization-server`]: document(meta()),
        [`/.well-known/oauth-authorization-server${base}`]: document(meta()),
      } : {}),
      [`${base}/clients-registrations/openid-connect`]: trustedHosts,
      [`${base}/clients-registrations/default`]: trustedHosts,
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    refresh: always,
    rotation: 'reissue', // "Revoke Refresh Token" is off by default
    oidc: true,
    idClaims: (grant) => ({ typ: 'ID', azp: grant.clientId, sid: grant.sid, acr: '1', ...userClaims }),
    accessToken: (grant) => jwtAccess({
      auth_time: grant.authTime,
      iss: issuer,
      aud: args.audience ? [args.audience, 'account'] : 'account',
      sub: grant.sub,
      typ: 'Bearer',
      azp: grant.clientId,
      sid: grant.sid,
      acr: '1',
      'allowed-origins': [],
      realm_access: { roles: [`default-roles-${realm}`, 'offline_access', 'uma_authorization'] },
      resource_access: { account: { roles: ['manage-account', 'manage-account-links', 'view-profile'] } },
      scope: scopeOf(grant),
      ...userClaims,
    }),
    tokenResponse: (body, grant) => ({
      ...body,
      scope: scopeOf(grant),
      refresh_expires_in: body.refresh_token ? 1800 : undefined,
      'not-before-policy': 0,
      session_state: grant.sid,
    }),
    userinfo: (record) => ({ sub: record.grant.sub, ...userClaims }),
  };
}
