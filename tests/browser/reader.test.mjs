// The reader's side, in headless Chromium against a real server (each test starts its own):
// the demo page's live ticker (alert within a second, correction, retraction, replay after a cut
// connection, SSE fallback, screen-reader announcements of corrections and retractions), the
// service worker's notifications and receipts (pushes delivered through the DevTools protocol):
// an alert, its corrections and its retraction, in any order; the notification images; the
// alerts button's subscription (only the browser's push service is faked), bounded where that
// push service cannot be reached; what the button explains when alerts cannot work, the embed on
// a news site of another origin, and the screenshot docs/screenshots/reader.png.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID, webcrypto } from "node:crypto";
import { createServer } from "node:http";
import { startServer, startPushDouble, PUSH_DOUBLE_ENV, launchBrowser, api, screenshotPath } from "./harness.mjs";

const HEADLINE = "Burdur'da deprem: İlk açıklama geldi — ğüşıöç";
const ticker = '[data-sondakika="ticker"]';
const alertSel = (id) => `[data-sondakika-alert="${id}"]`;


/** A fresh server and browser for one test; cleaned up whatever happens. */
async function withReader(fn, { contextOptions = {}, serverOptions = {} } = {}) {
  const [server, browser] = await Promise.all([startServer(serverOptions), launchBrowser()]);
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "tr-TR", ...contextOptions });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    await fn({ server, browser, context, page, editor: api(server) });
    assert.deepEqual(errors, [], "no uncaught errors in the page");
  } finally {
    await browser.close();
    await server.stop();
  }
}

/** Polls `check` until it returns a truthy value (which it returns), or fails after `timeout`. */
async function until(check, { timeout = 30_000, interval = 25, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

const state = (page) => page.evaluate(() => window.Sondakika.state());

/** Opens the demo page and waits until its ticker holds a live connection. */
async function openDemo(page, server) {
  await page.goto(server.url + "/");
  await page.locator(ticker).waitFor();
  await page.waitForFunction(() => window.Sondakika && window.Sondakika.state().connected, null, { timeout: 30_000 });
}

function alertBody(extra = {}) {
  const slug = randomUUID().slice(0, 8);
  return {
    headline: HEADLINE,
    url: `https://www.burdurhaber.example/haber/deprem-${slug}`,
    summary: "AFAD ilk verileri paylaştı; can kaybı bildirilmedi.",
    topics: ["burdur", "gundem"],
    ...extra,
  };
}

test("the demo page's ticker shows a flagged alert within a second, then its correction and retraction", async () => {
  await withReader(async ({ server, page, editor }) => {
    await openDemo(page, server);
    const banner = page.locator(ticker);
    assert.match(await banner.textContent(), /SON DAKİKA/);
    const announcer = banner.locator('[aria-live="polite"]');
    assert.equal(await announcer.count(), 1, "the banner has a polite live region");

    const flagged = await editor.flag(alertBody());
    assert.equal(flagged.status, 201);
    const respondedAt = Date.now();
    const item = page.locator(alertSel(flagged.body.id));
    await item.waitFor({ timeout: 30_000 });
    const elapsed = Date.now() - respondedAt;
    assert.ok(elapsed < 1_000, `the alert appeared ${elapsed} ms after the API answered`);

    const link = item.locator("a");
    assert.equal(await link.textContent(), HEADLINE, "the Turkish headline, byte-exact");
    assert.equal(await link.getAttribute("href"), flagged.body.url);
    assert.match(await item.locator("time").textContent(), /az önce/);
    assert.notEqual(await item.evaluate((li) => getComputedStyle(li).animationName), "none", "a new alert is highlighted");
    await until(async () => (await announcer.textContent()).includes(HEADLINE), { what: "the screen-reader announcement" });

    const corrected = "Burdur'da 4,2 büyüklüğünde deprem: AFAD açıklama yaptı";
    assert.equal((await editor.correct(flagged.body.id, { headline: corrected })).status, 200);
    await until(async () => (await link.textContent()) === corrected, { timeout: 30_000, what: "the corrected headline" });
    assert.equal(await page.locator(`${ticker} [data-sondakika-alert]`).count(), 1, "a correction replaces, never duplicates");

    assert.equal((await editor.retract(flagged.body.id)).status, 200);
    await item.waitFor({ state: "detached", timeout: 30_000 });
    assert.deepEqual((await state(page)).alerts, []);
  });
});

test("a ticker whose connection was cut replays what it missed, from its last seq (reduced motion: no animation)", async () => {
  await withReader(async ({ server, context, page, editor }) => {
    await openDemo(page, server);
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    const liveLoads = [];
    page.on("request", (r) => r.url().includes("/api/v1/live") && liveLoads.push(r.url()));
    const seqBefore = (await state(page)).seq;

    await context.setOffline(true);
    await page.waitForFunction(() => {
      const s = window.Sondakika.state();
      return s.offline && !s.connected && s.transport === null;
    });
    const first = await editor.flag(alertBody({ headline: "Gölhisar'da sel: yollar kapandı" }));
    const second = await editor.flag(alertBody({ headline: "Bucak'ta elektrik kesintisi uzadı" }));
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    assert.equal(await page.locator(`${ticker} [data-sondakika-alert]`).count(), 0, "nothing arrives while offline");

    await context.setOffline(false);
    await page.locator(alertSel(first.body.id)).waitFor({ timeout: 30_000 });
    await page.locator(alertSel(second.body.id)).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator(`${alertSel(first.body.id)} a`).textContent(), "Gölhisar'da sel: yollar kapandı");
    assert.equal(await page.locator(`${alertSel(second.body.id)} a`).textContent(), "Bucak'ta elektrik kesintisi uzadı");

    // Both came by replay on the new socket (since=<the seq before the cut>), not by reloading.
    assert.equal(sockets.length, 1, `one reconnect: ${sockets}`);
    assert.equal(new URL(sockets[0]).searchParams.get("since"), String(seqBefore));
    assert.deepEqual(liveLoads, []);
    assert.equal((await state(page)).seq, second.body.seq);
    assert.equal(await page.locator(alertSel(second.body.id)).evaluate((li) => getComputedStyle(li).animationName), "none");
  }, { contextOptions: { reducedMotion: "reduce" } });
});

test("when WebSockets keep failing the ticker falls back to Server-Sent Events", async () => {
  await withReader(async ({ server, context, page, editor }) => {
    // A network that breaks every WebSocket (as some proxies do).
    await context.routeWebSocket(/\/ws/, (ws) => ws.close({ code: 1011, reason: "blocked" }));
    await page.goto(server.url + "/");
    await page.waitForFunction(() => {
      const s = window.Sondakika.state();
      return s.transport === "sse" && s.connected;
    }, null, { timeout: 30_000 });
    const flagged = await editor.flag(alertBody());
    await page.locator(alertSel(flagged.body.id)).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator(`${alertSel(flagged.body.id)} a`).textContent(), HEADLINE);
  });
});

