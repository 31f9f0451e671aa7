// The editor console (/console) in a real browser against a real server: sign-in, compose,
// confirm, live figures, correction and retraction as a reader's page sees them, and what
// happens to the editor's text when a request fails.
//
// One server and one browser for the file; every test uses its own browser contexts and its own
// article URLs, so each runs alone as well (node --test --test-name-pattern=…).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { startServer, startPushDouble, PUSH_DOUBLE_ENV, launchBrowser, api, screenshotPath, repo } from "./harness.mjs";

const bin = process.env.SONDAKIKA_BIN || join(repo, "target", "debug", "sondakika");

let server;
let browser;
let articles = 0;

before(async () => {
  [server, browser] = await Promise.all([startServer(), launchBrowser()]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A fresh article URL per use: the server treats a second flag of a live URL as the same alert. */
function articleUrl(slug) {
  articles += 1;
  return `https://www.example.com.tr/haber/${slug}-${Date.now()}-${articles}`;
}

/** A console page in its own context; fails the test on any page error. */
async function openConsole(t, { locale = "tr-TR", viewport = { width: 1280, height: 800 }, on = server } = {}) {
  const context = await browser.newContext({ locale, viewport });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  t.after(() => assert.deepEqual(errors, [], "no script errors on the console page"));
  await page.goto(`${on.url}/console`);
  return page;
}

async function signIn(page, token = server.token) {
  await page.locator("#token").fill(token);
  await page.locator("#token").press("Enter");
  await page.locator("#app").waitFor({ state: "visible" });
}

async function compose(page, { headline, summary = "", url, image = "", topics = "" }) {
  await page.locator("#headline").fill(headline);
  await page.locator("#summary").fill(summary);
  await page.locator("#url").fill(url);
  await page.locator("#image").fill(image);
  await page.locator("#topics").fill(topics);
}

/** Send button, then the confirmation dialog's button. */
async function sendAndConfirm(page) {
  await page.locator("#send").click();
  const dialog = page.locator("#confirm-send");
  await dialog.waitFor({ state: "visible" });
  await dialog.getByRole("button", { name: "Gönder", exact: true }).click();
  await dialog.waitFor({ state: "hidden" });
}

/** An admin token, which /metrics on the main port requires; created on first use. */
let adminToken;
function admin() {
  adminToken ??= spawnSync(bin, ["token", "create", "--name", "Metrics", "--role", "admin"], {
    env: server.env,
    encoding: "utf8",
  }).stdout.trim();
  return adminToken;
}

/** Open ticker connections (WebSocket + SSE) as the server counts them. */
async function tickerConnections() {
  const headers = { authorization: `Bearer ${admin()}` };
  const text = await (await fetch(`${server.url}/metrics`, { headers })).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith("sondakika_stream_connections{") || l.startsWith("sondakika_stream_connections "))
    .reduce((sum, l) => sum + Number(l.trim().split(/\s+/).pop()), 0);
}

async function until(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A reader's page (the demo page with the ticker widget) in a second context, its ticker
 * connected: the server counts exactly the readers this file has open.
 */
let readersOpen = 0;
async function openReader(t) {
  const context = await browser.newContext({ locale: "tr-TR", viewport: { width: 1024, height: 700 } });
  readersOpen += 1;
  t.after(async () => {
    await context.close();
    readersOpen -= 1;
  });
  const reader = await context.newPage();
  await reader.goto(`${server.url}/`);
  await until("the reader's ticker to connect", async () => (await tickerConnections()) === readersOpen);
  return reader;
}

test("sign-in: a wrong token is refused with a message, the real one shows the editor's name", async (t) => {
  const page = await openConsole(t);
  assert.equal(await page.getAttribute("html", "lang"), "tr", "Turkish for a Turkish browser");
  await page.getByLabel("Editör anahtarı").fill("sdk_this-is-not-a-token");
  await page.getByRole("button", { name: "Giriş yap" }).click();
  const error = page.locator("#token-error");
  await error.waitFor({ state: "visible" });
  assert.match(await error.textContent(), /tanınmadı/);
  assert.equal(await page.locator("#token").getAttribute("aria-invalid"), "true");
  assert.ok(await page.locator("#app").isHidden(), "nothing of the desk before signing in");

  await page.getByLabel("Editör anahtarı").fill(server.token);
  await page.getByRole("button", { name: "Giriş yap" }).click();
  await page.locator("#who-name").waitFor({ state: "visible" });
  assert.equal(await page.locator("#who-name").textContent(), "Ayşe Yılmaz");
  assert.equal(await page.evaluate(() => document.activeElement.id), "headline", "ready to type the headline");

  // The TR/EN switch, remembered across reloads; the session survives a reload of the tab.
  await page.getByRole("button", { name: "EN", exact: true }).click();
  assert.equal(await page.getAttribute("html", "lang"), "en");
  await page.reload();
  await page.locator("#who-name").waitFor({ state: "visible" });
  assert.ok(await page.getByRole("button", { name: "Send as SON DAKİKA" }).isVisible());
  await page.getByRole("button", { name: "Sign out", exact: true }).click();
  await page.getByLabel("Editor token").waitFor({ state: "visible" });
});

test("an English browser gets English; a 401 mid-session returns to sign-in without losing the draft", async (t) => {
  // A second editor whose token is revoked while she types.
  const created = spawnSync(bin, ["token", "create", "--name", "Mehmet Kaya"], { env: server.env, encoding: "utf8" });
  assert.equal(created.status, 0, created.stderr);
  const token = created.stdout.trim();
  const id = created.stderr.match(/created token (\d+)/)[1];

  const page = await openConsole(t, { locale: "en-US" });
  assert.equal(await page.getAttribute("html", "lang"), "en");
  await signIn(page, token);
  assert.equal(await page.locator("#who-name").textContent(), "Mehmet Kaya");
  const url = articleUrl("401");
  const draft = { headline: "Göl'de su seviyesi yükseldi", summary: "DSİ uyardı.", url, topics: "burdur" };
  await compose(page, draft);

  const revoked = spawnSync(bin, ["token", "revoke", id], { env: server.env, encoding: "utf8" });
  assert.equal(revoked.status, 0, revoked.stderr);
  await page.locator("#send").click();
  await page.locator("#confirm-send").getByRole("button", { name: "Send", exact: true }).click();

  await page.locator("#signin-notice").waitFor({ state: "visible" });
  assert.match(await page.locator("#signin-notice").textContent(), /draft is kept/);
  await signIn(page);
  for (const [field, value] of Object.entries(draft)) {
    assert.equal(await page.locator(`#${field}`).inputValue(), value, `${field} kept`);
  }
  await page.locator("#send").click();
  await page.locator("#confirm-send").getByRole("button", { name: "Send", exact: true }).click();
  await page.locator("#compose-result.ok").waitFor();
  const sent = (await api(server).list()).body.items.filter((a) => a.url === url);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].created_by, "Ayşe Yılmaz");
});

test("an editor flags, corrects and retracts an alert; a reader's page follows each step live", async (t) => {
  const reader = await openReader(t);
  const page = await openConsole(t);
  await signIn(page);

  const headline = "Burdur'da deprem: İlk açıklama geldi — ğüşıöç";
  const url = articleUrl("burdur-deprem");
  await compose(page, { headline, summary: "AFAD ilk verileri paylaştı; can kaybı bildirilmedi.", url });
  // The live preview shows exactly this headline, in the notification and the ticker.
  assert.equal(await page.locator("#notif-title").textContent(), `SON DAKİKA: ${headline}`);
  assert.equal(await page.locator("#ticker-headline").textContent(), headline);

  await page.locator("#send").click();
  const dialog = page.locator("#confirm-send");
  await dialog.waitFor({ state: "visible" });
  assert.equal(await dialog.locator("#confirm-send-title").textContent(), "Bu haberi SON DAKİKA olarak gönder?");
  assert.equal(await dialog.locator("#confirm-headline").textContent(), headline);
  const clicked = Date.now();
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/api/v1/alerts") && r.request().method() === "POST"),
    dialog.getByRole("button", { name: "Gönder", exact: true }).click(),
  ]);
  assert.equal(response.status(), 201);
  const id = (await response.json()).id;

  const item = reader.locator(`[data-sondakika-alert="${id}"]`);
  await item.waitFor({ timeout: 30_000 });
  const latency = Date.now() - clicked;
  t.diagnostic(`reader saw the alert ${latency} ms after the confirm click`);
  assert.ok(latency <= 1000, `the reader saw the alert ${latency} ms after the click`);
  assert.ok((await item.textContent()).includes(headline), "headline byte-exact on the reader's page");
  assert.equal((await api(server).show(id)).body.headline, headline, "and stored byte-exact");

  // Correct it inline in the recent list.
  const row = page.locator(`#recent [data-alert-id="${id}"]`);
  await row.getByRole("button", { name: "Düzelt", exact: true }).click();
  const corrected = "Burdur'da 4,2 büyüklüğünde deprem: İlk açıklama geldi";
  await row.getByLabel("Düzeltilmiş başlık").fill(corrected);
  await row.getByRole("button", { name: "Düzeltmeyi yayınla" }).click();
  await reader.locator(`[data-sondakika-alert="${id}"]`, { hasText: corrected }).waitFor({ timeout: 30_000 });
  assert.ok((await item.textContent()).includes(corrected));
  await row.locator(".row-headline", { hasText: corrected }).waitFor();

  // Retract it, with a reason, through the confirmation dialog.
  await row.getByRole("button", { name: "Geri çek", exact: true }).click();
  const retractDialog = page.locator("#confirm-retract");
  await retractDialog.waitFor({ state: "visible" });
  await retractDialog.getByLabel("Gerekçe").fill("Yanlış bilgi");
  await retractDialog.getByRole("button", { name: "Geri çek", exact: true }).click();
  await retractDialog.waitFor({ state: "hidden" });
  await item.waitFor({ state: "detached", timeout: 30_000 });
  const stored = (await api(server).show(id)).body;
  assert.equal(stored.status, "retracted");
  assert.equal(stored.retract_reason, "Yanlış bilgi");
  await page.locator(`#recent [data-alert-id="${id}"][data-status="retracted"]`).waitFor();
});

