// Shared set-up for the browser tests: a real `sondakika serve` (with its own private
// PostgreSQL in a temporary directory), an editor token, and Debian's headless Chromium driven by
// playwright-core. Nothing of ours is stubbed.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { createECDH, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = join(here, "..", "..");
export const screenshots = join(repo, "docs", "screenshots");
const bin = process.env.SONDAKIKA_BIN || join(repo, "target", "debug", "sondakika");

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/**
 * Starts a server; returns { url, token, env, stop() }. `options.push: false` starts it with Web
 * Push off; other options are extra environment. SONDAKIKA_DEV_ASSETS_DIR is passed through, for
 * working on the assets without rebuilding.
 */
export async function startServer(options = {}) {
  const { push = true, ...extraEnv } = options;
  const dataDir = mkdtempSync(join(tmpdir(), "sondakika-browser-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = {
    PATH: process.env.PATH,
    SONDAKIKA_DATA_DIR: dataDir,
    SONDAKIKA_BIND: `127.0.0.1:${port}`,
    SONDAKIKA_PUBLIC_URL: url,
    SONDAKIKA_ALLOWED_ORIGINS: url,
    SONDAKIKA_VAPID_SUBJECT: "mailto:teknik@burdurweb.com",
    SONDAKIKA_LOG_FORMAT: "json",
    SONDAKIKA_LOG_LEVEL: "info",
    SONDAKIKA_PUBLIC_RATE_PER_MINUTE: "10000",
    ...(process.env.SONDAKIKA_DEV_ASSETS_DIR ? { SONDAKIKA_DEV_ASSETS_DIR: process.env.SONDAKIKA_DEV_ASSETS_DIR } : {}),
    ...extraEnv,
  };
  if (!push) delete env.SONDAKIKA_VAPID_SUBJECT;
  const child = spawn(bin, ["serve"], { env, stdio: ["ignore", "ignore", "pipe"] });
  const lines = createInterface({ input: child.stderr });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start in 60 s")), 60_000);
    child.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
    lines.on("line", (line) => {
      try {
        if (JSON.parse(line).message === "sondakika is listening") {
          clearTimeout(timer);
          resolve();
        }
      } catch {}
    });
  });
  const token = execFileSync(bin, ["token", "create", "--name", "Ayşe Yılmaz"], { env, stdio: ["ignore", "pipe", "ignore"] })
    .toString()
    .trim();
  return {
    url,
    token,
    env,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** What a server needs to send pushes to a {@link startPushDouble} on loopback. */
export const PUSH_DOUBLE_ENV = { SONDAKIKA_PUSH_EXTRA_HOSTS: "localhost", SONDAKIKA_PUSH_EXTRA_HOSTS_ALLOW_HTTP: "true" };

/**
 * A push service on loopback that accepts every push and decrypts it (RFC 8291, aes128gcm) with
 * the keys of the subscriptions it handed out: the payload the server really sent, receipt token
 * and all, to hand to the browser's service worker. (tests/api/push_double.rs is the strict one.)
 */
export async function startPushDouble() {
  const subscribers = new Map();
  const received = [];
  const server = createHttpServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const id = Number((req.url.match(/^\/push\/(\d+)$/) || [])[1]);
      const sub = subscribers.get(id);
      if (!sub) {
        res.writeHead(404).end();
        return;
      }
      try {
        received.push({ subscriber: id, payload: decryptPush(Buffer.concat(chunks), sub) });
        res.writeHead(201).end();
      } catch (e) {
        res.writeHead(400).end(String(e));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  // A test that fails before closing its double must not keep the test file's process alive
  // after its last test (the runner would wait for ever).
  server.unref();
  const origin = `http://localhost:${server.address().port}`;
  return {
    received,
    /** A new subscriber's `PushSubscription.toJSON()`. */
    subscription(id) {
      const ecdh = createECDH("prime256v1");
      ecdh.generateKeys();
      const auth = randomBytes(16);
      subscribers.set(id, { ecdh, auth });
      return {
        endpoint: `${origin}/push/${id}`,
        expirationTime: null,
        keys: { p256dh: ecdh.getPublicKey().toString("base64url"), auth: auth.toString("base64url") },
      };
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** RFC 8291 / RFC 8188 decryption of one aes128gcm body with a subscriber's keys. */
function decryptPush(body, { ecdh, auth }) {
  const salt = body.subarray(0, 16);
  const keyLength = body[20];
  const serverKey = body.subarray(21, 21 + keyLength);
  const record = body.subarray(21 + keyLength);
  const info = Buffer.concat([Buffer.from("WebPush: info\0"), ecdh.getPublicKey(), serverKey]);
  const ikm = Buffer.from(hkdfSync("sha256", ecdh.computeSecret(serverKey), auth, info, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 2, then zero padding.
  const end = padded.lastIndexOf(2);
  return JSON.parse(padded.subarray(0, end).toString("utf8"));
}

/** Debian's Chromium, headless, with the flags that work on these machines. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** The editor API, for arranging and checking what the browser shows. */
export function api(server) {
  const call = async (method, path, body) => {
    const r = await fetch(server.url + path, {
      method,
      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  };
  return {
    flag: (alert) => call("POST", "/api/v1/alerts", alert),
    correct: (id, fields) => call("PATCH", `/api/v1/alerts/${id}`, fields),
    retract: (id) => call("POST", `/api/v1/alerts/${id}/retract`),
    show: (id) => call("GET", `/api/v1/alerts/${id}`),
    list: () => call("GET", "/api/v1/alerts"),
  };
}

export function screenshotPath(name) {
  mkdirSync(screenshots, { recursive: true });
  return join(screenshots, name);
}
