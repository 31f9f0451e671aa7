// Feeds in the console, in a real browser against a real server polling a real feed server: a
// suggest-mode feed's new item reaches the console through its live drafts stream, also in a
// background tab (whose title counts it), and is sent with one click; admins see the feed and
// its last poll.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { join } from "node:path";
import { startServer, launchBrowser, repo } from "./harness.mjs";

const bin = process.env.SONDAKIKA_BIN || join(repo, "target", "debug", "sondakika");

let server;
let browser;
let feedServer;
let feedBody = rss("");

function rss(items) {
  return `<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Burdur Haber</title>
<link>https://www.example.com.tr/</link><description>Son dakika</description>${items}</channel></rss>`;
}

before(async () => {
  feedServer = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "application/rss+xml; charset=utf-8" });
    res.end(feedBody);
  });
  await new Promise((r) => feedServer.listen(0, "127.0.0.1", r));
  [server, browser] = await Promise.all([
    startServer({ push: false, SONDAKIKA_OUTBOUND_PRIVATE_HOSTS: "127.0.0.1", SONDAKIKA_FEED_MIN_INTERVAL_SECS: "1" }),
    launchBrowser(),
  ]);
});

after(async () => {
  await browser?.close();
  await server?.stop();
  feedServer?.close();
});

function adminToken() {
  return spawnSync(bin, ["token", "create", "--name", "Yönetici", "--role", "admin"], { env: server.env, encoding: "utf8" }).stdout.trim();
}

async function call(token, method, path, body) {
  const r = await fetch(`${server.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

async function until(what, check, ms = 20_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("a suggest feed's new item appears in the console as a draft and is sent with one click", async (t) => {
  const admin = adminToken();
  const { port } = feedServer.address();
  const created = await call(admin, "POST", "/api/v1/feeds", {
    url: `http://127.0.0.1:${port}/category/son-dakika/feed/`,
    name: "Son dakika kategorisi",
    interval_secs: 1,
    topics: ["burdur"],
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const feedId = created.body.id;
  await until("the first poll", async () => (await call(admin, "GET", `/api/v1/feeds/${feedId}`)).body.last_success_at);

  const context = await browser.newContext({ locale: "tr-TR", viewport: { width: 1280, height: 900 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${server.url}/console`);
  await page.locator("#token").fill(server.token);
  await page.locator("#token").press("Enter");
  await page.locator("#app").waitFor({ state: "visible" });
  await page.locator("#drafts-empty").waitFor({ state: "visible" });
  assert.equal(await page.locator("#feeds-card").isHidden(), true, "an editor does not see the feeds section");
  await page.locator("#drafts-live").waitFor({ state: "visible" });
  // From here on the drafts come through the stream: the console no longer asks for the list.
  let listRequests = 0;
  page.on("request", (r) => { if (new URL(r.url()).pathname === "/api/v1/feeds/drafts") listRequests += 1; });
  // The editor goes to another tab (their CMS).
  const title = await page.title();
  const setHidden = (hidden) => page.evaluate((h) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => h });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
  await setHidden(true);

  // The CMS publishes; nobody touches the console.
  const headline = "SON DAKİKA: Burdur Gölü'nde su seviyesi 1,5 metre yükseldi";
  feedBody = rss(`<item><title><![CDATA[${headline}]]></title>
<link>https://www.example.com.tr/haber/burdur-golu</link><guid isPermaLink="false">https://www.example.com.tr/?p=777</guid>
<description><![CDATA[<p>DSİ&#8217;nin ölçümlerine göre <b>yükseliş</b> sürüyor.</p>]]></description>
<pubDate>${new Date().toUTCString()}</pubDate></item>`);
  const draft = page.locator("[data-draft-id]").filter({ hasText: headline });
  await draft.waitFor({ state: "attached", timeout: 30_000 });
  assert.equal(await page.title(), `(1) ${title}`, "the background tab's title counts the new draft");
  assert.equal(listRequests, 0, "the draft came through the stream, not by asking for the list");
  await setHidden(false);
  assert.equal(await page.title(), title, "back on the tab, the count is read");
  assert.match(await draft.getAttribute("class"), /\bnew\b/, "a new draft is highlighted");
  assert.match(await draft.textContent(), /DSİ’nin ölçümlerine göre yükseliş sürüyor\./);
  assert.match(await page.locator("#drafts-announce").textContent(), /Yeni taslak/);

  await draft.getByRole("button", { name: "Gönder", exact: true }).click();
  await page.locator("#drafts-result").filter({ hasText: "Gönderildi" }).waitFor();
  const alerts = await call(server.token, "GET", "/api/v1/alerts?limit=5");
  const alert = alerts.body.items.find((a) => a.article_id === "https://www.example.com.tr/?p=777");
  assert.ok(alert, "the alert was flagged");
  assert.equal(alert.headline, headline);
  assert.deepEqual(alert.topics, ["burdur"]);
  assert.equal(alert.created_by, "Ayşe Yılmaz");
  await page.locator("[data-draft-id]").first().waitFor({ state: "detached" });
  assert.deepEqual(errors, []);

  // An admin sees the feed and its last poll.
  const adminPage = await context.newPage();
  await adminPage.goto(`${server.url}/console`);
  await adminPage.evaluate((tok) => sessionStorage.setItem("sondakika.console.token", tok), admin);
  await adminPage.reload();
  const row = adminPage.locator(`[data-feed-id="${feedId}"]`);
  await row.waitFor({ state: "visible", timeout: 30_000 });
  assert.match(await row.textContent(), /Son dakika kategorisi/);
  assert.match(await row.locator('[data-role="outcome"]').textContent(), /son başarı/);
});
