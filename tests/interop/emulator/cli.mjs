// The emulator's command line (usage in ../emulator.mjs): the flags each IdP
// takes, their checks, and the values derived from the common ones.

import { parseArgs } from 'node:util';

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

export function fail(message) {
  console.error(`emulator: ${message}`);
  process.exit(2);
}

// The flags each IdP takes besides the common ones. A flag given to an IdP
// that does not take it is refused, so a test cannot believe it configured a
// quirk that is not there.
const IDP_FLAGS = {
  entra: ['tenant', 'token-version', 'app-id-uri', 'application-id'],
  auth0: ['dcr', 'resource-as-audience'],
  okta: ['auth-server', 'audience'],
  keycloak: ['realm', 'audience', 'oauth-metadata'],
  google: [],
  github: ['expiring'],
  cognito: ['region', 'pool'],
  authentik: ['slug'],
  clerk: ['dcr', 'jwt', 'domain-label'],
  workos: [],
  descope: ['project'],
  stytch: ['project'],
  keycard: ['zone'],
  generic: [],
};

export let args;
try {
  ({ values: args } = parseArgs({
    options: {
      idp: { type: 'string' },
      port: { type: 'string', default: '0' },
      client: { type: 'string', multiple: true, default: [] },
      'public-client': { type: 'string', multiple: true, default: [] },
      user: { type: 'string', default: 'user-1' },
      ttl: { type: 'string' },
      // For running the emulator by hand in the background, where stdin is
      // /dev/null and would otherwise make it exit at once.
      'ignore-stdin': { type: 'boolean', default: false },
      // IdP-specific (see IDP_FLAGS); defaults are applied per IdP in profiles/.
      tenant: { type: 'string' },
      'token-version': { type: 'string' },
      'app-id-uri': { type: 'string' },
      'application-id': { type: 'string' },
      dcr: { type: 'boolean' },
      'resource-as-audience': { type: 'boolean' },
      'auth-server': { type: 'string' },
      audience: { type: 'string' },
      realm: { type: 'string' },
      'oauth-metadata': { type: 'boolean' },
      expiring: { type: 'boolean' },
      region: { type: 'string' },
      pool: { type: 'string' },
      slug: { type: 'string' },
      'domain-label': { type: 'string' },
      jwt: { type: 'boolean' },
      project: { type: 'string' },
      zone: { type: 'string' },
    },
    strict: true,
  }));
} catch (err) {
  fail(err.message);
}

export const IDP = args.idp;
if (!Object.hasOwn(IDP_FLAGS, IDP)) fail(`--idp must be one of: ${Object.keys(IDP_FLAGS).join(', ')}`);
const COMMON_FLAGS = new Set(['idp', 'port', 'client', 'public-client', 'user', 'ttl', 'ignore-stdin']);
for (const [flag, value] of Object.entries(args)) {
  if (value === undefined || COMMON_FLAGS.has(flag)) continue;
  if (!IDP_FLAGS[IDP].includes(flag)) fail(`--${flag} is not a flag of --idp ${IDP}`);
}

export const PORT = Number(args.port);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) fail('--port must be an integer between 0 and 65535');

export const TTL_GIVEN = args.ttl !== undefined;
export const TTL = TTL_GIVEN ? Number(args.ttl) : 300;
if (!Number.isInteger(TTL) || TTL <= 0) fail('--ttl must be a positive integer (seconds)');

export const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
