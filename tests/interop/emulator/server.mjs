// The HTTP server: routes each request to the profile's handlers, answers the
// HttpErrors they throw, and logs every request (GET /__emulator/log, one line
// on stderr each).

import * as http from 'node:http';
import { IDP } from './cli.mjs';
import { LOG, P } from './state.mjs';
import { HttpError, sendJson } from './http.mjs';
import { TOKEN } from './routes.mjs';

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

let ROUTES; // Map path -> { METHOD: handler }

/** Sets ROUTES once the profile is built (importers cannot assign it). */
export function setRoutes(routes) {
  ROUTES = routes;
}

function route(path) {
  const exact = ROUTES.get(path);
  if (exact) return exact;
  return P.prefixRoutes?.find(([prefix, matches]) => path.startsWith(prefix) && matches(path))?.[2];
}

function logLine(entry) {
  const parts = [`${entry.method} ${entry.path}`];
  if (entry.grant_type !== null) parts.push(`grant_type=${entry.grant_type}`);
  if (entry.client_auth !== null) parts.push(`client_auth=${entry.client_auth}`);
  if (entry.client_id) parts.push(`client_id=${entry.client_id}`);
  for (const key of ['scope', 'resource', 'audience', 'access_type', 'prompt']) {
    if (entry[key] !== null && entry[key] !== undefined) parts.push(`${key}=${JSON.stringify(entry[key])}`);
  }
  console.error(`emulator[${IDP}]: ${parts.join(' ')} -> ${entry.status}`);
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/__emulator/log') {
    return req.method === 'GET' ? sendJson(res, 200, LOG) : sendJson(res, 405, { error: 'use GET' });
  }
  const entry = {
    at: new Date().toISOString(),
    method: req.method,
    path: url.pathname,
    status: undefined,
    client_id: null,
    grant_type: null, // token requests only, as are client_auth
    client_auth: null,
    scope: null,
    resource: null,
    audience: null,
    access_type: null,
    prompt: null,
  };
  res.on('finish', () => {
    entry.status = res.statusCode;
    LOG.push(entry);
    logLine(entry);
  });

  const handlers = route(url.pathname);
  if (!handlers) return sendJson(res, 404, { error: 'not_found', error_description: `no ${url.pathname} at this IdP` });
  const handler = handlers[req.method];
  if (!handler) {
    return sendJson(res, 405, { error: 'invalid_request', error_description: `${req.method} not allowed` },
      { allow: Object.keys(handlers).join(', ') });
  }
  try {
    await handler(req, res, url, entry);
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    if (err.oauth && P.sendTokenError && handlers === TOKEN) return P.sendTokenError(req, res, err);
    return typeof err.body === 'string'
      ? (res.writeHead(err.status, { 'content-type': 'text/plain', ...err.headers }), res.end(err.body))
      : sendJson(res, err.status, err.body, err.headers);
  }
  return undefined;
}

export const server = http.createServer((req, res) => {
  if (!ROUTES) return sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
  handle(req, res).catch((err) => {
    console.error(`emulator[${IDP}]: ${req.method} ${req.url} failed:`, err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  });
  return undefined;
});