/** Subscribes a push double's subscriber `id` to everything, as the site's JavaScript would. */
async function subscribeDouble(server, pushService, id) {
  const r = await fetch(`${server.url}/api/v1/push/subscriptions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ subscription: pushService.subscription(id), topics: [], locale: "tr" }),
  });
  assert.equal(r.status, 201, await r.text());
}

/**
 * The payload the server pushed to subscriber `id` for an alert, decrypted by the double: the
 * step of the alert's life given by `kind` (`alert`, `correction`, `retraction`), of `revision`
 * if given.
 */
function pushedTo(pushService, id, alertId, kind = "alert", revision = null) {
  return until(
    () =>
      pushService.received.find(({ subscriber, payload: { notification: { data } } }) =>
        subscriber === id && data.id === alertId && data.kind === kind && (revision === null || data.revision === revision),
      )?.payload,
    { what: `the ${kind} push of ${alertId} to subscriber ${id}` },
  );
}

/** Corrections are pushed without the 2 s wait that coalesces an editor's quick fixes. */
const PUSH_NOW = { ...PUSH_DOUBLE_ENV, SONDAKIKA_PUSH_CORRECTION_COALESCE_MS: "0" };

/**
 * The page's service worker, registered and activated, with pushes delivered to it through the
 * DevTools protocol (the way a push service's message reaches it) and its notifications read back.
 *
 * `deliver` resolves once the worker has finished with the push (its event's waitUntil promise
 * settled), and notifications are read only then. Chromium's getNotifications() deletes from its
 * store every notification that was written before the read began but is not yet on display
 * (platform_notification_context_impl.cc), so a read that overlaps a showNotification() loses
 * that notification for good: it stays on screen, but no later read lists it. Polling while a
 * push was being shown made these tests fail about one run in five.
 */
async function pushWorker(page, context, origin) {
  const cdp = await context.newCDPSession(page);
  const registrations = new Map();
  const activated = new Set();
  cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations: rs }) => rs.forEach((r) => registrations.set(r.registrationId, r)));
  cdp.on("ServiceWorker.workerVersionUpdated", ({ versions }) =>
    versions.forEach((v) => v.status === "activated" && activated.add(v.registrationId)),
  );
  await cdp.send("ServiceWorker.enable");
  const script = `${origin}/sw.js`;
  const started = context.serviceWorkers().find((w) => w.url() === script)
    ? null
    : context.waitForEvent("serviceworker", { predicate: (w) => w.url() === script, timeout: 30_000 });
  await page.evaluate(async () => {
    await navigator.serviceWorker.register("/sw.js");
    await navigator.serviceWorker.ready;
  });
  const registrationId = await until(
    () => [...registrations.values()].find((r) => r.scopeURL === `${origin}/` && !r.isDeleted && activated.has(r.registrationId))?.registrationId,
    { what: "the activated service worker" },
  );
  const sw = (await started) ?? context.serviceWorkers().find((w) => w.url() === script);
  // Test-only, installed in the running worker (not in sw.js): every push event whose payload
  // carries a `__delivery` mark records the mark once the promise it handed to waitUntil settles.
  const watch = () =>
    sw.evaluate(() => {
      if (self.__deliveries) return;
      const settled = (self.__deliveries = new Set());
      const waitUntil = ExtendableEvent.prototype.waitUntil;
      ExtendableEvent.prototype.waitUntil = function (promise) {
        let mark = null;
        try {
          mark = this.data ? this.data.json().__delivery : null;
        } catch {}
        if (mark != null) {
          const done = () => settled.add(mark);
          Promise.resolve(promise).then(done, done);
        }
        return waitUntil.call(this, promise);
      };
    });
  let deliveries = 0;
  return {
    /** Hands the worker a push and resolves once it has finished with it. */
    async deliver(payload) {
      await watch();
      const mark = ++deliveries;
      await cdp.send("ServiceWorker.deliverPushMessage", { origin, registrationId, data: JSON.stringify({ ...payload, __delivery: mark }) });
      await until(() => sw.evaluate((mark) => self.__deliveries && self.__deliveries.has(mark), mark), {
        what: `the worker to finish push ${mark} (a worker that restarted loses the watch)`,
      });
    },
    /** Every notification the worker shows, or those of one tag. */
    notifications: (tag) =>
      page.evaluate(async (tag) => {
        const reg = await navigator.serviceWorker.ready;
        return (await reg.getNotifications(tag ? { tag } : {})).map((n) => ({
          title: n.title, body: n.body, tag: n.tag, icon: n.icon, badge: n.badge, silent: n.silent, renotify: n.renotify, data: n.data,
        }));
      }, tag),
  };
}

/**
 * A reader's page with the service worker running, notifications allowed and push-double
 * subscriber 1 subscribed: for the tests that hand the server's own pushes to the worker.
 */
async function withPushReader(fn) {
  const pushService = await startPushDouble();
  try {
    await withReader(async ({ server, context, page, editor }) => {
      await subscribeDouble(server, pushService, 1);
      await context.grantPermissions(["notifications"], { origin: server.url });
      await page.goto(server.url + "/");
      const worker = await pushWorker(page, context, server.url);
      await fn({ server, page, editor, pushService, worker });
    }, { serverOptions: PUSH_NOW });
  } finally {
    await pushService.close();
  }
}

test("the service worker shows a push with a PNG icon and reports it shown; a correction replaces it (same tag, new text, quiet), and an older push never brings the old headline back", async () => {
  await withPushReader(async ({ server, page, editor, pushService, worker }) => {

    const flagged = (await editor.flag(alertBody())).body;
    const tag = `sondakika-${flagged.id}`;
    // The worker reports `shown` once showNotification() has resolved; the server counts it.
    const shownCount = (n) =>
      until(async () => {
        const { body } = await editor.show(flagged.id);
        return body.push && body.push.shown >= n ? body.push : null;
      }, { timeout: 30_000, what: `push.shown >= ${n}` });

    const original = await pushedTo(pushService, 1, flagged.id);
    assert.match(original.notification.data.receipt, /^\d+\.[A-Za-z0-9_-]{22}$/);
    // Delivered once the server has logged it sent, so that the receipt does not have to wait
    // for the log (the worker would retry it, but a loaded machine can outlast its retries).
    await until(async () => (await editor.show(flagged.id)).body.push.sent >= 1, { timeout: 30_000, what: "the push logged sent" });
    await worker.deliver(original);
    await shownCount(1);
    const [shown, ...more] = await worker.notifications(tag);
    assert.equal(more.length, 0, "one notification for the alert");
    assert.equal(shown.title, `SON DAKİKA: ${HEADLINE}`);
    assert.equal(shown.body, flagged.summary);
    assert.equal(shown.tag, tag);
    assert.equal(shown.icon, `${server.url}/assets/icon-192.png`, "a PNG icon, which every platform shows");
    assert.equal(shown.badge, `${server.url}/assets/badge-96.png`);
    assert.equal(shown.silent, false, "the alert itself is not quiet");
    assert.equal(shown.data.url, flagged.url);
    assert.equal(shown.data.alertId, flagged.id);
    assert.equal(shown.data.receipt, original.notification.data.receipt);

    // The quiet correction (the default): the same notification, replaced, without a sound.
    const fixed = "Burdur'da 4,2 büyüklüğünde deprem";
    assert.equal((await editor.correct(flagged.id, { headline: fixed })).status, 200);
    const correction = await pushedTo(pushService, 1, flagged.id, "correction", 1);
    assert.equal(correction.notification.tag, tag);
    await worker.deliver(correction);
    const replaced = await worker.notifications(tag);
    assert.deepEqual(replaced.map((n) => n.title), [`SON DAKİKA: ${fixed}`], "the corrected notification, in place of the original");
    assert.equal(replaced[0].silent, true, "a quiet correction makes no sound");
    assert.equal(replaced[0].renotify, false);
    assert.equal(replaced[0].data.kind, "correction");
    assert.equal(replaced[0].data.revision, 1);
    assert.equal(replaced[0].icon, `${server.url}/assets/icon-192.png`);

    // The original, delivered late (a push service reordered them, or a retry): nothing changes.
    await worker.deliver(original);
    assert.deepEqual((await worker.notifications()).map((n) => n.title), [`SON DAKİKA: ${fixed}`], "never the stale headline");

    // Dismissed by the reader, then the late original again: the current text comes back, not the old.
    await page.evaluate(async () => (await (await navigator.serviceWorker.ready).getNotifications()).forEach((n) => n.close()));
    await worker.deliver(original);
    assert.deepEqual((await worker.notifications()).map((n) => [n.title, n.silent]), [[`SON DAKİKA: ${fixed}`, true]]);

    // "Alert again": a correction that sounds.
    const again = "Burdur'da 4,4 büyüklüğünde deprem";
    assert.equal((await editor.correct(flagged.id, { headline: again, push: "renotify" })).status, 200);
    await worker.deliver(await pushedTo(pushService, 1, flagged.id, "correction", 2));
    const [renotified, ...extra] = await worker.notifications(tag);
    assert.equal(extra.length, 0, "one notification for the alert");
    assert.equal(renotified.title, `SON DAKİKA: ${again}`);
    assert.equal(renotified.renotify, true);
    assert.equal(renotified.silent, false);
    await worker.deliver(correction);
    assert.deepEqual((await worker.notifications()).map((n) => n.title), [`SON DAKİKA: ${again}`], "revision 1 after revision 2 changes nothing");
    const figures = await shownCount(1);
    assert.equal(figures.clicked, 0);
  });
});

test("a retraction closes the alert's notification when another of ours stays on screen, or else replaces it with the quiet withdrawn notice; nothing brings it back", async () => {
  await withPushReader(async ({ server, page, editor, pushService, worker }) => {
    const titles = async () => (await worker.notifications()).map((n) => n.title).sort();

    const wrong = (await editor.flag(alertBody({ headline: "Bucak'ta baraj taştı" }))).body;
    const other = (await editor.flag(alertBody({ headline: "Gölhisar'da sel: yollar kapandı" }))).body;
    const wrongPush = await pushedTo(pushService, 1, wrong.id);
    const otherPush = await pushedTo(pushService, 1, other.id);
    await worker.deliver(wrongPush);
    await worker.deliver(otherPush);
    assert.equal((await worker.notifications()).length, 2, "both alerts on screen");

    // A correction, then the retraction, reach this device in the wrong order (push services
    // may reorder; the correction here is simply held back).
    assert.equal((await editor.correct(wrong.id, { headline: "Bucak'ta baraj taşmadı" })).status, 200);
    const lateCorrection = await pushedTo(pushService, 1, wrong.id, "correction", 1);
    assert.equal((await editor.retract(wrong.id)).status, 200);
    const wrongRetraction = await pushedTo(pushService, 1, wrong.id, "retraction");
    assert.equal(wrongRetraction.notification.tag, `sondakika-${wrong.id}`);

    // Another of our notifications stays on screen: every browser lets this push show nothing
    // new, so the wrong one is simply closed.
    await worker.deliver(wrongRetraction);
    assert.deepEqual(await titles(), ["SON DAKİKA: Gölhisar'da sel: yollar kapandı"]);

    // Its original or its correction arriving late does not bring it back.
    await worker.deliver(wrongPush);
    await worker.deliver(lateCorrection);
    assert.deepEqual(await titles(), ["SON DAKİKA: Gölhisar'da sel: yollar kapandı"]);

    // The last one on screen: a push must leave a notification (Chrome would show its own "This
    // site has been updated in the background"; Firefox would spend the site's push quota), so
    // the withdrawn notice replaces it, quietly, under the same tag.
    assert.equal((await editor.retract(other.id)).status, 200);
    await worker.deliver(await pushedTo(pushService, 1, other.id, "retraction"));
    const [notice] = await worker.notifications(`sondakika-${other.id}`);
    assert.equal(notice?.title, "Haber geri çekildi", "the withdrawn notice");
    assert.equal(notice.body, "“Gölhisar'da sel: yollar kapandı” başlıklı bildirim geri çekildi.");
    assert.equal(notice.silent, true, "the withdrawn notice makes no sound");
    assert.equal(notice.data.kind, "retraction");
    assert.equal(notice.data.url, new URL(other.url).origin + "/", "a click on the notice goes to the site, not the withdrawn article");
    assert.equal(notice.icon, `${server.url}/assets/icon-192.png`);
    assert.deepEqual(await titles(), ["Haber geri çekildi"], "one notification, and no browser default in its place");

    await worker.deliver(otherPush);
    assert.deepEqual(await titles(), ["Haber geri çekildi"], "the original after its retraction changes nothing");
  });
});

test("pushes of several alerts that arrive together are all shown, and their retractions arriving together leave the withdrawn notice on screen, never nothing", async () => {
  await withPushReader(async ({ server, page, editor, pushService, worker }) => {
    const titles = async () => (await worker.notifications()).map((n) => n.title).sort();

    const alerts = [];
    for (const headline of ["Bucak'ta baraj taştı", "Gölhisar'da sel: yollar kapandı", "Yeşilova'da orman yangını"]) {
      alerts.push((await editor.flag(alertBody({ headline }))).body);
    }
    const originals = await Promise.all(alerts.map((a) => pushedTo(pushService, 1, a.id)));
    await Promise.all(originals.map((p) => worker.deliver(p)));
    assert.deepEqual(await titles(), alerts.map((a) => `SON DAKİKA: ${a.headline}`).sort(), "every alert on screen");

    // All three are withdrawn at once. Each retraction alone would see others on screen and
    // close its own; handled side by side, all three would, and the reader's screen would end
    // with nothing of ours (Chrome's "updated in the background", a Firefox quota spent).
    for (const a of alerts) assert.equal((await editor.retract(a.id)).status, 200);
    const retractions = await Promise.all(alerts.map((a) => pushedTo(pushService, 1, a.id, "retraction")));
    await Promise.all(retractions.map((p) => worker.deliver(p)));
    const left = await worker.notifications();
    assert.deepEqual(left.map((n) => n.title), ["Haber geri çekildi"], "exactly one notification: the withdrawn notice of the last retraction handled");
    const withdrawn = alerts.find((a) => left[0].tag === `sondakika-${a.id}`);
    assert.ok(withdrawn, "the notice carries a retracted alert's tag");
    assert.equal(left[0].body, `“${withdrawn.headline}” başlıklı bildirim geri çekildi.`);
  });
});

test("notification images: a 192×192 PNG icon and a 96×96 badge served from /assets, and an SVG icon with explicit width and height", async () => {
  await withReader(async ({ server }) => {
    for (const [path, size] of [["/assets/icon-192.png", 192], ["/assets/badge-96.png", 96]]) {
      const r = await fetch(server.url + path);
      assert.equal(r.status, 200, path);
      assert.equal(r.headers.get("content-type"), "image/png");
      assert.equal(r.headers.get("access-control-allow-origin"), "*", "a news site's worker names it across origins");
      const png = Buffer.from(await r.arrayBuffer());
      assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${path} is a PNG`);
      assert.deepEqual([png.readUInt32BE(16), png.readUInt32BE(20)], [size, size], `${path} is ${size}×${size}`);
    }
    const svg = await (await fetch(server.url + "/assets/icon.svg")).text();
    assert.match(svg, /^<svg[^>]* width="192" height="192"/, "Firefox drops an SVG icon without width and height");
  });
});

