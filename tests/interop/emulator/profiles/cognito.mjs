// Amazon Cognito (--idp cognito): the pool issuer, the hosted UI's endpoints,
// access tokens without aud.

import * as crypto from 'node:crypto';
import { fail, args } from '../cli.mjs';
import { USER, ORIGIN } from '../state.mjs';
import { guidFor } from '../ids.mjs';
import { document, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, always, jwtAccess } from './profile.mjs';

// ----- Amazon Cognito ------------------------------------------------------

export function cognito() {
  const region = args.region ?? 'us-east-1';
  const pool = args.pool ?? 'us-east-1_Ab12Cd34E';
  if (!/^[a-z]{2}(-gov)?-[a-z]+-\d$/.test(region)) fail('--region must be an AWS region, e.g. us-east-1');
  if (!/^[a-z0-9-]+_[A-Za-z0-9]+$/.test(pool)) fail('--pool must be a user pool id, e.g. us-east-1_Ab12Cd34E');
  if (!pool.startsWith(`${region}_`)) console.error(`emulator[cognito]: note: pool ${pool} is not in region ${region}`);
  const issuer = `${ORIGIN}/${pool}`; // https://cognito-idp.{region}.amazonaws.com/{pool}
  const sub = guidFor('cognito-sub');
  // The hosted UI (https://{domain}.auth.{region}.amazoncognito.com in reality)
  // serves the OAuth endpoints; the pool's own host the documents and keys.
  const ep = {
    authorization: '/oauth2/authorize',
    token: '/oauth2/token',
    userinfo: '/oauth2/userInfo',
    jwks: `/${pool}/.well-known/jwks.json`,
  };
  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      // Cognito's document, as published: no code_challenge_methods_supported
      // although S256 works, and no registration endpoint.
      [`/${pool}/.well-known/openid-configuration`]: document(metadata(issuer, ep, {
        code_challenge_methods_supported: undefined,
        grant_types_supported: undefined,
        response_modes_supported: undefined,
        response_types_supported: ['code', 'token'],
        scopes_supported: ['openid', 'email', 'phone', 'profile'],
        end_session_endpoint: `${ORIGIN}/logout`,
        revocation_endpoint: `${ORIGIN}/oauth2/revoke`,
      })),
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    onAuthorize(grant) {
      grant.originJti = crypto.randomUUID();
      grant.eventId = crypto.randomUUID();
    },
    refresh: always,
    // A refresh answer has new access and ID tokens and no refresh token; the
    // one redeemed keeps working (without refresh token rotation, the default).
    rotation: 'keep',
    oidc: true,
    idClaims: (grant) => ({
      sub,
      'cognito:groups': ['admins'],
      'cognito:username': USER.sub,
      origin_jti: grant.originJti,
      event_id: grant.eventId,
      token_use: 'id',
      jti: crypto.randomUUID(),
      email: USER.email,
      email_verified: true,
      name: USER.name,
    }),
    // No aud: the app client is in client_id, the kind of token in token_use.
    accessToken: (grant) => jwtAccess({
      sub,
      'cognito:groups': ['admins'],
      iss: issuer,
      version: 2,
      client_id: grant.clientId,
      origin_jti: grant.originJti,
      event_id: grant.eventId,
      token_use: 'access',
      scope: grant.scope,
      auth_time: grant.authTime,
      username: USER.sub,
    }, { typ: undefined }),
    idHeader: { typ: undefined },
    // Cognito's userInfo answers email_verified as a string.
    userinfo: () => ({ sub, email_verified: 'true', email: USER.email, name: USER.name, username: USER.sub }),
  };
}
