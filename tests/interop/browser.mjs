#!/usr/bin/env node
// The gateway's sign-in and consent pages in a real browser. Starts the sample
// MCP server and portcullis in gateway mode (SQLite, a local account), as the
// matrix's gateway cells do, registers clients with DCR, and drives headless
// Chromium (Debian's package, through playwright-core) through the
// authorization code flow: a wrong password, the right one, the consent page,
// Allow or Deny, and the redirect to a loopback client. Screenshots of every
// page go to tests/interop/out/screenshots/. See docs/interop.md.
//
// Usage: node tests/interop/browser.mjs [--bin PATH] [--chromium PATH] [--out DIR]
//   --bin       the portcullis binary (default: target/debug/portcullis of this checkout)
//   --chromium  the browser (default: /usr/bin/chromium, from Debian's `chromium` package)
//   --out       where screenshots go (default: tests/interop/out/screenshots)
//
// Prints one line per check, then `N passed, N failed`; exits 1 if any failed,
// 2 if it cannot run (no binary, no Chromium, packages missing).

import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { check, expectEcho } from './harness/checks.mjs';
import { killAll } from './harness/processes.mjs';
import { SCOPE, startStack, stopStack } from './harness/stack.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const RUN_TIMEOUT_MS = 55_000;
const START_TIMEOUT_MS = 10_000;
const LAUNCH_TIMEOUT_MS = 15_000;
const ACTION_TIMEOUT_MS = 8_000;

/** The local account harness/stack.mjs creates for gateway stacks. */
const USER = { username: 'alice', password: 'correct horse battery staple' };
/** Each sign-in's double-submit cookie is named with this and a tag of its own. */
const CSRF_COOKIE = '__Host-portcullis-csrf-';
const WRONG_PASSWORD_MESSAGE = 'Wrong username or password.';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ---------------------------------------------------------------------------
// Reporting: scenarios of named steps; after a failed step the rest of its
// scenario is not run and counts as failed.
// ---------------------------------------------------------------------------

const tally = { passed: 0, failed: 0 };
let timedOut = false;

async function scenario(title, steps) {
  console.log(title);
  let broken = false;
  for (const [name, fn] of steps) {
    if (broken || timedOut) {
      tally.failed += 1;
      console.log(`  skip  ${name} (not run: ${timedOut ? 'the run timed out' : 'an earlier step failed'})`);
      continue;
    }
    try {
      await fn();
      tally.passed += 1;
      console.log(`  pass  ${name}`);
    } catch (err) {
      tally.failed += 1;
      broken = true;
      console.log(`  FAIL  ${name}`);
      console.log(String(err?.stack ?? err).replace(/^/gm, '        '));
    }
  }
}