test("the alerts button subscribes with a well-formed subscription, re-syncs on load and turns off", async () => {
  const raw = await webcrypto.subtle.exportKey(
    "raw",
    (await webcrypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"])).publicKey,
  );
  const fake = {
    endpoint: `https://fcm.googleapis.com/fcm/send/test-${randomUUID()}`,
    p256dh: Buffer.from(raw).toString("base64url"),
    auth: randomBytes(16).toString("base64url"),
  };
  assert.equal(Buffer.from(raw).length, 65);

  await withReader(async ({ server, context, page }) => {
    // Only the browser's push service is faked (it cannot be reached from here); the page, the
    // service worker registration and the server are real.
    await context.addInitScript((fake) => {
      const saved = () => localStorage.getItem("test-push-subscription") === "1";
      const make = (options) => ({
        endpoint: fake.endpoint,
        expirationTime: null,
        options,
        getKey: () => null,
        toJSON: () => ({ endpoint: fake.endpoint, expirationTime: null, keys: { p256dh: fake.p256dh, auth: fake.auth } }),
        unsubscribe: async () => {
          localStorage.removeItem("test-push-subscription");
          return true;
        },
      });
      PushManager.prototype.subscribe = async function (options) {
        localStorage.setItem("test-push-subscription", "1");
        return make({ userVisibleOnly: options.userVisibleOnly, applicationServerKey: options.applicationServerKey });
      };
      PushManager.prototype.getSubscription = async function () {
        return saved() ? make({ userVisibleOnly: true, applicationServerKey: null }) : null;
      };
    }, fake);
    await context.grantPermissions(["notifications"], { origin: server.url });
    await page.goto(server.url + "/");
    const button = page.locator('[data-sondakika="subscribe"]');
    const status = page.locator('[data-sondakika="status"]');
    await until(async () => (await button.getAttribute("data-state")) === "off", { what: "the button's off state" });
    assert.equal((await button.textContent()).trim(), "Son dakika bildirimlerini aç");

    const isPost = (r) => r.url() === `${server.url}/api/v1/push/subscriptions` && r.request().method() === "POST";
    const [posted] = await Promise.all([page.waitForResponse(isPost), button.click()]);
    const body = posted.request().postDataJSON();
    assert.equal(posted.status(), 201);
    assert.deepEqual(body, {
      subscription: { endpoint: fake.endpoint, expirationTime: null, keys: { p256dh: fake.p256dh, auth: fake.auth } },
      topics: [],
      locale: "tr",
    });
    await until(async () => (await button.getAttribute("data-state")) === "on", { what: "the on state" });
    assert.equal((await button.textContent()).trim(), "Bildirimleri kapat");
    assert.equal(await button.getAttribute("aria-pressed"), "true");
    assert.match(await status.textContent(), /bildirimleri açık/);
    // The page registered the real service worker.
    assert.equal(
      await page.evaluate(async () => (await navigator.serviceWorker.getRegistration()).active.scriptURL),
      `${server.url}/sw.js`,
    );

    // Every page load posts it again (the server refreshes it: 200).
    const [again] = await Promise.all([page.waitForResponse(isPost), page.reload()]);
    assert.equal(again.status(), 200);
    assert.equal(again.request().postDataJSON().subscription.endpoint, fake.endpoint);
    await until(async () => (await button.getAttribute("data-state")) === "on", { what: "on after reload" });

    // Switching to English re-posts with the new locale.
    const [english] = await Promise.all([page.waitForResponse(isPost), page.locator('button[data-lang="en"]').click()]);
    assert.equal(english.request().postDataJSON().locale, "en");
    assert.equal((await button.textContent()).trim(), "Turn off alerts");

    // And off again: the server forgets the endpoint.
    const isDelete = (r) => r.url() === `${server.url}/api/v1/push/subscriptions` && r.request().method() === "DELETE";
    const [deleted] = await Promise.all([page.waitForResponse(isDelete), button.click()]);
    assert.equal(deleted.status(), 204);
    assert.deepEqual(deleted.request().postDataJSON(), { endpoint: fake.endpoint });
    await until(async () => (await button.getAttribute("data-state")) === "off", { what: "off again" });
    assert.equal((await button.textContent()).trim(), "Turn on breaking-news alerts");
  });
});

test("the ticker's screen-reader announcement is corrected with its alert and taken back when the alert is retracted", async () => {
  await withReader(async ({ server, page, editor }) => {
    await openDemo(page, server);
    const announcer = page.locator(`${ticker} [aria-live="polite"]`);
    const says = (text, what) => until(async () => (await announcer.textContent()) === text, { timeout: 30_000, what });

    const flagged = (await editor.flag(alertBody())).body;
    await says(`SON DAKİKA: ${HEADLINE}`, "the alert announced");
    const fixed = "Burdur'da 4,2 büyüklüğünde deprem: AFAD açıklama yaptı";
    assert.equal((await editor.correct(flagged.id, { headline: fixed })).status, 200);
    await says(`Düzeltme: SON DAKİKA: ${fixed}`, "the correction announced in place of the wrong headline");

    // A correction that leaves the headline as it was is not announced again.
    const other = (await editor.flag(alertBody({ headline: "Gölhisar'da sel: yollar kapandı" }))).body;
    await says("SON DAKİKA: Gölhisar'da sel: yollar kapandı", "the second alert announced");
    assert.equal((await editor.correct(other.id, { summary: "Yollar öğleden sonra açıldı." })).status, 200);
    await until(async () => (await state(page)).seq >= other.seq + 1, { what: "the summary-only update applied" });
    assert.equal(await announcer.textContent(), "SON DAKİKA: Gölhisar'da sel: yollar kapandı");

    // The first alert withdrawn after another was announced: the reader is told all the same.
    assert.equal((await editor.retract(flagged.id)).status, 200);
    await says(`Geri çekildi: ${fixed}`, "the retraction announced");
    await page.locator(alertSel(flagged.id)).waitFor({ state: "detached" });

    // In English too.
    await page.locator('button[data-lang="en"]').click();
    assert.equal((await editor.retract(other.id)).status, 200);
    await says("Withdrawn: Gölhisar'da sel: yollar kapandı", "the English retraction");
  });
});

test("where the browser's push service cannot be reached, subscribing gives up after a bounded time with an explanation, and a later try works", async () => {
  const raw = await webcrypto.subtle.exportKey(
    "raw",
    (await webcrypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, true, ["deriveBits"])).publicKey,
  );
  const fake = {
    endpoint: `https://fcm.googleapis.com/fcm/send/test-${randomUUID()}`,
    p256dh: Buffer.from(raw).toString("base64url"),
    auth: randomBytes(16).toString("base64url"),
  };
  await withReader(async ({ server, context, page }) => {
    // As in Chromium on a network that blocks FCM: the first subscribe() never settles. The
    // second one (the network works again) does.
    await context.addInitScript((fake) => {
      window.subscribeCalls = 0;
      let subscribed = false;
      const make = () => ({
        endpoint: fake.endpoint,
        expirationTime: null,
        options: { userVisibleOnly: true, applicationServerKey: null },
        getKey: () => null,
        toJSON: () => ({ endpoint: fake.endpoint, expirationTime: null, keys: { p256dh: fake.p256dh, auth: fake.auth } }),
        unsubscribe: async () => true,
      });
      PushManager.prototype.subscribe = function () {
        window.subscribeCalls++;
        if (window.subscribeCalls === 1) return new Promise(() => {});
        subscribed = true;
        return Promise.resolve(make());
      };
      PushManager.prototype.getSubscription = async () => (subscribed ? make() : null);
    }, fake);
    await context.grantPermissions(["notifications"], { origin: server.url });
    await page.clock.install();
    await page.goto(server.url + "/");
    const button = page.locator('[data-sondakika="subscribe"]');
    const status = page.locator('[data-sondakika="status"]');
    await until(async () => (await button.getAttribute("data-state")) === "off", { what: "the button's off state" });

    await button.click();
    await until(() => page.evaluate(() => window.subscribeCalls === 1), { what: "the first subscribe()" });
    assert.equal(await button.getAttribute("data-state"), "working");
    assert.equal(await button.isDisabled(), true);
    await page.clock.fastForward(19_000);
    assert.equal(await button.getAttribute("data-state"), "working", "still trying before the bound");
    await page.clock.fastForward(2_000);
    await until(async () => (await button.getAttribute("data-state")) === "error", { what: "giving up" });
    assert.equal(await button.isDisabled(), false, "the button works again");
    assert.match(await status.textContent(), /bildirim hizmetine ulaşılamadı.*ağ onu engelliyor olabilir/);
    assert.equal((await button.textContent()).trim(), "Son dakika bildirimlerini aç");

    const isPost = (r) => r.url() === `${server.url}/api/v1/push/subscriptions` && r.request().method() === "POST";
    const [posted] = await Promise.all([page.waitForResponse(isPost), button.click()]);
    assert.equal(posted.status(), 201);
    await until(async () => (await button.getAttribute("data-state")) === "on", { what: "on after the second try" });
    assert.match(await status.textContent(), /bildirimleri açık/);
  });
});

