// HTTP plumbing: the errors handlers throw, the answers (JSON, form,
// redirect), and reading requests (bodies, bearer tokens, HTTP Basic
// credentials).

// ---------------------------------------------------------------------------
// HTTP plumbing
// ---------------------------------------------------------------------------

/** An answer other than 200, thrown by handlers. `oauth` keeps the RFC 6749 error for IdPs that reshape it. */
export class HttpError extends Error {
  constructor(status, body, headers = {}, oauth = undefined) {
    super(typeof body === 'object' ? JSON.stringify(body) : String(body));
    this.status = status;
    this.body = body;
    this.headers = headers;
    this.oauth = oauth;
  }
}

/** An RFC 6749 section 5.2 error. `github` names GitHub's own code for it, where it has one. */
export function oauthError(status, error, description, github = undefined) {
  return new HttpError(status, { error, error_description: description }, {}, { error, description, github });
}

export function sendJson(res, status, body, headers = {}) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(payload);
}

export function sendForm(res, status, body) {
  const entries = Object.entries(body).filter(([, v]) => v !== undefined).map(([k, v]) => [k, String(v)]);
  const payload = new URLSearchParams(entries).toString();
  res.writeHead(status, {
    'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
    'cache-control': 'no-store',
  });
  res.end(payload);
}

export function redirectTo(res, target, params) {
  const url = new URL(target);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) url.searchParams.set(k, v);
  }
  res.writeHead(302, { location: url.href, 'cache-control': 'no-store', 'content-length': 0 });
  res.end();
}

export async function readBody(req, limit = 64 * 1024) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > limit) throw new HttpError(413, { error: 'invalid_request', error_description: 'request body too large' });
  }
  return body;
}

export const contentType = (req) => (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();

/** A JSON object body as URLSearchParams (GitHub takes JSON token requests). */
export function jsonAsParams(raw) {
  let obj;
  try {
    obj = JSON.parse(raw || '{}');
  } catch {
    throw oauthError(400, 'invalid_request', 'the body is not JSON');
  }
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(obj ?? {})) {
    for (const item of Array.isArray(v) ? v : [v]) {
      if (item !== null && item !== undefined) params.append(k, String(item));
    }
  }
  return params;
}

export function bearerToken(req, schemes = ['bearer']) {
  const header = req.headers.authorization ?? '';
  const space = header.indexOf(' ');
  if (space < 0 || !schemes.includes(header.slice(0, space).toLowerCase())) return undefined;
  return header.slice(space + 1).trim() || undefined;
}

/** Form-url-decoding of the parts of HTTP Basic client credentials (RFC 6749 section 2.3.1). */
function formDecode(value) {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/**
 * HTTP Basic credentials. At token endpoints both parts are form-url-encoded
 * first (RFC 6749 section 2.3.1); elsewhere (GitHub's REST API) they are
 * plain RFC 7617 user and password: `formEncoded` false.
 */
export function basicCredentials(req, { formEncoded = true } = {}) {
  const header = req.headers.authorization ?? '';
  if (!/^basic /i.test(header)) return undefined;
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { malformed: true };
  const part = formEncoded ? formDecode : (value) => value;
  const id = part(decoded.slice(0, colon));
  const secret = part(decoded.slice(colon + 1));
  if (id === undefined || secret === undefined) return { malformed: true };
  return { id, secret };
}
