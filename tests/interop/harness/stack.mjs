// One cell's processes, wired together for a portcullis mode: the test IdP,
// the sample MCP server and portcullis in verify mode; the sample server and
// portcullis as its own authorization server in gateway mode.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { parseForm } from './agent.mjs';
import { CA_FILE, startDocumentServer } from './documents.mjs';
import { freePort, run, start } from './processes.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const IDP = path.join(HERE, '..', 'idp.mjs');

// Directories of stacks not stopped in an orderly way (a cell that timed out
// while starting, a crash) are removed on exit.
const tempDirs = new Set();
process.on('exit', () => {
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** The base scope portcullis demands; also what its challenges name. */
export const SCOPE = 'mcp:tools';

/** The test IdP's pre-registered confidential client (verify mode). */
const IDP_CLIENT = { client_id: 'client-rs', client_secret: 'secret-rs' };

/**
 * Gateway mode: the local account the headless user signs in with, and the
 * client configured in `[[gateway.clients]]`. The secret has characters that
 * oauth4webapi percent-encodes in Basic credentials and the MCP SDK does not
 * (`-`, `_`, `.`, `~`); both forms must decode to the same secret.
 */
export const GATEWAY_USER = { username: 'alice', password: 'correct horse battery staple' };
const GATEWAY_CLIENT = { client_id: 'configured-client', client_secret: 'gw-secret_with.unreserved~chars' };

/**
 * The gateway's sign-in and consent pages, filled in as the user would:
 * credentials on the login form, "Allow" on the consent form.
 */
export function signInAndConsent(html, pageUrl) {
  const form = parseForm(html, pageUrl);
  switch (form?.fields.get('step')) {
    case 'login':
      form.fields.set('username', GATEWAY_USER.username);
      form.fields.set('password', GATEWAY_USER.password);
      return form;
    case 'consent':
      form.fields.set('decision', 'approve');
      return form;
    default:
      return undefined;
  }
}

/**
 * The test IdP; resolves to `{ proc, issuer, metadata }`. Registration is open except for the
 * `aud-client-id` profile, which only a pre-registered client can use (its id is the audience): that
 * profile also stands for IdPs without DCR. `tokenExchange` makes it an enterprise IdP too (RFC 8693 exchanges
 * of its ID tokens for ID-JAGs).
 */
export async function startIdp(profile, { timeoutMs, tokenExchange = false } = {}) {
  const args = [
    IDP, '--profile', profile,
    ...(profile === 'aud-client-id' ? [] : ['--dcr']),
    ...(tokenExchange ? ['--token-exchange'] : []),
  ];
  const { proc, match } = await start('idp', process.execPath, args, {
    ready: /^(\{"issuer".*\})$/,
    timeoutMs,
  });
  const { issuer } = JSON.parse(match[1]);
  const res = await fetch(`${issuer}/.well-known/openid-configuration`);
  if (res.status !== 200) throw new Error(`IdP discovery answered HTTP ${res.status}`);
  return { proc, issuer, metadata: await res.json() };
}

export async function startUpstream(bin, { timeoutMs } = {}) {
  const { proc, match } = await start('upstream', bin, ['sample-upstream', '--listen', '127.0.0.1:0'], {
    ready: /^sample MCP server listening on (http:\/\/\S+)$/,
    timeoutMs,
  });
  return { proc, url: match[1] };
}

export function tomlString(s) {
  return JSON.stringify(s);
}

/** The `[server.verify]` lines that make portcullis accept the tokens of an IdP profile. */
function verifySection(profile, idp) {
  const lines = ['[server.verify]', `issuer = ${tomlString(idp.issuer)}`];
  switch (profile) {
    case 'rfc8707':
      break;
    case 'aud-client-id':
      // `aud` is the client id: only a client known in advance can be allowed.
      lines.push('audiences = ["client-rs"]');
      break;
    case 'resource-claim':
      lines.push(`resource_claim_audiences = [${tomlString(idp.issuer)}]`);
      break;
    case 'opaque':
      lines.push(
        '',
        '[server.verify.introspection]',
        `endpoint = ${tomlString(idp.metadata.introspection_endpoint)}`,
        'client_id = "portcullis-rs"',
        'client_secret = "secret-introspect"',
      );
      break;
    default:
      throw new Error(`no verify configuration for profile ${profile}`);
  }
  return lines.join('\n');
}

/**
 * Starts `portcullis serve` with the configuration `configFor(port)`. The port
 * comes from freePort(), so another socket may take it before portcullis
 * binds it; that case is retried on a new port.
 */
export async function startPortcullis(bin, configFor, dir, { timeoutMs, env } = {}) {
  const file = path.join(dir, 'portcullis.toml');
  for (let attempt = 1; ; attempt += 1) {
    const config = configFor(await freePort());
    fs.writeFileSync(file, config);
    try {
      const { proc, match } = await start('portcullis', bin, ['serve', '--config', file], {
        ready: /^portcullis listening on (http:\/\/\S+)$/,
        timeoutMs,
        env,
      });
      return { gate: { proc, url: match[1] }, config };
    } catch (err) {
      if (attempt >= 3 || !/Address already in use/.test(err.message)) throw err;
    }
  }
}

/**
 * portcullis as the authorization server, in `dir`: SQLite state, one configured
 * client (public when it has no `client_secret`), the local account `user`,
 * optionally `[gateway.upstream]` lines, `dangerous.auto_approve_as`, and client
 * ID metadata documents fetched from loopback (`metadataDocuments`, trusting the
 * test CA), `accessTokenTtl` (seconds), an `audit` log file, and `idpOrigin`, the loopback emulation of
 * the IdP an upstream preset names. Resolves to `{ gate, config }` once it listens.
 */
export async function startGateway(bin, dir, {
  upstreamUrl, upstreamLogin = [], user, client, autoApproveAs, metadataDocuments, origins = [], timeoutMs,
  accessTokenTtl, audit, idpOrigin,
}) {
  const state = path.join(dir, 'state');
  fs.mkdirSync(state, { recursive: true });
  const dangerous = [
    ...(autoApproveAs ? [`auto_approve_as = ${tomlString(autoApproveAs)}`] : []),
    ...(metadataDocuments ? ['client_metadata_from_loopback = true'] : []),
    ...(idpOrigin ? [`idp_origin = ${tomlString(idpOrigin)}`] : []),
  ];
  const configFor = (port) => [
    `public_url = "http://127.0.0.1:${port}"`,
    `listen = "127.0.0.1:${port}"`,
    '',
    // Before any other table: keys after a table header belong to that table.
    ...(dangerous.length ? ['[dangerous]', ...dangerous, ''] : []),
    // Browser origins allowed to call the MCP endpoint itself (a browser-based client connecting directly).
    ...(origins.length ? ['[origins]', `allowed = [${origins.map(tomlString).join(', ')}]`, ''] : []),
    '[store]',
    `url = ${tomlString(`sqlite://${path.join(state, 'portcullis.db')}`)}`,
    '',
    ...(audit ? ['[audit]', `path = ${tomlString(audit)}`, ''] : []),
    '[gateway]',
    `operator_key_file = ${tomlString(path.join(state, 'operator.key'))}`,
    ...(accessTokenTtl ? [`access_token_ttl_secs = ${accessTokenTtl}`] : []),
    '',
    ...upstreamLogin,
    '[[gateway.clients]]',
    `client_id = ${tomlString(client.client_id)}`,
    ...(client.client_secret ? [`client_secret = ${tomlString(client.client_secret)}`] : []),
    'redirect_uris = ["http://127.0.0.1/callback"]',
    `name = ${tomlString(client.name)}`,
    '',
    '[[server]]',
    'path = "/mcp"',
    `upstream = ${tomlString(upstreamUrl)}`,
    `scopes = [${tomlString(SCOPE)}]`,
    'gateway = true',
    '',
  ].join('\n');
  const file = path.join(dir, 'portcullis.toml');
  fs.writeFileSync(file, configFor(await freePort()));
  // Local accounts only where users sign in at portcullis itself (`users add` refuses one beside an
  // upstream IdP).
  if (upstreamLogin.length === 0) {
    await run('portcullis users add', bin, ['users', 'add', user.username, '--config', file], {
      input: `${user.password}\n`,
      timeoutMs,
    });
  }
  return startPortcullis(bin, configFor, dir, { timeoutMs, env: metadataDocuments ? { SSL_CERT_FILE: CA_FILE } : {} });
}

/**
 * Starts the processes of one cell. `mode` is the portcullis mode column of the
 * matrix: `verify` (tokens from the test IdP in `profile`) or `gateway`
 * (portcullis is the authorization server). Returns the cell context handed to
 * a client driver: `issuer`, `asMetadata`, `mcpUrl`, `prmUrl`,
 * `preregisteredClient`, and `fillForm` for the user agent when the
 * authorization server shows forms; plus `procs` for diagnostics and `dir` to
 * remove afterwards.
 */
export async function startStack({ bin, mode, profile, metadataDocuments, origins, timeoutMs, accessTokenTtl, audit }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-interop-'));
  tempDirs.add(dir);
  const procs = [];
  const stack = { dir, procs };
  try {
    switch (mode) {
      case 'verify': {
        const started = await Promise.allSettled([
          startIdp(profile, { timeoutMs }),
          startUpstream(bin, { timeoutMs }),
        ]);
        for (const s of started) if (s.status === 'fulfilled') procs.push(s.value.proc);
        const failed = started.find((s) => s.status === 'rejected');
        if (failed) throw failed.reason;
        const [idp, upstream] = started.map((s) => s.value);
        const configFor = (port) => [
          `public_url = "http://127.0.0.1:${port}"`,
          `listen = "127.0.0.1:${port}"`,
          '',
          '[[server]]',
          'path = "/mcp"',
          `upstream = ${tomlString(upstream.url)}`,
          `scopes = [${tomlString(SCOPE)}]`,
          '',
          verifySection(profile, idp),
          '',
        ].join('\n');
        const { gate, config } = await startPortcullis(bin, configFor, dir, { timeoutMs });
        procs.push(gate.proc);
        const publicUrl = gate.url;
        Object.assign(stack, {
          issuer: idp.issuer,
          asMetadata: idp.metadata,
          mcpUrl: `${publicUrl}/mcp`,
          prmUrl: `${publicUrl}/.well-known/oauth-protected-resource/mcp`,
          config,
          preregisteredClient: { ...IDP_CLIENT, issuer: idp.issuer },
        });
        return stack;
      }
      case 'gateway':
      case 'gateway-oidc': {
        // portcullis is the authorization server: a SQLite store, DCR open, one
        // configured client. Users sign in with a local account (`gateway`) or,
        // for `gateway-oidc`, at the test IdP behind portcullis (profile
        // `aud-client-id`, as portcullis's own client `client-rs`).
        const started = await Promise.allSettled([
          startUpstream(bin, { timeoutMs }),
          ...(mode === 'gateway-oidc' ? [startIdp('aud-client-id', { timeoutMs })] : []),
        ]);
        for (const s of started) if (s.status === 'fulfilled') procs.push(s.value.proc);
        const failedStart = started.find((s) => s.status === 'rejected');
        if (failedStart) throw failedStart.reason;
        const [upstream, idp] = started.map((s) => s.value);
        // Clients known by a metadata document publish it on their own (loopback) site.
        if (metadataDocuments) {
          stack.documents = await startDocumentServer();
          procs.push(stack.documents);
        }
        const upstreamLogin = idp
          ? [
              '[gateway.upstream]',
              'kind = "oidc"',
              `issuer = ${tomlString(idp.issuer)}`,
              `client_id = ${tomlString(IDP_CLIENT.client_id)}`,
              `client_secret = ${tomlString(IDP_CLIENT.client_secret)}`,
              'scopes = ["openid"]',
              '',
            ]
          : [];
        const { gate, config } = await startGateway(bin, dir, {
          upstreamUrl: upstream.url,
          upstreamLogin,
          user: GATEWAY_USER,
          client: { ...GATEWAY_CLIENT, name: 'portcullis interop (configured)' },
          metadataDocuments,
          origins,
          accessTokenTtl,
          audit,
          timeoutMs,
        });
        procs.push(gate.proc);
        const publicUrl = gate.url;
        const res = await fetch(`${publicUrl}/.well-known/oauth-authorization-server`);
        if (res.status !== 200) throw new Error(`gateway metadata answered HTTP ${res.status}`);
        const asMetadata = await res.json();
        Object.assign(stack, {
          issuer: asMetadata.issuer,
          asMetadata,
          mcpUrl: `${publicUrl}/mcp`,
          prmUrl: `${publicUrl}/.well-known/oauth-protected-resource/mcp`,
          config,
          preregisteredClient: { ...GATEWAY_CLIENT, issuer: asMetadata.issuer },
          fillForm: signInAndConsent,
        });
        return stack;
      }
      default:
        throw new Error(`mode ${mode} is not implemented`);
    }
  } catch (err) {
    // The processes that did start may say why the others did not.
    const logs = procs.map((p) => p.output()).filter(Boolean).join('\n');
    if (logs) err.message += `\n${logs}`;
    await stopStack(stack);
    throw err;
  }
}

export async function stopStack(stack) {
  await Promise.all(stack.procs.map((p) => p.kill()));
  fs.rmSync(stack.dir, { recursive: true, force: true });
  tempDirs.delete(stack.dir);
}


/** Test-IdP admin calls (`/__test/...`). */
export async function revokeAtIdp(issuer, token) {
  const res = await fetch(`${issuer}/__test/revoke`, {
    method: 'POST',
    body: new URLSearchParams({ token }),
  });
  const body = await res.json();
  if (res.status !== 200 || body.revoked !== true) {
    throw new Error(`/__test/revoke answered HTTP ${res.status} ${JSON.stringify(body)}`);
  }
}
