// The report of a test script that is a list of checks: one line per check, then the count, and
// the exit status (1 if any check failed, 2 if the script itself broke).

import { killAll } from './processes.mjs';

const results = [];

/** Records one check; `detail` is shown when it failed. */
export function record(name, ok, detail) {
  results.push(ok);
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${ok || detail === undefined ? '' : `: ${detail}`}`);
}

/**
 * Runs one check: `body` returns `true` or nothing when it holds, anything else (shown) when it does
 * not; a throw fails it with the error.
 */
export async function step(name, body) {
  try {
    const detail = await body();
    record(name, detail === undefined || detail === true, detail);
  } catch (err) {
    record(name, false, err.stack ?? err.message);
  }
}

/** Runs `main`, then prints the count and exits; children are killed however it ends. */
export function runChecks(main) {
  main().then(
    () => {
      const failed = results.filter((ok) => !ok).length;
      console.log(`${results.length - failed} passed, ${failed} failed`);
      process.exit(failed ? 1 : 0);
    },
    async (err) => {
      console.error(err);
      await killAll();
      process.exit(2);
    },
  );
}