test("the alerts control explains when alerts cannot work: denied, iOS Safari, unsupported, server without push", async () => {
  const pushOff = await startServer({ push: false });
  try {
    await withReader(async ({ server, browser }) => {
      const explain = async (contextOptions, prepare, url = server.url) => {
        const context = await browser.newContext({ locale: "tr-TR", ...contextOptions });
        const page = await context.newPage();
        if (prepare) await prepare(context, page);
        await page.goto(url + "/");
        await page.waitForFunction(() => window.Sondakika && window.Sondakika.state().push !== "checking");
        const result = {
          push: (await state(page)).push,
          status: await page.locator('[data-sondakika="status"]').textContent(),
          button: await page.locator('[data-sondakika="subscribe"]').isVisible(),
        };
        await context.close();
        return result;
      };

      const denied = await explain({}, async (context, page) => {
        const { targetInfo } = await (await context.newCDPSession(page)).send("Target.getTargetInfo");
        await (await browser.newBrowserCDPSession()).send("Browser.setPermission", {
          permission: { name: "notifications" },
          setting: "denied",
          origin: server.url,
          browserContextId: targetInfo.browserContextId,
        });
      });
      assert.equal(denied.push, "denied");
      assert.match(denied.status, /engellemişsiniz.*“İzin ver”/);
      assert.equal(denied.button, false);

      const withoutPushManager = (context) => context.addInitScript(() => delete window.PushManager);
      const iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
      const ios = await explain({ userAgent: iphone }, withoutPushManager);
      assert.equal(ios.push, "ios");
      assert.match(ios.status, /Ana Ekrana ekleyin/);
      assert.equal(ios.button, false);

      const old = await explain({}, withoutPushManager);
      assert.equal(old.push, "unsupported");
      assert.match(old.status, /desteklemiyor/);

      const noPush = await explain({ locale: "en-US" }, null, pushOff.url);
      assert.equal(noPush.push, "nopush");
      assert.equal(noPush.status, "Push alerts are not enabled on this site right now.");
      assert.equal(noPush.button, false);
    });
  } finally {
    await pushOff.stop();
  }
});

