// The IdPs the emulator plays, by --idp name: one profile each, in profiles/.

import { entra } from './profiles/entra.mjs';
import { auth0 } from './profiles/auth0.mjs';
import { okta } from './profiles/okta.mjs';
import { keycloak } from './profiles/keycloak.mjs';
import { google } from './profiles/google.mjs';
import { github } from './profiles/github.mjs';
import { cognito } from './profiles/cognito.mjs';
import { authentik } from './profiles/authentik.mjs';
import { clerk } from './profiles/clerk.mjs';
import { workos } from './profiles/workos.mjs';
import { descope } from './profiles/descope.mjs';
import { stytch } from './profiles/stytch.mjs';
import { keycard } from './profiles/keycard.mjs';
import { generic } from './profiles/generic.mjs';

export const PROFILES = {
  entra, auth0, okta, keycloak, google, github, cognito, authentik, clerk, workos, descope, stytch, keycard, generic,
};