// ---------------------------------------------------------------------------
// The client side: a loopback redirect URI that records what reaches it, DCR,
// and the authorization request.
// ---------------------------------------------------------------------------

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.codePointAt(0)};`);
}

/**
 * The client's loopback listener. `/callback` records its query and answers a
 * small page, as a native MCP client does; `/embed?src=URL` is a page of
 * another origin that puts URL in an iframe.
 */
function startClientListener() {
  const received = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    let body;
    if (url.pathname === '/callback') {
      received.push(url.searchParams);
      body = '<!doctype html><meta charset="utf-8"><title>Callback</title><p>The client received the authorization response.</p>';
    } else if (url.pathname === '/embed') {
      body = `<!doctype html><meta charset="utf-8"><title>Embed</title><iframe width="600" height="500" src="${escapeHtml(url.searchParams.get('src') ?? '')}"></iframe>`;
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({
        origin,
        redirectUri: `${origin}/callback`,
        received,
        close: () => new Promise((done) => {
          server.closeAllConnections();
          server.close(() => done());
        }),
      });
    });
  });
}

/** RFC 7591 registration of a public client (`none`), as desktop MCP clients register. */
async function registerClient(stack, redirectUri, clientName) {
  const res = await fetch(stack.asMetadata.registration_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      client_name: clientName,
      redirect_uris: [redirectUri],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    }),
  });
  const body = await res.text();
  check(res.status === 201, `registration answered HTTP ${res.status}: ${body.slice(0, 300)}`);
  const client = JSON.parse(body);
  check(typeof client.client_id === 'string' && client.client_id, `registration returned no client_id: ${body}`);
  return client;
}

/** An authorization request with PKCE S256, `state` and `resource`. */
function authorizationRequest(stack, client, redirectUri) {
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const url = new URL(stack.asMetadata.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: client.client_id,
    redirect_uri: redirectUri,
    scope: SCOPE,
    state,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    resource: stack.mcpUrl,
  }).toString();
  return { url: url.href, verifier, state };
}

// ---------------------------------------------------------------------------
// Browser helpers
// ---------------------------------------------------------------------------

/** A page in its own browser context (own cookies), light colour scheme. */
async function newPage(browser) {
  const context = await browser.newContext({
    viewport: { width: 760, height: 720 },
    colorScheme: 'light',
    locale: 'en-US',
  });
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(ACTION_TIMEOUT_MS);
  const page = await context.newPage();
  return { context, page };
}

/** Clicks `button` and returns the response of the main-frame navigation it causes. */
async function submit(page, button) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().isNavigationRequest() && r.frame() === page.mainFrame()),
    button.click(),
  ]);
  await page.waitForLoadState('load');
  return response;
}

/** Clicks `button` and waits until the browser is on the client's redirect URI. */
async function submitToCallback(page, button, redirectUri) {
  await Promise.all([
    page.waitForURL((u) => `${u.origin}${u.pathname}` === redirectUri),
    button.click(),
  ]);
  return new URL(page.url()).searchParams;
}

/** The headers the browser received with a page: no framing by any origin. */
async function expectPageHeaders(response, what) {
  const headers = await response.allHeaders();
  const csp = headers['content-security-policy'] ?? '';
  check(/(^|;)\s*frame-ancestors 'none'\s*(;|$)/.test(csp),
    `${what}: content-security-policy has no frame-ancestors 'none': ${JSON.stringify(csp)}`);
  check(headers['x-frame-options'] === 'DENY',
    `${what}: x-frame-options is ${JSON.stringify(headers['x-frame-options'])}, expected "DENY"`);
}

/** The CSRF cookie as Chromium stored it for the gateway's origin. */
async function expectCsrfCookie(context, issuer) {
  const cookies = await context.cookies(issuer);
  const cookie = cookies.find((c) => c.name.startsWith(CSRF_COOKIE));
  check(cookie, `Chromium did not store the ${CSRF_COOKIE} cookie set by ${issuer} `
    + `(cookies it has for that origin: ${JSON.stringify(cookies)})`);
  const { hostname } = new URL(issuer);
  const got = { domain: cookie.domain, path: cookie.path, secure: cookie.secure, httpOnly: cookie.httpOnly, sameSite: cookie.sameSite };
  const want = { domain: hostname, path: '/', secure: true, httpOnly: true, sameSite: 'Lax' };
  check(JSON.stringify(got) === JSON.stringify(want),
    `${CSRF_COOKIE} stored as ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
}

/**
 * The page's `<style>` as Chromium parsed it. CSS does not decode HTML
 * character references, so a stylesheet that went through HTML escaping
 * (`&quot;`, `&#x2f;`) loses every declaration holding one: the body's font
 * shorthand first.
 */
