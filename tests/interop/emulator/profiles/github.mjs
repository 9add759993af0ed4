// GitHub (--idp github): OAuth 2 without OpenID Connect, its token endpoint's
// liberties and answers, GET /user and the check-a-token API.

import { args, TTL_GIVEN, TTL } from '../cli.mjs';
import { CLIENTS, USER, ACCESS, ORIGIN } from '../state.mjs';
import { sha256, alnum, safeEqual } from '../ids.mjs';
import { sendJson, sendForm, readBody, bearerToken, basicCredentials } from '../http.mjs';
import { AUTHORIZE, TOKEN } from '../routes.mjs';

// ----- GitHub (OAuth 2 only, no OpenID Connect) -------------------------------

export function github() {
  const expiring = Boolean(args.expiring);
  // The user's numeric id (what the preset takes as subject): --user when it
  // is a number, else 4242.
  const userId = /^\d+$/.test(USER.sub) ? Number(USER.sub) : 4242;
  const user = {
    login: USER.login,
    id: userId,
    node_id: `U_${Buffer.from(`04:User${userId}`).toString('base64url')}`,
    type: 'User',
    site_admin: false,
    name: USER.name,
    email: USER.email,
  };
  const wantsJson = (req) => (req.headers.accept ?? '').toLowerCase().includes('application/json');
  const DOCS = 'https://docs.github.com/rest';
  const CHECK_DOCS = `${DOCS}/apps/oauth-applications#check-a-token`;

  // GET /user on api.github.com: `Authorization: Bearer …` or `token …`.
  function getUser(req, res) {
    const value = bearerToken(req, ['bearer', 'token']);
    if (!value) {
      return sendJson(res, 401, {
        message: 'Requires authentication', documentation_url: `${DOCS}/users/users#get-the-authenticated-user`, status: '401',
      });
    }
    const record = ACCESS.get(value);
    if (!record || record.expiresAt < Date.now()) {
      return sendJson(res, 401, { message: 'Bad credentials', documentation_url: DOCS, status: '401' });
    }
    return sendJson(res, 200, user);
  }

  // POST /applications/{client_id}/token: "check a token", with the app's
  // client id and secret as HTTP Basic credentials.
  async function checkToken(req, res, url, entry) {
    const clientId = decodeURIComponent(url.pathname.split('/')[2]);
    entry.client_id = clientId;
    const basic = basicCredentials(req, { formEncoded: false });
    entry.client_auth = basic ? 'client_secret_basic' : 'none';
    const client = CLIENTS.get(clientId);
    // (Which status GitHub gives wrong app credentials here is uncertain.)
    if (!basic || basic.malformed || basic.id !== clientId || !client?.secret || !safeEqual(basic.secret, client.secret)) {
      return sendJson(res, 401, { message: 'Requires authentication', documentation_url: CHECK_DOCS, status: '401' });
    }
    let body;
    try {
      body = JSON.parse((await readBody(req)) || '{}');
    } catch {
      body = {};
    }
    if (typeof body.access_token !== 'string') {
      return sendJson(res, 422, { message: 'Invalid request.\n\n"access_token" wasn\'t supplied.', status: '422' });
    }
    const record = ACCESS.get(body.access_token);
    if (!record || record.expiresAt < Date.now() || record.grant.clientId !== clientId) {
      return sendJson(res, 404, { message: 'Not Found', documentation_url: CHECK_DOCS, status: '404' });
    }
    const token = body.access_token;
    return sendJson(res, 200, {
      id: 1,
      url: `${ORIGIN}/authorizations/1`,
      app: { name: 'portcullis test', url: ORIGIN, client_id: clientId },
      token,
      hashed_token: sha256(token).toString('hex'),
      token_last_eight: token.slice(-8),
      note: null,
      note_url: null,
      created_at: new Date(record.issuedAt).toISOString(),
      updated_at: new Date().toISOString(),
      fingerprint: null,
      scopes: expiring ? [] : record.grant.scopes,
      expires_at: record.expiresAt === Infinity ? null : new Date(record.expiresAt).toISOString(),
      user,
    });
  }

  return {
    issuer: ORIGIN, // https://github.com (the preset's name for it; not an OpenID issuer)
    routes: () => ({
      '/login/oauth/authorize': AUTHORIZE,
      '/login/oauth/access_token': TOKEN,
      '/user': { GET: getUser }, // https://api.github.com/user
    }),
    // /applications/{client_id}/token: the one route with a variable part.
    prefixRoutes: [['/applications/', (path) => /^\/applications\/[^/]+\/token$/.test(path), { POST: checkToken }]],
    // The client id and secret go in the body (GitHub's documented way); HTTP
    // Basic works too.
    tokenAuth: ['client_secret_post', 'client_secret_basic'],
    resource: 'ignored',
    noResponseType: true, // GitHub takes no response_type
    grantTypeOptional: true, // nor a grant_type for the code exchange
    redirectUriOptionalAtToken: true,
    jsonTokenBody: true,
    scopeSeparators: /[\s,]+/,
    // Only GitHub Apps with expiring user tokens refresh; OAuth Apps' tokens never expire.
    refresh: () => expiring,
    rotation: 'rotate',
    refreshPrefix: 'ghr_',
    oidc: false,
    accessToken: () => (expiring
      ? { token: `ghu_${alnum(36)}`, expiresIn: TTL_GIVEN ? TTL : 28800 }
      : { token: `gho_${alnum(36)}`, expiresIn: null }),
    tokenResponse(body, grant) {
      return {
        access_token: body.access_token,
        expires_in: body.expires_in,
        refresh_token: body.refresh_token,
        refresh_token_expires_in: body.refresh_token ? 15897600 : undefined,
        // Comma-separated; a GitHub App's user token has permissions, not scopes.
        scope: expiring ? '' : grant.scopes.join(','),
        token_type: 'bearer',
      };
    },
    sendToken: (req, res, body) => (wantsJson(req) ? sendJson(res, 200, body) : sendForm(res, 200, body)),
    // Token endpoint errors come back as 200 with an `error` field, in
    // GitHub's own words.
    sendTokenError(req, res, err) {
      const body = {
        error: err.oauth.github ?? err.oauth.error,
        error_description: err.oauth.description,
        error_uri: 'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors',
      };
      return wantsJson(req) ? sendJson(res, 200, body) : sendForm(res, 200, body);
    },
    userinfo: () => user,
  };
}