test("a failed request keeps everything typed, shows the problem by its field, and the retry alerts once", async (t) => {
  const page = await openConsole(t);
  await signIn(page);
  const url = articleUrl("secim");
  const draft = {
    headline: "Seçim sonuçları açıklandı: İl genelinde katılım %84",
    summary: "YSK kesin olmayan sonuçları paylaştı.\nİlçe ilçe sonuçlar haberde.",
    url: url.replace("https://", ""), // a typical paste without the scheme
    image: "https://img.example.com.tr/secim.jpg",
    topics: "gundem, burdur",
  };
  await compose(page, draft);

  // 1. The server refuses the URL (422): the detail appears by the URL field, nothing is lost.
  await sendAndConfirm(page);
  const urlError = page.locator("#url-error");
  await urlError.waitFor({ state: "visible" });
  assert.match(await urlError.textContent(), /not a valid URL/);
  assert.equal(await page.locator("#url").getAttribute("aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement.id), "url", "focus on the field at fault");
  for (const [field, value] of Object.entries(draft)) {
    assert.equal(await page.locator(`#${field}`).inputValue(), value, `${field} kept after the 422`);
  }
  await page.locator("#url").fill(url);
  assert.ok(await urlError.isHidden(), "the error goes once the field is edited");

  // The draft survives a reload of the tab (localStorage), the session too (sessionStorage).
  await page.reload();
  await page.locator("#app").waitFor({ state: "visible" });
  for (const [field, value] of Object.entries({ ...draft, url })) {
    assert.equal(await page.locator(`#${field}`).inputValue(), value, `${field} restored after a reload`);
  }

  // 2. The answer is lost on the way back (the alert was created, the browser sees a network
  //    error): the editor sees the error, her text stays, and the retry does not alert twice.
  const keys = [];
  let answered = false;
  await page.route("**/api/v1/alerts", async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    keys.push(route.request().headers()["idempotency-key"]);
    if (answered) return route.continue();
    answered = true;
    await route.fetch(); // reaches the server...
    await route.abort("connectionreset"); // ...but the answer never arrives
  });
  await sendAndConfirm(page);
  const formError = page.locator("#compose-error");
  await formError.waitFor({ state: "visible" });
  assert.match(await formError.textContent(), /iki kez gönderilmez/);
  for (const [field, value] of Object.entries({ ...draft, url })) {
    assert.equal(await page.locator(`#${field}`).inputValue(), value, `${field} kept after the network error`);
  }
  const stored = JSON.parse(await page.evaluate(() => localStorage.getItem("sondakika.console.draft")));
  assert.equal(stored.headline, draft.headline, "the draft is still saved");

  await sendAndConfirm(page);
  await page.locator("#compose-result.ok").waitFor();
  assert.match(await page.locator("#compose-result").textContent(), /ikinci kez gönderilmedi/);
  assert.equal(keys.length, 2);
  assert.ok(keys[0] && keys[0] === keys[1], "the retry carries the same Idempotency-Key");

  const alerts = (await api(server).list()).body.items.filter((a) => a.url === url);
  assert.equal(alerts.length, 1, "exactly one alert");
  assert.equal(alerts[0].headline, draft.headline);
  assert.equal(alerts[0].summary, draft.summary);
  assert.deepEqual(alerts[0].topics, ["burdur", "gundem"]);
  // Sent: the form is empty again and the draft is gone from storage.
  assert.equal(await page.locator("#headline").inputValue(), "");
  assert.equal(await page.evaluate(() => localStorage.getItem("sondakika.console.draft")), null);

  // 3. Flagging the same article again answers 200: said plainly, nothing sent.
  await page.unroute("**/api/v1/alerts");
  await compose(page, { headline: "Aynı haber, yeni başlık", url });
  await sendAndConfirm(page);
  await page.locator("#compose-result.warn").waitFor();
  assert.match(await page.locator("#compose-result").textContent(), /zaten yayında/);
  assert.equal((await api(server).list()).body.items.filter((a) => a.url === url).length, 1);
  assert.equal(await page.locator("#headline").inputValue(), "Aynı haber, yeni başlık", "text kept for a correction");
});

test("the live figures show tickers reached while a reader's page is open", async (t) => {
  await openReader(t);
  const page = await openConsole(t);
  await signIn(page);
  await compose(page, { headline: "Spor: Burdurspor'dan transfer açıklaması", url: articleUrl("spor") });
  await sendAndConfirm(page);
  await page.locator("#live-card").waitFor({ state: "visible" });
  await until("tickers reached ≥ 1 in the console", async () => Number(await page.locator("#f-tickers").textContent()) >= 1);
  // Web Push is on in the harness: push figures are shown (nobody subscribed: 0 pending).
  await until("push figures", async () => (await page.locator("#f-pending").textContent()) === "0");
  assert.match(await page.locator("#push-note").textContent(), /0 abone hedeflendi/);
  assert.ok((await page.locator("#chart polyline.sent").count()) === 1, "the delivery chart is drawn");
});

test("with Web Push off on the server, the live panel says so and shows the tickers only", async (t) => {
  // `undefined` leaves the harness's VAPID subject out of the server's environment.
  const off = await startServer({ push: false });
  t.after(() => off.stop());
  const page = await openConsole(t, { on: off });
  await signIn(page, off.token);
  await compose(page, { headline: "Elektrik kesintisi: İlçe merkezinde çalışma sürüyor", url: articleUrl("elektrik") });
  await sendAndConfirm(page);
  await page.locator("#live-card").waitFor({ state: "visible" });
  await until("the push-off note", async () => /Web Push bu sunucuda kapalı/.test(await page.locator("#push-note").textContent()));
  assert.equal(await page.locator("#f-sent").textContent(), "–");
  assert.equal(await page.locator("#f-pending").textContent(), "–");
});

test("composing: counters count characters, the push-size meter follows payload.rs, the preview is live", async (t) => {
  const page = await openConsole(t, { viewport: { width: 390, height: 844 } });
  await signIn(page);
  // Keyboard only: the fields come in reading order.
  await page.keyboard.type("İ".repeat(45));
  assert.equal(await page.locator("#headline-count").textContent(), "45 / 200", "İ is one character (two bytes)");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "summary");
  await page.keyboard.insertText("ğüşıöç ".repeat(70)); // 490 characters
  assert.equal(await page.locator("#summary-count").textContent(), "490 / 500");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "url");
  await page.keyboard.insertText(`https://www.example.com.tr/haber/${"uzun-adres-".repeat(80)}`);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "image");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "topics");

  // 45·2 + 490·~1.9 bytes of text and a 900-character link do not fit 2048 bytes.
  const note = await page.locator("#size-note").textContent();
  const m = note.match(/özet bildirimde (\d+) karaktere kısaltılacak/);
  assert.ok(m, note);
  const body = await page.locator("#notif-body").textContent();
  assert.ok(body.endsWith("…"), "the preview shows the shortened summary");
  assert.equal(Array.from(body).length, Number(m[1]));
  // The delivered payload, rebuilt here the way payload.rs does, is within the limit.
  const title = await page.locator("#notif-title").textContent();
  const url = await page.locator("#url").inputValue();
  const payload = JSON.stringify({
    web_push: 8030,
    notification: { title, body, navigate: url, lang: "tr", tag: `sondakika-${"0".repeat(36)}`, timestamp: Date.now(), data: { kind: "alert", id: "0".repeat(36), seq: 1, label: "SON DAKİKA", topics: [], receipt: "0".repeat(42) } },
  });
  const size = Buffer.byteLength(payload);
  assert.ok(size <= 2048 && size > 2000, `delivered payload ${size} bytes`);
  assert.equal(await page.locator("#ticker-headline").textContent(), "İ".repeat(45));

  // Enter opens the confirmation; Esc closes it and nothing is sent.
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "summary");
  await page.locator("#headline").focus();
  await page.keyboard.press("Enter");
  await page.locator("#confirm-send").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => document.activeElement.id), "confirm-send-button");
  await page.keyboard.press("Escape");
  await page.locator("#confirm-send").waitFor({ state: "hidden" });
  // The dialog's own focus restoration runs first; the console then puts focus on Send.
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "send", null, { timeout: 30_000 });
  assert.equal((await api(server).list()).body.items.filter((a) => a.url === url).length, 0);

  // Nothing sticks out sideways on a phone.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `page is ${overflow}px wider than the phone`);
});

