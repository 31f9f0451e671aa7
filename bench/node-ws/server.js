'use strict';
// Reference broadcast server for the live-ticker benchmark (BENCHMARKS.md).
//
// The simplest idiomatic fan-out with the `ws` library, speaking enough of sondakika's ticker
// protocol for `sondakika-bench tickers --target node`: a `hello` frame on connect, and
// `POST /publish` broadcasts an `alert` frame to every open socket. It has no database, no
// persistence and no replay, so it is the floor to compare against, not a competitor.
//
// Settings (environment): HOST (127.0.0.1), PORT (18182).

const http = require('node:http');
const crypto = require('node:crypto');
const { WebSocketServer, WebSocket } = require('ws');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT || 18182);
// Bounds like sondakika's defaults: small request bodies, small client frames, pings every 20 s.
const MAX_BODY_BYTES = 64 * 1024;
const MAX_CLIENT_MESSAGE = 4096;
const PING_INTERVAL_MS = 20_000;
const TTL_MS = 3600 * 1000;

let seq = 0;

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function publish(req, res) {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      reply(res, 413, { error: 'body too large' });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (res.writableEnded) return;
    let alert;
    try {
      alert = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      reply(res, 400, { error: 'body is not JSON' });
      return;
    }
    if (typeof alert.headline !== 'string' || typeof alert.url !== 'string') {
      reply(res, 422, { error: 'headline and url are required strings' });
      return;
    }
    seq += 1;
    const id = crypto.randomUUID();
    const now = new Date();
    // The same fields as sondakika's alert frame, so both servers send frames of about the
    // same size.
    const frame = JSON.stringify({
      type: 'alert',
      seq,
      id,
      label: 'Son dakika',
      headline: alert.headline,
      summary: alert.summary ?? null,
      url: alert.url,
      image: null,
      topics: Array.isArray(alert.topics) ? alert.topics : [],
      urgency: 'high',
      published_at: now.toISOString(),
      updated_at: now.toISOString(),
      expires_at: new Date(now.getTime() + TTL_MS).toISOString(),
    });
    // Serialised once: a Buffer is framed per client but not re-encoded from the string.
    const data = Buffer.from(frame);
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: false });
    }
    reply(res, 201, { id, seq });
  });
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/publish') return publish(req, res);
  if (req.method === 'GET' && req.url === '/health') return reply(res, 200, { status: 'ok', clients: wss.clients.size });
  reply(res, 404, { error: 'not found' });
});

const wss = new WebSocketServer({ server, path: '/ws', maxPayload: MAX_CLIENT_MESSAGE, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  // A client error only ends that client; without a listener it would crash the process.
  ws.on('error', () => ws.terminate());
  ws.send(
    JSON.stringify({
      type: 'hello',
      seq,
      server_time: new Date().toISOString(),
      topics: [],
      replay: null,
    }),
  );
});

// Like sondakika: ping every interval, drop a peer that did not answer the previous ping.
const pinger = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, PING_INTERVAL_MS);

function stop() {
  clearInterval(pinger);
  for (const ws of wss.clients) ws.close(1001, 'server shutting down');
  wss.close();
  server.close(() => process.exit(0));
  // Bounded: sockets that do not close in time are dropped with the process.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(PORT, HOST, () => {
  console.error(`node-ws reference server on ws://${HOST}:${PORT}/ws (POST /publish), pid ${process.pid}`);
});
