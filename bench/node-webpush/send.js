// Reference Web Push sender for BENCHMARKS.md: the npm `web-push` package sending M pushes to a
// push-service double (`sondakika-bench push sink`), with bounded concurrency, the way most Node
// applications use it: `webpush.sendNotification(subscription, payload, options)` per reader.
//
//   node send.js --sink https://localhost:18291 --count 100000 --payload payload.bin \
//       [--concurrency 100] [--vapid per-message|once] [--key-pool 1000]
//
// --vapid per-message: the library's default; it signs a new VAPID JWT (ES256) for every message.
// --vapid once: the JWT is made once with `webpush.getVapidHeaders` and passed as a header.
//
// Like `sondakika-bench push seed`, subscriber keys come from a pool of --key-pool key pairs
// reused round-robin; every endpoint is distinct and every message still gets its own ephemeral
// key. Prints one JSON object: wall time, pushes/s, this process's CPU per push.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const webpush = require('web-push');

function arg(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const SINK = arg('sink', 'http://localhost:18290').replace(/\/$/, '');
const COUNT = Number(arg('count', '100000'));
const CONCURRENCY = Number(arg('concurrency', '100'));
const VAPID_MODE = arg('vapid', 'per-message');
const KEY_POOL = Number(arg('key-pool', '1000'));
const SUBJECT = arg('subject', 'mailto:bench@burdurweb.com');
const TTL = Number(arg('ttl', '3600'));
const payloadPath = arg('payload', null);
const payload = payloadPath ? fs.readFileSync(payloadPath) : Buffer.alloc(1000, 'a');
if (!['per-message', 'once'].includes(VAPID_MODE)) throw new Error('--vapid must be per-message or once');

// Keep-alive and at most CONCURRENCY sockets. An https sink is trusted through
// NODE_EXTRA_CA_CERTS (Node's https speaks HTTP/1.1). For a plain-http sink: web-push always
// calls https.request and only accepts an https.Agent, so this one then opens plain TCP
// connections (the http.Agent's `createConnection`, no TLS).
const agent = new https.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
if (SINK.startsWith('http:')) agent.createConnection = http.Agent.prototype.createConnection;

const vapidKeys = webpush.generateVAPIDKeys();
const vapidDetails = { subject: SUBJECT, publicKey: vapidKeys.publicKey, privateKey: vapidKeys.privateKey };

const keys = [];
for (let i = 0; i < KEY_POOL; i++) {
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  keys.push({ p256dh: ecdh.getPublicKey().toString('base64url'), auth: crypto.randomBytes(16).toString('base64url') });
}
const run = Date.now();
const subscription = (n) => ({ endpoint: `${SINK}/node/${run}/${n}`, keys: keys[n % keys.length] });

let options;
if (VAPID_MODE === 'once') {
  const audience = new URL(SINK).origin;
  const headers = webpush.getVapidHeaders(audience, SUBJECT, vapidKeys.publicKey, vapidKeys.privateKey, 'aes128gcm');
  options = { vapidDetails: null, headers: { Authorization: headers.Authorization }, TTL, urgency: 'high', agent };
} else {
  options = { vapidDetails, TTL, urgency: 'high', agent };
}

async function main() {
  let next = 0;
  let sent = 0;
  const failures = {};
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  async function worker() {
    while (next < COUNT) {
      const n = next++;
      try {
        await webpush.sendNotification(subscription(n), payload, options);
        sent++;
      } catch (e) {
        const k = e.statusCode ? `HTTP ${e.statusCode}` : String(e.code || e.message);
        failures[k] = (failures[k] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, COUNT) }, worker));
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const cpuSecs = (cpu.user + cpu.system) / 1e6;
  const out = {
    label: `node-web-push (vapid ${VAPID_MODE})`,
    node: process.version,
    web_push: require('web-push/package.json').version,
    count: COUNT,
    sent,
    failures,
    concurrency: CONCURRENCY,
    vapid: VAPID_MODE,
    payload_bytes: payload.length,
    wall_secs: Math.round(wall * 1000) / 1000,
    pushes_per_sec: Math.round((sent / wall) * 100) / 100,
    cpu_secs: { user: cpu.user / 1e6, system: cpu.system / 1e6, total: cpuSecs },
    cpu_us_per_push: Math.round((cpuSecs * 1e6 / Math.max(sent, 1)) * 100) / 100,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  agent.destroy();
  if (sent !== COUNT) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
