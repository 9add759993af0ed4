// A headless user agent for the authorization endpoint: follows redirects by
// hand with a cookie jar, through the test IdP's automatic login and consent
// (`/__test/interaction/{uid}`) or, given a `fillForm` function, through HTML
// sign-in and consent forms (portcullis's gateway), and stops at the redirect
// to the client's `redirect_uri`, the point where a browser would hand the
// response to the client's loopback listener.

/** Minimal RFC 6265 jar: host-only cookies with Path and expiry, enough for oidc-provider. */
class CookieJar {
  #cookies = new Map(); // "host name path" -> { host, name, value, path, expires }

  store(url, setCookieHeaders) {
    for (const header of setCookieHeaders) {
      const [pair, ...attributes] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expires = Infinity;
      for (const attribute of attributes) {
        const [key, ...rest] = attribute.split('=');
        const v = rest.join('=');
        switch (key.toLowerCase()) {
          case 'path': path = v || '/'; break;
          case 'max-age': expires = Date.now() + Number(v) * 1000; break;
          case 'expires': if (expires === Infinity) expires = Date.parse(v); break;
          default: break;
        }
      }
      const key = `${url.host} ${name} ${path}`;
      if (expires <= Date.now()) this.#cookies.delete(key);
      else this.#cookies.set(key, { host: url.host, name, value, path, expires });
    }
  }

  header(url) {
    const now = Date.now();
    const matching = [...this.#cookies.values()].filter((c) => c.host === url.host
      && c.expires > now
      && (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)));
    // Longer paths first (RFC 6265 section 5.4).
    matching.sort((a, b) => b.path.length - a.path.length);
    return matching.map((c) => `${c.name}=${c.value}`).join('; ');
  }
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function unescapeHtml(text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (whole, name) => {
    if (name[0] === '#') {
      const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      return String.fromCodePoint(code);
    }
    return ENTITIES[name.toLowerCase()] ?? whole;
  });
}

function attribute(tag, name) {
  const m = tag.match(new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`, 'i'));
  return m ? unescapeHtml(m[1] ?? m[2]) : undefined;
}

/**
 * The first POST form of an HTML page: its absolute `action` and its hidden
 * fields, or undefined. Enough for server-rendered sign-in and consent pages.
 */
export function parseForm(html, pageUrl) {
  const form = html.match(/<form\b[^>]*>([\s\S]*?)<\/form>/i);
  if (!form) return undefined;
  const open = form[0].slice(0, form[0].indexOf('>') + 1);
  if ((attribute(open, 'method') ?? 'get').toLowerCase() !== 'post') return undefined;
  const fields = new URLSearchParams();
  for (const [input] of form[1].matchAll(/<input\b[^>]*>/gi)) {
    if ((attribute(input, 'type') ?? '').toLowerCase() === 'hidden' && attribute(input, 'name')) {
      fields.append(attribute(input, 'name'), attribute(input, 'value') ?? '');
    }
  }
  return { action: new URL(attribute(open, 'action') ?? '', pageUrl), fields };
}

function isRedirectTarget(location, redirectUri) {
  const target = new URL(redirectUri);
  return location.origin === target.origin && location.pathname === target.pathname;
}

/**
 * Performs the authorization request `authorizationUrl` and returns the URL the
 * authorization server finally redirects to on `redirectUri` (with `code`,
 * `state`, `iss`, or `error`). Throws if the chain ends anywhere else.
 *
 * `fillForm(html, pageUrl)`, when given, is asked about every HTML page that
 * is not a redirect; it returns `{ action, fields }` to submit (POST,
 * form-encoded), or undefined to stop there.
 */
export async function authorize(authorizationUrl, redirectUri, { signal, fillForm, maxHops = 20 } = {}) {
  const jar = new CookieJar();
  let request = { url: new URL(authorizationUrl), method: 'GET' };
  const trail = [];
  for (let hop = 0; hop < maxHops; hop += 1) {
    const { url, method, body } = request;
    const headers = {};
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, body, redirect: 'manual', headers, signal });
    jar.store(url, res.headers.getSetCookie());
    trail.push(`${res.status} ${method} ${url.origin}${url.pathname}`);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      const next = new URL(location, url);
      if (isRedirectTarget(next, redirectUri)) return next;
      request = { url: next, method: 'GET' };
      continue;
    }
    const text = await res.text();
    const form = res.status === 200 && /^text\/html\b/i.test(res.headers.get('content-type') ?? '') && fillForm
      ? fillForm(text, url)
      : undefined;
    if (form) {
      request = { url: form.action, method: 'POST', body: form.fields.toString() };
      continue;
    }
    const shown = text.replace(/<style[\s\S]*?<\/style>/gi, '').replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').slice(0, 400);
    throw new Error(`authorization stopped at HTTP ${res.status} (${trail.join(' -> ')}): ${shown}`);
  }
  throw new Error(`authorization did not reach ${redirectUri} within ${maxHops} redirects (${trail.join(' -> ')})`);
}
