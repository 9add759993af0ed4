// An HTTPS server on loopback publishing client ID metadata documents (and key
// sets), as a client's web site would. Its certificate comes from the test CA
// in crates/test-support/keys; portcullis trusts that CA through SSL_CERT_FILE
// and fetches from loopback only with `dangerous.client_metadata_from_loopback`.

import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const KEYS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'crates', 'test-support', 'keys');

/** The CA file portcullis must trust to fetch from this server. */
export const CA_FILE = path.join(KEYS, 'tls-ca.pem');

/**
 * Starts the server; resolves to `{ publish(path, json) -> url, fetches(path), kill(), output() }`
 * (`kill` and `output` let the stack stop it like its processes).
 */
export async function startDocumentServer() {
  const documents = new Map();
  const fetches = new Map();
  const server = https.createServer({
    cert: fs.readFileSync(path.join(KEYS, 'tls-localhost.pem')),
    key: fs.readFileSync(path.join(KEYS, 'tls-localhost.key')),
  }, (req, res) => {
    const { pathname } = new URL(req.url, 'https://127.0.0.1');
    fetches.set(pathname, (fetches.get(pathname) ?? 0) + 1);
    const doc = documents.get(pathname);
    if (req.method !== 'GET' || !doc) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' }).end(JSON.stringify(doc));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const base = `https://127.0.0.1:${server.address().port}`;
  return {
    publish(pathname, json) {
      documents.set(pathname, json);
      return `${base}${pathname}`;
    },
    url: (pathname) => `${base}${pathname}`,
    fetches: (pathname) => fetches.get(pathname) ?? 0,
    kill: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
    output: () => '',
  };
}
