// A flood of forged tokens from one source address: POSTs of `tools/call echo` whose token's signature
// changes on every request (so no cache can answer), from LOCAL_ADDRESS (default 127.0.0.2), with
// CONCURRENCY requests in flight, for SECONDS; prints the rate and the statuses it got.
//   node bench/flood.mjs URL TOKEN [SECONDS=3]
import * as http from 'node:http';

const [url, token, seconds = '3'] = process.argv.slice(2);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16);
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY, localAddress: process.env.LOCAL_ADDRESS ?? '127.0.0.2' });
const body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}';
const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const prefix = token.slice(0, -7);
const last = token.slice(-1);
const forged = () => {
  let tail = '';
  for (let i = 0; i < 6; i += 1) tail += alphabet[Math.floor(Math.random() * alphabet.length)];
  return `${prefix}${tail}${last}`;
};
const statuses = new Map();
let sent = 0;
const until = Date.now() + Number(seconds) * 1000;
const target = new URL(url);

function one() {
  return new Promise((resolve) => {
    const req = http.request({
      agent, host: target.hostname, port: target.port, path: target.pathname, method: 'POST',
      headers: {
        'content-type': 'application/json', accept: 'application/json, text/event-stream',
        authorization: `Bearer ${forged()}`, 'content-length': Buffer.byteLength(body),
      },
    }, (res) => {
      res.resume();
      res.on('end', () => {
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        resolve();
      });
    });
    req.on('error', () => {
      statuses.set('error', (statuses.get('error') ?? 0) + 1);
      resolve();
    });
    req.end(body);
  });
}

const started = Date.now();
await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
  while (Date.now() < until) {
    sent += 1;
    await one();
  }
}));
const rate = sent / ((Date.now() - started) / 1000);
console.log(`FLOOD rps=${rate.toFixed(0)} ${[...statuses].map(([s, n]) => `${s}=${n}`).join(' ')}`);
agent.destroy();