/**
 * Subscribes `count` readers on a push double through the public API, as the site's script
 * does, a few at a time.
 */
async function subscribeMany(on, pushService, count) {
  let next = 0;
  const one = async () => {
    while (next < count) {
      const id = ++next;
      const r = await fetch(`${on.url}/api/v1/push/subscriptions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ subscription: pushService.subscription(id), topics: [], locale: "tr" }),
      });
      assert.equal(r.status, 201, await r.text());
    }
  };
  await Promise.all(Array.from({ length: 16 }, one));
}

/** The pushes of one alert of a given kind the double decrypted, by subscriber. */
function pushesOf(pushService, alertId, kind) {
  return pushService.received.filter((r) => r.payload.notification.data.id === alertId && r.payload.notification.data.kind === kind);
}

/** Records every state each push step's line of the live panel goes through. */
async function recordStepStates(page) {
  await page.evaluate(() => {
    window.stepStates = {};
    const note = () => {
      for (const li of document.querySelectorAll("#steps > li")) {
        const seen = (window.stepStates[li.dataset.step] ??= []);
        if (seen[seen.length - 1] !== li.dataset.state) seen.push(li.dataset.state);
      }
    };
    new MutationObserver(note).observe(document.getElementById("steps"), { childList: true, subtree: true, attributes: true });
    note();
  });
}

test("a correction replaces the notification quietly by default, alerts again or goes to tickers only by choice; every push step's progress shows live", async (t) => {
  const COUNT = 1050; // enough for digit grouping: 1.050 in Turkish, 1,050 in English
  const pushService = await startPushDouble();
  const on = await startServer({ ...PUSH_DOUBLE_ENV, SONDAKIKA_PUBLIC_SUBSCRIBE_RATE_PER_MINUTE: "100000" });
  t.after(async () => {
    await on.stop();
    await pushService.close();
  });
  await subscribeMany(on, pushService, COUNT);

  const page = await openConsole(t, { on, viewport: { width: 1280, height: 1000 } });
  await signIn(page, on.token);
  await recordStepStates(page);
  await compose(page, { headline: "Burdur'da deprem: ilk bilgiler", summary: "AFAD verileri paylaştı.", url: articleUrl("duzeltme") });
  const [created] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/api/v1/alerts") && r.request().method() === "POST"),
    sendAndConfirm(page),
  ]);
  const id = (await created.json()).id;

  // The original's step, live in the panel: Turkish digit grouping, its state and its times.
  const steps = page.locator("#steps");
  const step = (n) => steps.locator(`li[data-step="${n}"]`);
  const done = (n) => steps.locator(`li[data-step="${n}"][data-state="done"]`).waitFor({ timeout: 30_000 });
  await step(0).locator(".step-reach", { hasText: "uyarı 1.050 cihaza ulaştı" }).waitFor({ timeout: 60_000 });
  await done(0);
  assert.equal(await step(0).getAttribute("data-kind"), "alert");
  assert.match(await step(0).locator(".step-speed").textContent(), /^%50 · %95 · %100: \d[\d.,]* (ms|sn) · \d[\d.,]* (ms|sn) · \d[\d.,]* (ms|sn)$/);
  assert.equal(pushesOf(pushService, id, "alert").length, COUNT);

  // 1. Correct, choosing "alert again": the PATCH says so, every device gets a renotifying push.
  const row = page.locator(`#recent [data-alert-id="${id}"]`);
  const correct = async (headline, choice) => {
    await row.getByRole("button", { name: "Düzelt", exact: true }).click();
    const choices = row.getByRole("group", { name: "Okurların cihazlarındaki bildirim" });
    assert.ok(await choices.getByLabel("Sessizce değiştir (ses ve titreşim yok)").isChecked(), "quiet is the default");
    if (choice) await choices.getByLabel(choice).check();
    await row.getByLabel("Düzeltilmiş başlık").fill(headline);
    const [patch] = await Promise.all([
      page.waitForRequest((r) => r.url().endsWith(`/api/v1/alerts/${id}`) && r.method() === "PATCH"),
      row.getByRole("button", { name: "Düzeltmeyi yayınla" }).click(),
    ]);
    await row.locator(".row-headline", { hasText: headline }).waitFor();
    return JSON.parse(patch.postData());
  };
  const first = await correct("Burdur'da 4,2 büyüklüğünde deprem", "Yeniden uyar (sesli, titreşimli)");
  assert.deepEqual(first, { headline: "Burdur'da 4,2 büyüklüğünde deprem", push: "renotify" });
  assert.match(await page.locator("#recent-status").textContent(), /yeniden uyarılıyor/);
  await step(1).locator(".step-reach", { hasText: "düzeltme 1.050 cihaza ulaştı" }).waitFor({ timeout: 60_000 });
  await done(1);
  assert.equal(await step(1).getAttribute("data-kind"), "correction");
  assert.match(await step(1).locator(".step-head").textContent(), /yeniden uyarır/);
  const renotified = pushesOf(pushService, id, "correction");
  assert.equal(renotified.length, COUNT);
  assert.ok(renotified.every((r) => r.payload.notification.data.renotify === true && !r.payload.notification.silent));
  assert.ok(renotified.every((r) => r.payload.notification.title === "SON DAKİKA: Burdur'da 4,2 büyüklüğünde deprem"));

  // 2. Correct again with the default: a quiet replacement.
  const second = await correct("Burdur'da 4,2 büyüklüğünde deprem: hasar yok", null);
  assert.equal(second.push, "quiet");
  await step(2).locator(".step-reach", { hasText: "düzeltme 1.050 cihaza ulaştı" }).waitFor({ timeout: 60_000 });
  await done(2);
  assert.match(await step(2).locator(".step-head").textContent(), /sessiz/);
  const quiet = pushesOf(pushService, id, "correction").slice(COUNT);
  assert.equal(quiet.length, COUNT);
  assert.ok(quiet.every((r) => r.payload.notification.data.renotify === false && r.payload.notification.silent === true));

  // 3. Tickers only: no step, no push.
  const third = await correct("Burdur'da 4,2 büyüklüğünde deprem: hasar yok, okullar tatil", "Yalnızca şeritler (bildirimlere dokunma)");
  assert.equal(third.push, "none");
  const before = pushService.received.length;
  await page.waitForTimeout(4000); // longer than the coalescing window (2 s)
  assert.equal(pushService.received.length, before, "no push for a tickers-only correction");
  assert.equal(await steps.locator("li").count(), 3);

  // 4. Retract: its step follows every device that was sent the alert.
  await row.getByRole("button", { name: "Geri çek", exact: true }).click();
  await page.locator("#confirm-retract").getByRole("button", { name: "Geri çek", exact: true }).click();
  await step(3).locator(".step-reach", { hasText: "geri çekme 1.050 cihaza ulaştı" }).waitFor({ timeout: 60_000 });
  await done(3);
  assert.equal(pushesOf(pushService, id, "retraction").length, COUNT);

  // Each step was shown while it was still under way, not only once it was over.
  const seen = await page.evaluate(() => window.stepStates);
  t.diagnostic(`states seen: ${JSON.stringify(seen)}`);
  for (const n of ["1", "2", "3"]) {
    assert.ok(seen[n].length >= 2 && seen[n].at(-1) === "done", `step ${n} went through ${seen[n]}`);
  }
  assert.ok(seen["1"].includes("waiting"), "a correction waits for others to join it, and the panel says so");

  // In English: "correction reached 1,050 devices".
  await page.getByRole("button", { name: "EN", exact: true }).click();
  assert.equal(await step(1).locator(".step-reach").textContent(), "correction reached 1,050 devices");
  assert.equal(await step(3).locator(".step-reach").textContent(), "retraction reached 1,050 devices");
  assert.match(await step(3).locator(".step-speed").textContent(), /^50 · 95 · 100 %: \d[\d.,]* (ms|s) · /);
  await page.screenshot({ path: screenshotPath("console-steps.png"), fullPage: true });
});

test("screenshot: the console after sending, live figures visible (docs/screenshots/console.png)", async (t) => {
  // A newsroom morning: a few earlier alerts, one corrected and one retracted.
  const a = api(server);
  const early = await a.flag({ headline: "Göl'de su seviyesi yükseldi, DSİ uyardı", url: articleUrl("gol"), topics: ["burdur"] });
  await a.correct(early.body.id, { summary: "Kıyıdaki işletmelere tahliye uyarısı yapıldı." });
  const wrong = await a.flag({ headline: "Ankara'da toplu taşımaya zam", url: articleUrl("zam"), topics: ["gundem"] });
  await a.retract(wrong.body.id);

  await openReader(t);
  const page = await openConsole(t);
  await signIn(page);
  await compose(page, {
    headline: "Burdur'da 4,2 büyüklüğünde deprem: İlk açıklama geldi",
    summary: "AFAD ilk verileri paylaştı; can kaybı ya da yaralı bildirilmedi. Vali açıklama yapacak.",
    url: articleUrl("burdur-deprem"),
    topics: "burdur, gundem",
  });
  await sendAndConfirm(page);
  await page.locator("#live-card").waitFor({ state: "visible" });
  await until("tickers reached ≥ 1", async () => Number(await page.locator("#f-tickers").textContent()) >= 1);
  await until("a few seconds of chart", async () => (await page.locator("#chart polyline.sent").getAttribute("points"))?.split(" ").length >= 4);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: screenshotPath("console.png") });
});
