// An OAuthClientProvider (the interface the MCP TypeScript SDK's transports
// drive, identical in v1 and v2 for what is used here) that keeps everything
// in memory and performs the authorization request headlessly.

import * as crypto from 'node:crypto';

import { authorize } from '../harness/agent.mjs';

export class HeadlessOAuthProvider {
  #clientInformation;
  #tokens;
  #codeVerifier;
  #discoveryState;

  /**
   * @param {object} options
   * @param {string} options.redirectUrl the loopback redirect URI the client registers
   * @param {object} options.clientMetadata RFC 7591 metadata sent when registering dynamically
   * @param {object} [options.preregistered] `{ client_id, client_secret, issuer }` to use instead
   *   of registering; the provider then has no `saveClientInformation`, as the SDK expects of
   *   static credentials.
   * @param {AbortSignal} [options.signal]
   * @param {Function} [options.fillForm] fills in the authorization server's HTML forms (see harness/agent.mjs)
   * @param {string} [options.clientMetadataUrl] the client's metadata document: used as the client id
   *   when the authorization server accepts such documents, instead of registering
   */
  constructor({ redirectUrl, clientMetadata, preregistered, signal, fillForm, clientMetadataUrl, loginHint }) {
    this.redirectUrlValue = redirectUrl;
    /** Who signs in at the test IdP (its `login_hint`), when not its default account. */
    this.loginHint = loginHint;
    if (clientMetadataUrl) this.clientMetadataUrl = clientMetadataUrl;
    this.metadata = clientMetadata;
    this.signal = signal;
    this.fillForm = fillForm;
    /** Every URL passed to redirectToAuthorization, and where each ended. */
    this.authorizations = [];
    /** How often the SDK stored tokens (the first exchange, then each refresh). */
    this.tokenSaves = 0;
    this.registrations = 0;
    if (preregistered) {
      this.#clientInformation = preregistered;
    } else {
      this.saveClientInformation = (info) => {
        // The SDK also saves the metadata document URL it uses as the client id: not a registration.
        if (info.client_id !== this.clientMetadataUrl) this.registrations += 1;
        this.#clientInformation = info;
      };
    }
  }

  get redirectUrl() {
    return this.redirectUrlValue;
  }

  get clientMetadata() {
    return this.metadata;
  }

  state() {
    this.lastState = crypto.randomBytes(16).toString('base64url');
    return this.lastState;
  }

  clientInformation() {
    return this.#clientInformation;
  }

  tokens() {
    return this.#tokens;
  }

  saveTokens(tokens) {
    this.tokenSaves += 1;
    this.#tokens = tokens;
  }

  /** Replaces the stored access token, keeping the rest (to make the SDK meet a bad token). */
  replaceAccessToken(accessToken) {
    this.#tokens = { ...this.#tokens, access_token: accessToken };
  }

  saveCodeVerifier(codeVerifier) {
    this.#codeVerifier = codeVerifier;
  }

  codeVerifier() {
    if (!this.#codeVerifier) throw new Error('no code verifier saved');
    return this.#codeVerifier;
  }

  saveDiscoveryState(state) {
    this.#discoveryState = state;
  }

  discoveryState() {
    return this.#discoveryState;
  }

  /**
   * Where a browser would be sent: the request is performed here, through the
   * authorization server's login and consent, and the callback URL is kept for
   * the test to hand to `finishAuth`, as an application's loopback listener
   * would.
   */
  async redirectToAuthorization(authorizationUrl) {
    const entry = { url: new URL(authorizationUrl) };
    this.authorizations.push(entry);
    entry.callback = await authorize(withLoginHint(authorizationUrl, this.loginHint), this.redirectUrlValue, {
      signal: this.signal,
      fillForm: this.fillForm,
    });
  }

  /** The last callback's parameters, after checking `state` and the absence of `error`. */
  callbackParams() {
    const last = this.authorizations.at(-1);
    if (!last?.callback) throw new Error('the SDK never asked to redirect to the authorization endpoint');
    const params = last.callback.searchParams;
    if (params.get('error')) {
      throw new Error(`authorization failed: ${params.get('error')}: ${params.get('error_description') ?? ''}`);
    }
    if (params.get('state') !== this.lastState) {
      throw new Error(`state mismatch: sent ${this.lastState}, got ${params.get('state')}`);
    }
    if (!params.get('code')) throw new Error(`no code in ${last.callback.href}`);
    return params;
  }
}

/** `url` with `login_hint` added when there is one (the user typing their name at the IdP). */
export function withLoginHint(url, loginHint) {
  if (!loginHint) return url;
  const hinted = new URL(url);
  hinted.searchParams.set('login_hint', loginHint);
  return hinted.href;
}