test("on a news site of another origin: data-target, data-lang, CORS, aggressive CSS kept out, and its importScripts worker", async () => {
  // The news site: a plain HTTP server of its own on another port (another origin).
  let sondakikaUrl = null;
  const siteServer = createServer((req, res) => {
    if (req.url === "/sw.js") {
      // The site's own service worker, as the README tells news sites to write it.
      res.writeHead(200, { "content-type": "text/javascript" });
      return res.end(`importScripts(${JSON.stringify(sondakikaUrl + "/sw.js")});\n`);
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(hostPage({ url: sondakikaUrl }));
  });
  await new Promise((resolve) => siteServer.listen(0, "127.0.0.1", resolve));
  siteServer.unref();
  const site = `http://127.0.0.1:${siteServer.address().port}`;
  const hostPage = (server) => `<!doctype html><html lang="tr"><head><meta charset="utf-8"><title>Haber</title>
<style>
  * { color: lime !important; font-family: monospace !important; letter-spacing: 4px !important; text-transform: lowercase !important; }
  div, section, li, a, button, p { display: inline !important; border: 3px dashed red !important; }
  ol, ul { list-style: upper-roman !important; }
</style></head><body>
<header><h1>Haber Sitesi</h1></header>
<div id="son-dakika"></div>
<article><p>Gövde metni.</p></article>
<script src="${server.url}/embed/sondakika.js" data-server="${server.url}" data-topics="burdur" data-lang="en" data-target="#son-dakika" defer></script>
</body></html>`;
  const pushService = await startPushDouble();
  const pushOn = await startServer({ SONDAKIKA_ALLOWED_ORIGINS: site, ...PUSH_DOUBLE_ENV });
  sondakikaUrl = pushOn.url;
  try {
    const browser = await launchBrowser();
    try {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "tr-TR" });
      const page = await context.newPage();
      const errors = [];
      page.on("pageerror", (e) => errors.push(e));
      await page.goto(`${site}/haber/ornek`);
      await page.waitForFunction(() => window.Sondakika && window.Sondakika.state().connected && window.Sondakika.state().push !== "checking");
      const st = await state(page);
      assert.equal(st.lang, "en");
      assert.deepEqual(st.topics, ["burdur"]);
      assert.equal(st.push, "off", "the VAPID key was fetched across origins");

      // Mounted in the target, and nothing added to the page's own styles.
      assert.equal(await page.evaluate(() => document.querySelector("#son-dakika").children.length), 1);
      assert.equal(await page.evaluate(() => document.styleSheets.length + document.adoptedStyleSheets.length), 1);

      const editor = api(pushOn);
      await subscribeDouble(pushOn, pushService, 1);
      const other = await editor.flag(alertBody({ headline: "Isparta'da kar yağışı", topics: ["isparta"] }));
      const flagged = await editor.flag(alertBody());
      const link = page.locator(`${alertSel(flagged.body.id)} a`);
      await link.waitFor({ timeout: 30_000 });
      assert.equal(await link.textContent(), HEADLINE);
      assert.equal(await page.locator(alertSel(other.body.id)).count(), 0, "other topics are filtered out");

      // The page's CSS does not reach inside the widget.
      const looks = await link.evaluate((a) => {
        const css = getComputedStyle(a);
        const li = getComputedStyle(a.closest("li"));
        return { color: css.color, font: css.fontFamily, spacing: css.letterSpacing, transform: css.textTransform, display: li.display, border: li.borderTopStyle };
      });
      assert.notEqual(looks.color, "rgb(0, 255, 0)");
      assert.doesNotMatch(looks.font, /monospace/);
      assert.equal(looks.transform, "none");
      assert.equal(looks.display, "flex");
      assert.equal(looks.border, "none");
      assert.ok(await page.locator('[data-sondakika="subscribe"]').isVisible());
      assert.equal((await page.locator('[data-sondakika="subscribe"]').textContent()).trim(), "Turn on breaking-news alerts");
      assert.match(await page.locator(ticker).textContent(), /BREAKING/);

      // The site's worker (one importScripts line) shows pushes and reports them across origins.
      await context.grantPermissions(["notifications"], { origin: site });
      const cdp = await context.newCDPSession(page);
      const registrations = new Map();
      const activated = new Set();
      cdp.on("ServiceWorker.workerRegistrationUpdated", ({ registrations: rs }) => rs.forEach((r) => registrations.set(r.registrationId, r)));
      cdp.on("ServiceWorker.workerVersionUpdated", ({ versions }) =>
        versions.forEach((v) => v.status === "activated" && activated.add(v.registrationId)),
      );
      await cdp.send("ServiceWorker.enable");
      await page.evaluate(async () => {
        await navigator.serviceWorker.register("/sw.js");
        await navigator.serviceWorker.ready;
      });
      const registrationId = await until(
        () => [...registrations.values()].find((r) => r.scopeURL === `${site}/` && !r.isDeleted && activated.has(r.registrationId))?.registrationId,
        { what: "the site's activated worker" },
      );
      const pushed = await pushedTo(pushService, 1, flagged.body.id);
      await cdp.send("ServiceWorker.deliverPushMessage", { origin: site, registrationId, data: JSON.stringify(pushed) });
      await until(async () => (await editor.show(flagged.body.id)).body.push.shown >= 1, { what: "the cross-origin shown receipt" });
      const notes = await page.evaluate(async () =>
        (await (await navigator.serviceWorker.ready).getNotifications()).map((n) => ({ title: n.title, icon: n.icon })),
      );
      assert.deepEqual(notes, [{ title: `SON DAKİKA: ${HEADLINE}`, icon: `${pushOn.url}/assets/icon-192.png` }]);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  } finally {
    await pushOn.stop();
    await pushService.close();
    siteServer.close();
  }
});

test("screenshot: the demo page with breaking news in the ticker", async () => {
  await withReader(async ({ server, page, editor }) => {
    await openDemo(page, server);
    const older = await editor.flag(alertBody({ headline: "Burdur Gölü'nde su seviyesi son 10 yılın en düşük düzeyinde" }));
    await page.locator(alertSel(older.body.id)).waitFor();
    const flagged = await editor.flag(alertBody());
    await page.locator(alertSel(flagged.body.id)).waitFor();
    await page.screenshot({ path: screenshotPath("reader.png"), animations: "disabled" });
  });
});
