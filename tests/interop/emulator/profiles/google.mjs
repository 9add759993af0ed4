// Google (--idp google): opaque ya29. tokens, tokeninfo, refresh tokens on the
// first offline consent only.

import { USER, ACCESS, ORIGIN } from '../state.mjs';
import { now } from '../ids.mjs';
import { splitScope, hasScope } from '../tokens.mjs';
import { sendJson, readBody } from '../http.mjs';
import { document, standardRoutes, metadata } from '../routes.mjs';
import { BASIC_AND_POST, opaque } from './profile.mjs';

// ----- Google --------------------------------------------------------------

export function google() {
  const issuer = ORIGIN; // https://accounts.google.com
  const ep = {
    authorization: '/o/oauth2/v2/auth',
    token: '/token', // https://oauth2.googleapis.com/token
    userinfo: '/v1/userinfo', // https://openidconnect.googleapis.com/v1/userinfo
    jwks: '/oauth2/v3/certs', // https://www.googleapis.com/oauth2/v3/certs
  };
  // Who already gave a client offline access: Google returns a refresh token
  // on that first consent only, unless prompt=consent asks for consent again.
  const offlineConsents = new Set();
  // Google answers with its own names for the OpenID scopes.
  const EXPANDED = {
    email: 'https://www.googleapis.com/auth/userinfo.email',
    profile: 'https://www.googleapis.com/auth/userinfo.profile',
  };
  const scopeOut = (grant) => grant.scopes.map((s) => EXPANDED[s] ?? s).join(' ');

  async function tokeninfo(req, res, url, entry) {
    let value = url.searchParams.get('access_token');
    if (req.method === 'POST') {
      const raw = await readBody(req);
      value = new URLSearchParams(raw).get('access_token') ?? value;
    }
    const record = value ? ACCESS.get(value) : undefined;
    if (!record || record.expiresAt < Date.now()) {
      return sendJson(res, 400, { error: 'invalid_token', error_description: 'Invalid Value' });
    }
    const { grant } = record;
    entry.client_id = grant.clientId;
    // Google's tokeninfo answers numbers and booleans as strings.
    const exp = Math.floor(record.expiresAt / 1000);
    return sendJson(res, 200, {
      azp: grant.clientId,
      aud: grant.clientId,
      sub: grant.sub,
      scope: scopeOut(grant),
      exp: String(exp),
      expires_in: String(Math.max(0, exp - now())),
      ...(hasScope(grant, 'email') ? { email: USER.email, email_verified: 'true' } : {}),
      access_type: grant.offline ? 'offline' : 'online',
    });
  }

  return {
    issuer,
    routes: () => ({
      ...standardRoutes(ep),
      '/.well-known/openid-configuration': document(metadata(issuer, ep, {
        device_authorization_endpoint: `${ORIGIN}/device/code`,
        revocation_endpoint: `${ORIGIN}/revoke`,
        response_types_supported: [
          'code', 'token', 'id_token', 'code token', 'code id_token', 'token id_token', 'code token id_token', 'none',
        ],
        scopes_supported: ['openid', 'email', 'profile'],
        token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
        code_challenge_methods_supported: ['plain', 'S256'],
        grant_types_supported: [
          'authorization_code', 'refresh_token',
          'urn:ietf:params:oauth:grant-type:device_code', 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        ],
        claims_supported: ['aud', 'email', 'email_verified', 'exp', 'family_name', 'given_name', 'iat', 'iss', 'name', 'picture', 'sub'],
      })),
      '/tokeninfo': { GET: tokeninfo, POST: tokeninfo }, // https://oauth2.googleapis.com/tokeninfo
    }),
    tokenAuth: BASIC_AND_POST,
    resource: 'ignored',
    onAuthorize(grant, q) {
      const key = `${grant.sub}\0${grant.clientId}`;
      const consentAgain = splitScope(q.get('prompt')).includes('consent');
      grant.offline = q.get('access_type') === 'offline';
      grant.refreshOnRedeem = grant.offline && (consentAgain || !offlineConsents.has(key));
      if (grant.offline) offlineConsents.add(key);
    },
    refresh: (grant) => Boolean(grant.refreshOnRedeem),
    rotation: 'keep', // refresh answers carry no refresh token; the old one lives on
    oidc: true,
    idClaims: (grant) => ({ azp: grant.clientId, auth_time: undefined }),
    accessToken: () => opaque('ya29.'),
    tokenResponse: (body, grant) => ({ ...body, scope: scopeOut(grant) }),
    userinfo: (record) => ({
      sub: record.grant.sub,
      name: USER.name,
      given_name: USER.name,
      email: USER.email,
      email_verified: true,
    }),
  };
}
