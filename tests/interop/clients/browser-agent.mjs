#!/usr/bin/env node
// A stand-in for the user's web browser, for clients that open the authorization URL with the system's
// browser (`xdg-open`, which runs `$BROWSER URL`): it follows the authorization request through the
// gateway's sign-in and consent pages as the test account, then delivers the redirect to the client's
// loopback callback, as a browser would. Each URL it was asked to open, and how it ended, is appended to
// the file named by PORTCULLIS_TEST_BROWSER_LOG (one JSON object per line).

import * as fs from 'node:fs';

import { authorize } from '../harness/agent.mjs';
import { signInAndConsent } from '../harness/stack.mjs';

const url = process.argv[2];
const log = (entry) => {
  if (process.env.PORTCULLIS_TEST_BROWSER_LOG) {
    fs.appendFileSync(process.env.PORTCULLIS_TEST_BROWSER_LOG, `${JSON.stringify(entry)}\n`);
  }
};

try {
  const redirectUri = new URL(url).searchParams.get('redirect_uri');
  const back = await authorize(url, redirectUri, { fillForm: signInAndConsent, signal: AbortSignal.timeout(20_000) });
  const res = await fetch(back, { signal: AbortSignal.timeout(20_000) });
  await res.body?.cancel();
  log({ opened: url, callback: back.href, status: res.status });
} catch (err) {
  log({ opened: url, error: err.message });
  process.exitCode = 1;
}
