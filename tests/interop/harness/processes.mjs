// Child processes of the interop matrix: started with a readiness line, their
// output kept for failure reports, and all of them killed when the runner
// exits, however it exits.

import { spawn } from 'node:child_process';
import * as net from 'node:net';

const live = new Set();

/** A free TCP port on 127.0.0.1 (bound, then released for the caller). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * Starts `command args` and resolves once a line of its stdout matches
 * `ready` (a RegExp); the match is returned. Rejects if the process exits or
 * `timeoutMs` passes first.
 *
 * stdin is a pipe that stays open: the test IdP exits when it closes, which is
 * what happens if this process dies without running its exit handlers.
 */
export function start(name, command, args, { ready, timeoutMs = 10_000, env } = {}) {
  const child = spawn(command, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const proc = new Child(name, child);
  live.add(proc);
  child.on('exit', () => live.delete(proc));

  return new Promise((resolve, reject) => {
    let stdoutRest = '';
    const timer = setTimeout(() => {
      settle(new Error(`${name} printed no readiness line within ${timeoutMs} ms\n${proc.output()}`));
    }, timeoutMs);
    let settled = false;
    function settle(err, match) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        proc.kill();
        reject(err);
      } else {
        resolve({ proc, match });
      }
    }
    child.stdout.on('data', (chunk) => {
      const text = chunk.toString();
      proc.record(text);
      stdoutRest += text;
      const lines = stdoutRest.split('\n');
      stdoutRest = lines.pop();
      for (const line of lines) {
        const match = line.match(ready);
        if (match) settle(null, match);
      }
    });
    child.stderr.on('data', (chunk) => proc.record(chunk.toString()));
    child.on('error', (err) => settle(new Error(`${name} could not be started: ${err.message}`)));
    child.on('exit', (code, signal) => {
      settle(new Error(`${name} exited (${signal ?? `code ${code}`}) before it was ready\n${proc.output()}`));
    });
  });
}

/**
 * Runs `command args` to completion with `input` on stdin; resolves to its
 * output, rejects on a non-zero exit or after `timeoutMs`.
 */
export function run(name, command, args, { input = '', timeoutMs = 10_000, env } = {}) {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const proc = new Child(name, child);
  live.add(proc);
  child.stdout.on('data', (chunk) => proc.record(chunk.toString()));
  child.stderr.on('data', (chunk) => proc.record(chunk.toString()));
  child.stdin.end(input);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not finish within ${timeoutMs} ms\n${proc.output()}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${name} could not be started: ${err.message}`));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      live.delete(proc);
      if (code === 0) resolve(proc.output());
      else reject(new Error(`${name} failed (${signal ?? `code ${code}`})\n${proc.output()}`));
    });
  });
}

class Child {
  #log = [];
  #size = 0;

  constructor(name, child) {
    this.name = name;
    this.child = child;
  }

  record(text) {
    this.#log.push(text);
    this.#size += text.length;
    // Keep the tail only: a failure report needs the last lines.
    while (this.#size > 64 * 1024 && this.#log.length > 1) this.#size -= this.#log.shift().length;
  }

  /** The last output of the process, each line prefixed with its name. */
  output(maxLines = 40) {
    // Colour escapes (tracing's text format writes them even into a pipe) stripped.
    // eslint-disable-next-line no-control-regex
    const text = this.#log.join('').replace(/\x1b\[[0-9;]*m/g, '');
    const lines = text.split('\n').filter(Boolean).slice(-maxLines);
    return lines.map((l) => `  [${this.name}] ${l}`).join('\n');
  }

  get running() {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
  async kill(graceMs = 2_000) {
    if (!this.running) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin.destroy();
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

/** Kills every child still running. */
export async function killAll() {
  await Promise.all([...live].map((p) => p.kill()));
}

// Last resort, for exits that skip the orderly path (uncaught errors, the
// global deadline, signals): synchronous SIGKILL to every child.
process.on('exit', () => {
  for (const p of live) {
    if (p.running) p.child.kill('SIGKILL');
  }
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    process.stderr.write(`matrix: ${signal}, stopping\n`);
    process.exit(130);
  });
}
