// The emulator's state, one copy shared by every module: the clients (given on
// the command line or registered), the user, the codes and tokens issued, the
// request log, and the origin and profile, known once the server listens.

import { fail, args } from './cli.mjs';

// ---------------------------------------------------------------------------
// Clients, user, state
// ---------------------------------------------------------------------------

/** client_id -> { id, secret (null for public clients), redirectUris (null: any loopback URI) } */
export const CLIENTS = new Map();
for (const spec of args.client) {
  const colon = spec.indexOf(':');
  if (colon <= 0) fail(`--client ${JSON.stringify(spec)}: expected ID:SECRET`);
  const id = spec.slice(0, colon);
  CLIENTS.set(id, { id, secret: spec.slice(colon + 1), redirectUris: null });
}
for (const id of args['public-client']) {
  if (!id) fail('--public-client needs an id');
  CLIENTS.set(id, { id, secret: null, redirectUris: null });
}

export const USER = { sub: args.user, email: 'ada@example.com', name: 'Ada', login: 'ada' };
if (!USER.sub) fail('--user must not be empty');

export const CODE_TTL = 120;
export const REFRESH_TTL = 86400;

export const CODES = new Map(); // code -> { grant, redirectUri, challenge, expiresAt }
export const REFRESH = new Map(); // refresh token -> { grant, expiresAt }
export const ACCESS = new Map(); // access token (opaque or JWT) -> { grant, claims, issuedAt, expiresAt }
export const LOG = []; // what /__emulator/log answers

export let ORIGIN; // http://127.0.0.1:PORT, known once listening
export let P; // the profile of --idp

// Set once the server listens, ORIGIN first (profiles name it). Importers see
// the new values but cannot assign them: these do.
export function setOrigin(origin) {
  ORIGIN = origin;
}

export function setProfile(profile) {
  P = profile;
}