async function expectStylesheetIntact(page, what) {
  const { references, font } = await page.evaluate(() => ({
    references: [...document.querySelectorAll('style')]
      .flatMap((s) => s.textContent.match(/&(#x?[0-9a-f]+|[a-z]+);/gi) ?? []),
    font: getComputedStyle(document.body).fontFamily,
  }));
  check(references.length === 0,
    `${what}: the <style> element holds HTML character references (${[...new Set(references)].join(' ')}), `
    + `so Chromium drops the declarations containing them; the body font is ${font}`);
  check(/^system-ui\b/.test(font), `${what}: the body font is ${font}, not the stylesheet's system-ui stack`);
}

/** The text of the `<dd>` after the `<dt>` named `term` on the consent page. */
/** Opens the authorization URL and signs in as USER, up to the consent page. */
async function signInToConsent(page, url) {
  await page.goto(url);
  await page.getByLabel('Username').fill(USER.username);
  await page.getByLabel('Password').fill(USER.password);
  await submit(page, page.getByRole('button', { name: 'Sign in' }));
  await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
}

async function consentDetail(page, term) {
  return (await page.locator(`dt:text-is("${term}") + dd`).innerText()).trim();
}

/** The callback query must carry exactly what the client expects, and reach the client's listener. */
function expectCallback(params, listener, want) {
  const shown = params.toString();
  check(params.get('state') === want.state, `callback state is ${params.get('state')}, expected ${want.state} (${shown})`);
  check(params.get('iss') === want.iss, `callback iss is ${params.get('iss')}, expected the issuer ${want.iss} (${shown})`);
  const last = listener.received.at(-1);
  check(last && last.toString() === shown,
    `the client's listener received ${last ? `?${last}` : 'nothing'}, the browser shows ?${shown}`);
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

function fail(message) {
  console.error(`browser: ${message}`);
  process.exit(2);
}

async function main() {
  let args;
  try {
    ({ values: args } = parseArgs({
      options: {
        bin: { type: 'string', default: path.join(HERE, '..', '..', 'target', 'debug', 'portcullis') },
        chromium: { type: 'string', default: '/usr/bin/chromium' },
        out: { type: 'string', default: path.join(HERE, 'out', 'screenshots') },
      },
      strict: true,
    }));
  } catch (err) {
    fail(err.message);
  }
  const bin = path.resolve(args.bin);
  if (!fs.existsSync(bin)) fail(`no portcullis binary at ${bin} (build it, or pass --bin)`);
  try {
    fs.accessSync(args.chromium, fs.constants.X_OK);
  } catch {
    fail(`Chromium is not installed: no executable at ${args.chromium}. `
      + 'Install Debian\'s chromium package (apt-get install chromium), or pass --chromium PATH.');
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    fail('packages missing: run `npm ci` in tests/interop');
  }
  // Screenshots of an earlier run go; nothing else in the directory is touched.
  const out = path.resolve(args.out);
  fs.mkdirSync(out, { recursive: true });
  for (const name of fs.readdirSync(out)) if (name.endsWith('.png')) fs.rmSync(path.join(out, name), { force: true });

  let browser;
  let stack;
  let listener;
  const runDeadline = setTimeout(async () => {
    timedOut = true;
    console.error(`browser: the run exceeded ${RUN_TIMEOUT_MS / 1000} s, stopping`);
    await Promise.race([browser?.close(), new Promise((r) => { setTimeout(r, 3_000); })]).catch(() => {});
    await killAll();
    process.exit(1);
  }, RUN_TIMEOUT_MS);

  const shots = [];
  async function screenshot(page, name) {
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      const file = path.join(out, `${name}${scheme === 'dark' ? '-dark' : ''}.png`);
      await page.screenshot({ path: file, fullPage: true });
      shots.push(path.relative(process.cwd(), file));
    }
    await page.emulateMedia({ colorScheme: 'light' });
  }

  try {
    console.log(`portcullis browser test: binary ${bin}, ${args.chromium}`);
    const [started, launched, client] = await Promise.allSettled([
      startStack({ bin, mode: 'gateway', profile: '-', metadataDocuments: true, timeoutMs: START_TIMEOUT_MS }),
      chromium.launch({
        executablePath: args.chromium,
        headless: true,
        chromiumSandbox: false,
        args: CHROMIUM_ARGS,
        timeout: LAUNCH_TIMEOUT_MS,
      }),
      startClientListener(),
    ]);
    if (started.status === 'fulfilled') stack = started.value;
    if (launched.status === 'fulfilled') browser = launched.value;
    if (client.status === 'fulfilled') listener = client.value;
    for (const s of [started, launched, client]) if (s.status === 'rejected') throw s.reason;
    console.log(`gateway ${stack.issuer}, ${browser.browserType().name()} ${browser.version()}, client ${listener.origin}`);

    // --- Sign in (a wrong password first), Allow, the code exchange.
    {
      const clientName = 'Browser Test Client';
      let registered;
      let auth;
      let context;
      let page;
      let callback;
      await scenario('sign in and allow', [
        ['DCR registers a public client', async () => {
          registered = await registerClient(stack, listener.redirectUri, clientName);
          auth = authorizationRequest(stack, registered, listener.redirectUri);
          ({ context, page } = await newPage(browser));
        }],
        ['the sign-in page shows the form, with the security headers', async () => {
          const response = await page.goto(auth.url);
          check(response.status() === 200, `GET /authorize answered HTTP ${response.status()}`);
          await expectPageHeaders(response, 'sign-in page');
          await page.getByRole('heading', { name: 'Sign in' }).waitFor();
          check(await page.getByLabel('Username').isVisible(), 'no visible username field');
          check(await page.getByLabel('Password').isVisible(), 'no visible password field');
          const lead = await page.locator('p.lead').innerText();
          check(lead.includes(clientName), `the sign-in page does not name the client: ${JSON.stringify(lead)}`);
          await screenshot(page, '1-sign-in');
        }],
        [`Chromium stores the ${CSRF_COOKIE} cookie (Secure, HttpOnly, SameSite=Lax) on http://127.0.0.1`, async () => {
          await expectCsrfCookie(context, stack.issuer);
        }],
        ['a wrong password shows the error and the form again', async () => {
          await page.getByLabel('Username').fill(USER.username);
          await page.getByLabel('Password').fill('not the password');
          const response = await submit(page, page.getByRole('button', { name: 'Sign in' }));
          check(response.status() === 200, `the sign-in POST answered HTTP ${response.status()}`);
          await expectPageHeaders(response, 'sign-in page after a wrong password');
          const alert = (await page.getByRole('alert').innerText()).trim();
          check(alert === WRONG_PASSWORD_MESSAGE, `error shown: ${JSON.stringify(alert)}, expected ${JSON.stringify(WRONG_PASSWORD_MESSAGE)}`);
          check(await page.getByLabel('Username').isVisible(), 'no username field after the error');
          check(await page.getByLabel('Password').isVisible(), 'no password field after the error');
          check(await page.getByLabel('Password').inputValue() === '', 'the wrong password is still in the field');
          check(await page.getByRole('button', { name: 'Sign in' }).isVisible(), 'no Sign in button after the error');
          await screenshot(page, '2-sign-in-wrong-password');
        }],
        ['the right password leads to the consent page, naming client, redirect host and scope', async () => {
          await page.getByLabel('Username').fill(USER.username);
          await page.getByLabel('Password').fill(USER.password);
          const response = await submit(page, page.getByRole('button', { name: 'Sign in' }));
          check(response.status() === 200, `the sign-in POST answered HTTP ${response.status()}`);
          await expectPageHeaders(response, 'consent page');
          await page.getByRole('heading', { name: 'Allow access?' }).waitFor();
          const application = await consentDetail(page, 'Application');
          check(application === clientName, `Application: ${JSON.stringify(application)}, expected ${JSON.stringify(clientName)}`);
          const returnsTo = await consentDetail(page, 'Returns to');
          const redirectHost = new URL(listener.redirectUri).hostname;
          check(returnsTo === redirectHost, `Returns to: ${JSON.stringify(returnsTo)}, expected ${JSON.stringify(redirectHost)}`);
          const access = await consentDetail(page, 'Access');
          check(access.split(/\s+/).includes(SCOPE), `Access: ${JSON.stringify(access)}, expected ${SCOPE}`);
          check(await page.getByRole('button', { name: 'Allow' }).isVisible(), 'no Allow button');
          check(await page.getByRole('button', { name: 'Deny' }).isVisible(), 'no Deny button');
          await screenshot(page, '3-consent');
        }],
        ['Allow lands on the callback with code, state and iss', async () => {
          callback = await submitToCallback(page, page.getByRole('button', { name: 'Allow' }), listener.redirectUri);
          check(callback.get('code'), `no code on the callback: ?${callback}`);
          check(!callback.has('error'), `the callback has an error: ?${callback}`);
          expectCallback(callback, listener, { state: auth.state, iss: stack.issuer });
        }],
        ['the code is exchanged for an access token that works through the gate', async () => {
          const res = await fetch(stack.asMetadata.token_endpoint, {
            method: 'POST',
            body: new URLSearchParams({
              grant_type: 'authorization_code',
              code: callback.get('code'),
              redirect_uri: listener.redirectUri,
              client_id: registered.client_id,
              code_verifier: auth.verifier,
              resource: stack.mcpUrl,
            }),
          });
          const body = await res.text();
          check(res.status === 200, `/token answered HTTP ${res.status}: ${body.slice(0, 300)}`);
          const tokens = JSON.parse(body);
          check(typeof tokens.access_token === 'string' && tokens.access_token.length > 0, `no access_token: ${body.slice(0, 300)}`);
          check(/^bearer$/i.test(tokens.token_type ?? ''), `token_type is ${tokens.token_type}`);
          await expectEcho({ mcpUrl: stack.mcpUrl }, tokens.access_token, 'signed in with Chromium');
        }],
      ]);
      await context?.close();
    }

    // --- Deny: a second client, so no earlier consent applies.
    {
      let auth;
      let context;
      let page;
      await scenario('sign in and deny', [
        ['DCR registers a second client; sign-in leads to its consent page', async () => {
          const registered = await registerClient(stack, listener.redirectUri, 'Browser Test Client (deny)');
          auth = authorizationRequest(stack, registered, listener.redirectUri);
          ({ context, page } = await newPage(browser));
          await signInToConsent(page, auth.url);
        }],
        ['Deny lands on the callback with error=access_denied, state and iss', async () => {
          const callback = await submitToCallback(page, page.getByRole('button', { name: 'Deny' }), listener.redirectUri);
          check(callback.get('error') === 'access_denied', `error is ${callback.get('error')}, expected access_denied: ?${callback}`);
          check(!callback.has('code'), `a denied request got a code: ?${callback}`);
          expectCallback(callback, listener, { state: auth.state, iss: stack.issuer });
        }],
      ]);
      await context?.close();
    }

    // --- A client without registration: its id is the URL of its metadata document.
    {
      let auth;
      let context;
      let page;
      let documentUrl;
      await scenario('a client known by its metadata document', [
        ['the consent page names the host that published the document', async () => {
          documentUrl = stack.documents.publish('/browser/client.json', {
            client_id: stack.documents.url('/browser/client.json'),
            client_name: 'Document Client',
            redirect_uris: [listener.redirectUri],
            token_endpoint_auth_method: 'none',
          });
          auth = authorizationRequest(stack, { client_id: documentUrl }, listener.redirectUri);
          ({ context, page } = await newPage(browser));
          await signInToConsent(page, auth.url);
          const publisher = await consentDetail(page, 'Published by');
          const host = new URL(documentUrl).hostname;
          check(publisher.startsWith(host), `Published by: ${JSON.stringify(publisher)}, expected ${host}`);
          check(await consentDetail(page, 'Client ID') === documentUrl, 'the consent page does not show the document URL');
          const warning = await page.locator('p.warning').innerText().catch(() => '');
          check(/any program here can present itself/.test(warning),
            `no warning that a loopback redirect may reach another local program: ${JSON.stringify(warning)}`);
          await screenshot(page, '5-consent-metadata-document');
        }],
        ['Allow lands on the callback with a code', async () => {
          const callback = await submitToCallback(page, page.getByRole('button', { name: 'Allow' }), listener.redirectUri);
          check(callback.get('code'), `no code on the callback: ?${callback}`);
          expectCallback(callback, listener, { state: auth.state, iss: stack.issuer });
        }],
      ]);
      await context?.close();
    }

    // --- The pages cannot be framed by another origin, and errors are pages.
    {
      let context;
      let page;
      let framedUrl;
      await scenario('framing, errors, styles', [
        ['Chromium refuses to show the sign-in page in a frame of another origin', async () => {
          const registered = await registerClient(stack, listener.redirectUri, 'Browser Test Client (frame)');
          const auth = authorizationRequest(stack, registered, listener.redirectUri);
          framedUrl = auth.url;
          ({ context, page } = await newPage(browser));
          const refusals = [];
          page.on('console', (m) => { if (/frame-ancestors|X-Frame-Options/i.test(m.text())) refusals.push(m.text()); });
          const framed = page.waitForResponse((r) => r.url() === auth.url);
          await page.goto(`${listener.origin}/embed?src=${encodeURIComponent(auth.url)}`);
          check((await framed).status() === 200, 'the framed sign-in page was not served');
          await page.waitForLoadState('load');
          const frame = page.frames().find((f) => f !== page.mainFrame());
          check(frame, 'no iframe on the embedding page');
          const shown = await frame.locator('form').count().catch(() => 0);
          check(shown === 0, `the sign-in form is shown inside the frame (frame URL ${frame.url()})`);
          check(refusals.length > 0 || frame.url().startsWith('chrome-error:'),
            `no sign that Chromium refused the frame (frame URL ${frame.url()}, console: ${JSON.stringify(refusals)})`);
        }],
        ['an authorization request for an unknown client shows the error page', async () => {
          const url = new URL(stack.asMetadata.authorization_endpoint);
          url.search = new URLSearchParams({
            response_type: 'code',
            client_id: 'no-such-client',
            redirect_uri: listener.redirectUri,
            state: 'x',
            code_challenge: createHash('sha256').update('v').digest('base64url'),
            code_challenge_method: 'S256',
          }).toString();
          const response = await page.goto(url.href);
          check(response.status() === 400, `GET /authorize answered HTTP ${response.status()}, expected 400`);
          await expectPageHeaders(response, 'error page');
          check(new URL(page.url()).origin === new URL(stack.issuer).origin,
            `the browser was sent to ${page.url()}; an unknown client must not be redirected to`);
          const heading = (await page.getByRole('heading').first().innerText()).trim();
          check(heading.length > 0, 'the error page has no heading');
          await screenshot(page, '4-error');
        }],
        ['the landing page names the MCP server and how to connect clients', async () => {
          const response = await page.goto(`${stack.issuer}/`);
          check(response.status() === 200, `GET / answered HTTP ${response.status()}`);
          await expectPageHeaders(response, 'landing page');
          const heading = (await page.getByRole('heading', { level: 1 }).innerText()).trim();
          check(heading === 'MCP servers behind portcullis', `landing heading: ${JSON.stringify(heading)}`);
          const text = await page.locator('main').innerText();
          const mcpUrl = `${stack.issuer}/mcp`;
          check(text.includes(`claude mcp add --transport http mcp ${mcpUrl}`), `no Claude Code snippet for ${mcpUrl} in: ${text.slice(0, 400)}`);
          check(text.includes('Ready.'), `the landing page does not say the gate is ready: ${text.slice(0, 200)}`);
          const box = await page.locator('section.server').first().boundingBox();
          check(box && box.width > 200 && box.height > 100, `the server section is not laid out: ${JSON.stringify(box)}`);
          await expectStylesheetIntact(page, 'landing page');
          await screenshot(page, '6-landing');
        }],
        ['the pages\' stylesheet reaches Chromium intact', async () => {
          await expectStylesheetIntact(page, 'error page');
          await page.goto(framedUrl);
          await page.getByRole('heading', { name: 'Sign in' }).waitFor();
          await expectStylesheetIntact(page, 'sign-in page');
        }],
      ]);
      await context?.close();
    }
  } catch (err) {
    tally.failed += 1;
    console.log(`FAIL  setting up: ${String(err?.stack ?? err)}`);
    if (stack) console.log(stack.procs.map((p) => p.output()).filter(Boolean).join('\n'));
  } finally {
    clearTimeout(runDeadline);
    if (tally.failed > 0 && stack) {
      console.log(`portcullis configuration:\n${stack.config.replace(/^/gm, '  ')}`);
      console.log(`process output:\n${stack.procs.map((p) => p.output()).filter(Boolean).join('\n')}`);
    }
    await browser?.close().catch(() => {});
    await listener?.close();
    if (stack) await stopStack(stack);
    await killAll();
  }

  if (shots.length > 0) console.log(`screenshots:\n${shots.map((s) => `  ${s}`).join('\n')}`);
  console.log(`${tally.passed} passed, ${tally.failed} failed`);
  process.exitCode = tally.failed === 0 ? 0 : 1;
}

main().catch(async (err) => {
  console.error(`browser: ${err?.stack ?? err}`);
  await killAll();
  process.exit(1);
});
