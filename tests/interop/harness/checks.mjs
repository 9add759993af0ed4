// Checks every cell makes, whatever the client: raw JSON-RPC through
// portcullis, and the exact shape of its Bearer challenges.

import * as oauth from 'oauth4webapi';

export class CheckError extends Error {}

export function check(condition, message) {
  if (!condition) throw new CheckError(message);
}

/** The JSON-RPC `tools/call` of the sample server's `echo` tool. */
export function echoRequest(id, text) {
  return { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'echo', arguments: { text } } };
}

/** POSTs a JSON-RPC message to the MCP endpoint, as a sessionless Streamable HTTP client. */
export function postMcp(mcpUrl, message, token, { signal } = {}) {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
  };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  return fetch(mcpUrl, { method: 'POST', headers, body: JSON.stringify(message), signal });
}

/** The text of the first content item of a `tools/call` result. */
export function resultText(result) {
  return result?.content?.[0]?.text;
}

/**
 * The challenges of a response's WWW-Authenticate header, parsed by
 * oauth4webapi (RFC 7235, quoted and token values, several challenges).
 * oauth4webapi exposes its parser only through the requests it makes itself,
 * so the response at hand is handed to it as the answer of one.
 */
export async function challengesOf(response) {
  try {
    await oauth.protectedResourceRequest('-', 'GET', new URL(response.url), undefined, undefined, {
      [oauth.customFetch]: async () => response,
      [oauth.allowInsecureRequests]: true,
    });
  } catch (err) {
    if (err instanceof oauth.WWWAuthenticateChallengeError) return err.cause;
    throw err;
  }
  return undefined;
}

/** Asserts one Bearer challenge and returns its parameters. */
export function singleBearer(challenges, raw) {
  check(Array.isArray(challenges) && challenges.length === 1,
    `expected exactly one challenge, got ${challenges?.length ?? 'an unparseable header'}: ${raw}`);
  check(challenges[0].scheme === 'bearer', `expected a Bearer challenge: ${raw}`);
  return challenges[0].parameters;
}

/**
 * A token that differs from `token` in one character of its last part (the
 * JWS signature, or the tail of an opaque token). The final character is kept,
 * because in base64url it may carry only padding bits.
 */
export function tamper(token) {
  const i = token.length - 2;
  const replacement = token[i] === 'A' ? 'B' : 'A';
  return token.slice(0, i) + replacement + token.slice(i + 1);
}

/** The 401 of a request without a token: one Bearer challenge naming the metadata and scope, no error. */
export async function expectAnonymousChallenge(ctx) {
  const res = await postMcp(ctx.mcpUrl, echoRequest(1, 'anonymous'), undefined, { signal: ctx.signal });
  await res.body?.cancel();
  check(res.status === 401, `no token: expected 401, got ${res.status}`);
  const raw = res.headers.get('www-authenticate');
  const params = singleBearer(await challengesOf(res), raw);
  check(params.resource_metadata === ctx.prmUrl,
    `no token: resource_metadata was ${params.resource_metadata}, expected ${ctx.prmUrl}`);
  check(params.error === undefined, `no token: the challenge carries an error (${raw}); RFC 6750 section 3.1 says it should not`);
  return { params, raw };
}

/** A tampered token gets 401 with one Bearer challenge, `error="invalid_token"`. */
export async function expectInvalidToken(ctx, validToken) {
  const bad = tamper(validToken);
  const res = await postMcp(ctx.mcpUrl, echoRequest(2, 'tampered'), bad, { signal: ctx.signal });
  const body = await res.text();
  check(res.status === 401, `tampered token: expected 401, got ${res.status}: ${body.slice(0, 200)}`);
  const raw = res.headers.get('www-authenticate');
  const params = singleBearer(await challengesOf(res), raw);
  check(params.error === 'invalid_token', `tampered token: expected error="invalid_token": ${raw}`);
  check(params.resource_metadata === ctx.prmUrl, `tampered token: resource_metadata missing or wrong: ${raw}`);
  return bad;
}

/** A token calls `echo` through portcullis with a plain fetch; 200 and no challenge. */
export async function expectEcho(ctx, token, text) {
  const res = await postMcp(ctx.mcpUrl, echoRequest(3, text), token, { signal: ctx.signal });
  const raw = res.headers.get('www-authenticate');
  const body = await res.text();
  check(res.status === 200, `echo: expected 200, got ${res.status} (${raw ?? 'no challenge'}): ${body.slice(0, 200)}`);
  check(raw === null, `echo: a 200 carries WWW-Authenticate: ${raw}`);
  const message = JSON.parse(body);
  check(resultText(message.result) === text, `echo: expected ${JSON.stringify(text)}, got ${body.slice(0, 200)}`);
}

/** A token is refused with 401 `invalid_token` (e.g. after revocation). */
export async function expectRefused(ctx, token, what) {
  const res = await postMcp(ctx.mcpUrl, echoRequest(4, 'refused'), token, { signal: ctx.signal });
  const body = await res.text();
  const raw = res.headers.get('www-authenticate');
  check(res.status === 401, `${what}: expected 401, got ${res.status}: ${body.slice(0, 200)}`);
  const params = singleBearer(await challengesOf(res), raw);
  check(params.error === 'invalid_token', `${what}: expected error="invalid_token": ${raw}`);
}
