// Opens N server-to-client SSE streams (GET with Accept: text/event-stream) to URL at once, waits until
// each has delivered its first event, prints `OPEN`, holds them until it reads a line on stdin, then
// closes them all and prints `CLOSED`.
//   node bench/streams.mjs URL N
import * as http from 'node:http';
import * as readline from 'node:readline';

const [url, n = '2000'] = process.argv.slice(2);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const requests = [];
await Promise.all(Array.from({ length: Number(n) }, () => new Promise((resolve, reject) => {
  const req = http.get({
    agent, host: target.hostname, port: target.port, path: target.pathname,
    headers: { accept: 'text/event-stream' },
  }, (res) => {
    if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
    res.once('data', () => resolve());
    res.on('data', () => {});
    res.on('error', () => {});
  });
  req.on('error', (e) => (req.destroyed ? undefined : reject(e)));
  requests.push(req);
})));
console.log('OPEN');
await new Promise((resolve) => readline.createInterface({ input: process.stdin }).once('line', resolve));
for (const req of requests) req.destroy();
console.log('CLOSED');
setTimeout(() => process.exit(0), 500);
