/* sondakika service worker: shows breaking-news push notifications, and keeps them true.
 *
 * The sondakika server serves this file at /sw.js with `self.SONDAKIKA_CONFIG = {server,
 * receiptSampleRate}` in front of it. A news site on another origin needs a worker on its own
 * origin: its /sw.js is the one line `importScripts("https://<sondakika server>/sw.js");`, which
 * brings that configuration along. (Without it, the server the reader subscribed with, which
 * the embed script remembers in IndexedDB, or `?server=` on the worker's URL is used.)
 *
 * One alert's life reaches a device as up to three kinds of push (`data.kind`), all with the
 * alert's tag `sondakika-<alert id>`:
 *
 * - `alert`: shown as a notification.
 * - `correction`: replaces that notification with the corrected text (same tag). Quiet by default
 *   (`silent`, no `renotify`: no second sound or vibration where the platform honours them);
 *   `data.renotify` when the editor chose to alert again.
 * - `retraction`: takes the notification away. Where the platform lets a push show nothing, the
 *   notification is closed; where it requires one, the quiet withdrawn notice the payload carries
 *   replaces it (same tag), so the wrong headline is gone either way.
 *
 * Push services may deliver an alert's pushes out of order (and a push that was in flight when a
 * correction was published may arrive twice), so every push carries `data.revision`: a push no
 * newer than what this device already showed for that alert (or any push after its retraction)
 * never brings an older headline back. What was shown last is remembered per alert in IndexedDB,
 * since the notification itself may have been dismissed.
 *
 * What each platform requires of a push (why `mustShow` and `keepOnScreen` exist):
 *
 * - Chrome and Edge (userVisibleOnly): when a push event ends and none of the site's
 *   notifications is on screen (and none of its pages is visible), Chrome spends some of the
 *   site's small "silent push" budget, and once that is spent shows its own notification, "This
 *   site has been updated in the background".
 * - Firefox: every push that ends with none of the site's notifications on screen costs one of a
 *   small quota (it grows with the reader's visits to the site); at zero, Firefox drops the
 *   subscription and the reader silently stops getting alerts.
 * - Safari (macOS 13+, iOS/iPadOS 16.4+ Home Screen apps): every push must show a notification,
 *   or Safari revokes the subscription. Our payload is also Declarative Web Push (`web_push: 8030`,
 *   `mutable: true`): Safari 18.4+ gives this worker the push with the notification it proposes
 *   (`event.notification`) and shows that one itself unless the worker shows another. iOS does not
 *   implement `tag`, so a replaced notification is closed by hand (by alert id).
 *
 * So: a notification of ours stays on screen after every push, unless another of ours already is
 * (Chrome and Firefox then ask for nothing more), and on Safari every push shows one.
 */
// In a function: a site that imports this next to its own worker code keeps its globals.
(function () {
  "use strict";

  var CONFIG = self.SONDAKIKA_CONFIG || {};
  var FALLBACK_TITLE = "SON DAKİKA";
  var TAG_PREFIX = "sondakika-";
  /** How long what was shown for an alert is remembered: the longest an alert's pushes live (its
   * TTL is at most 28 days), after which no push of it can arrive any more. */
  var REMEMBER_MS = 28 * 24 * 3600 * 1000;
  var UA = (self.navigator && self.navigator.userAgent) || "";
  /** Safari and every iOS browser: WebKit, without Chromium's engine. */
  var WEBKIT = /AppleWebKit/.test(UA) && !/Chrome|Chromium|Edg|OPR|Android/.test(UA);

  function idb(mode, fn) {
    return new Promise(function (resolve, reject) {
      var open = indexedDB.open("sondakika", 1);
      open.onupgradeneeded = function () { open.result.createObjectStore("kv"); };
      open.onerror = function () { reject(open.error); };
      open.onsuccess = function () {
        var db = open.result;
        var tx = db.transaction("kv", mode);
        var req = fn(tx.objectStore("kv"));
        tx.oncomplete = function () { db.close(); resolve(req && req.result); };
        tx.onerror = tx.onabort = function () { db.close(); reject(tx.error); };
      };
    });
  }

  /** What the page stored when the reader subscribed: {server, topics, locale, endpoint}. */
  function reader() {
    return idb("readonly", function (s) { return s.get("reader"); }).then(function (r) { return r || {}; }, function () { return {}; });
  }

  function serverFrom(r) {
    var s = CONFIG.server || r.server || new URL(self.location.href).searchParams.get("server") || self.location.origin;
    return String(s).replace(/\/+$/, "");
  }

  function server() {
    if (CONFIG.server) return Promise.resolve(serverFrom({}));
    return reader().then(serverFrom);
  }

  function sampled() {
    var rate = typeof CONFIG.receiptSampleRate === "number" ? CONFIG.receiptSampleRate : 1;
    return Math.random() < rate;
  }

  var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  /** A push's receipt as the server wrote it: `<subscription id>.<token>`. */
  var RECEIPT = /^[0-9]{1,19}\.[A-Za-z0-9_-]{22}$/;
  /** How often a receipt that beat the server's delivery log is sent again. */
  var RECEIPT_RETRIES = 3;

  /**
   * Tells the server a notification was shown or clicked (never fails the event). The receipt
   * token the push carried ties it to that push: it counts once per event, only for a push the
   * server sent. The server logs its pushes in batches, so a fast browser can report one before
   * it is logged: the answer is then 409 with Retry-After, and the worker tries again. A
   * withdrawn notice is not the alert: it reports nothing.
   */
  function receipt(data, event) {
    if (!data || data.kind === "retraction" || !data.alertId || !UUID.test(data.alertId) || !RECEIPT.test(data.receipt || "") || !sampled()) {
      return Promise.resolve();
    }
    var body = JSON.stringify({ alert_id: data.alertId, event: event, receipt: data.receipt });
    function send(base, triesLeft) {
      return fetch(base + "/api/v1/push/receipts", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: body,
        credentials: "omit",
        keepalive: true
      }).then(function (res) {
        var wait = Number(res.headers.get("Retry-After"));
        if (res.status !== 409 || !(wait > 0) || triesLeft <= 0) return;
        return new Promise(function (r) { setTimeout(r, Math.min(wait, 10) * 1000); }).then(function () {
          return send(base, triesLeft - 1);
        });
      });
    }
    return server().then(function (base) { return send(base, RECEIPT_RETRIES); })
      .catch(function () { /* offline: the figure is a sample anyway */ });
  }

  function text(v, max) {
    if (typeof v !== "string") return "";
    return v.length > max ? v.slice(0, max - 1) + "…" : v;
  }

  function httpUrl(u) {
    try {
      var url = new URL(u, self.location.href);
      return /^https?:$/.test(url.protocol) ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  var KINDS = { alert: "alert", correction: "correction", retraction: "retraction", update: "correction" };

  /** Turns any push payload into {title, options, kind, revision}. */
  function parse(data) {
    var raw = null, json = null;
    if (data) {
      try { raw = data.text(); } catch (e) { raw = null; }
      try { json = JSON.parse(raw); } catch (e) { json = null; }
    }
    // sondakika's own payload: Declarative Web Push (RFC 8030 magic number).
    var n = json && typeof json === "object" ? (json.web_push === 8030 && json.notification) || json.notification || json : null;
    if (!n || typeof n !== "object") {
      return { title: FALLBACK_TITLE, options: { body: text(raw || "", 300), data: {} }, kind: "alert", revision: 0 };
    }
    var d = n.data && typeof n.data === "object" ? n.data : {};
    var kind = KINDS[d.kind] || "alert";
    var revision = typeof d.revision === "number" && d.revision >= 0 ? Math.floor(d.revision) : 0;
    var options = {
      body: text(n.body || n.message || "", 500),
      lang: typeof n.lang === "string" ? n.lang : "tr",
      dir: "auto",
      data: {
        url: httpUrl(n.navigate || n.url || d.url),
        alertId: typeof d.id === "string" ? d.id : null,
        receipt: typeof d.receipt === "string" ? d.receipt : null,
        kind: kind,
        revision: revision,
        seq: d.seq || null
      }
    };
    // Declarative Web Push: a notification a worker shows in place of the proposed one must say
    // where a click goes (Safari refuses it otherwise); other browsers ignore the member.
    if (options.data.url) options.navigate = options.data.url;
    if (typeof n.tag === "string" && n.tag) {
      options.tag = n.tag;
      // Alert again only when the editor asked for it (`renotify` needs a tag).
      options.renotify = kind === "correction" && d.renotify === true;
    } else if (options.data.alertId) {
      options.tag = TAG_PREFIX + options.data.alertId;
    }
    // A quiet correction and a retraction: no sound or vibration (Chrome, Edge, Safari 16.6+).
    if (n.silent === true && !options.renotify) options.silent = true;
    var image = httpUrl(n.image);
    if (image && kind !== "retraction") options.image = image;
    if (typeof n.timestamp === "number") options.timestamp = n.timestamp;
    return { title: text(n.title, 200) || FALLBACK_TITLE, options: options, kind: kind, revision: revision };
  }

  /* ---------- what this device last showed for an alert ---------- */

  var KEY_PREFIX = "shown:";

  /** {revision, kind, title, options, at} of an alert's tag, or null. */
  function recall(tag) {
    if (!tag) return Promise.resolve(null);
    return idb("readonly", function (s) { return s.get(KEY_PREFIX + tag); })
      .then(function (v) { return v || null; }, function () { return null; });
  }

  /** Remembers what was shown (or closed) for an alert; forgets alerts past any push's life. */
  function remember(tag, entry) {
    if (!tag) return Promise.resolve();
    entry.at = Date.now();
    return idb("readwrite", function (s) {
      s.put(entry, KEY_PREFIX + tag);
      var cutoff = Date.now() - REMEMBER_MS;
      var cursor = s.openCursor(IDBKeyRange.bound(KEY_PREFIX, KEY_PREFIX + "\uffff"));
      cursor.onsuccess = function () {
        var c = cursor.result;
        if (!c) return;
        if (!c.value || !(c.value.at > cutoff)) c["delete"]();
        c["continue"]();
      };
      return null;
    }).catch(function () { /* private mode: the shown notification's own data still guards */ });
  }

  /** Whether `push` is no newer than `known` ({kind, revision}): then it changes nothing. */
  function stale(push, known) {
    if (!known) return false;
    if (known.kind === "retraction") return true; // nothing comes after a retraction
    if (push.kind === "retraction") return false;
    return push.revision <= known.revision;
  }

  /** The newer of two {kind, revision}. */
  function newest(a, b) {
    if (!a) return b;
    if (!b) return a;
    return stale(b, a) ? a : b;
  }

  function belongs(notification, tag, alertId) {
    var d = notification.data || {};
    return (tag && notification.tag === tag) || (alertId && d.alertId === alertId);
  }

  function quiet(options) {
    var o = {};
    for (var k in options) o[k] = options[k];
    o.silent = true;
    o.renotify = false;
    return o;
  }

  function show(title, options) {
    return self.registration.showNotification(title, options).catch(function () {
      // Something in the options was refused (an image URL, …): show it plainly rather than not at all.
      var plain = { body: options.body, tag: options.tag, silent: options.silent, data: options.data };
      if (options.navigate) plain.navigate = options.navigate;
      return self.registration.showNotification(title, plain);
    });
  }

  /** The options of a notification on screen, to show it again unchanged. */
  function optionsOf(n) {
    var o = { body: n.body, lang: n.lang, dir: n.dir, tag: n.tag, data: n.data, icon: n.icon, badge: n.badge };
    if (n.navigate || (n.data && n.data.url)) o.navigate = n.navigate || n.data.url;
    if (n.image) o.image = n.image;
    if (n.timestamp) o.timestamp = n.timestamp;
    return o;
  }

  /**
   * A push that changes nothing. Chrome and Firefox are content while any notification of ours
   * is on screen; Safari wants one shown by every push, so the current one is shown again, quietly
   * and unchanged (with the declarative payload, not doing so would show the stale one it
   * carries). With nothing of ours on screen, the alert's current version is shown quietly: never
   * the stale headline.
   */
  function keepOnScreen(push, all, known, mustShow) {
    var tag = push.options.tag;
    var mine = all.filter(function (n) { return belongs(n, tag, push.options.data.alertId); });
    if (all.length && !mustShow) return Promise.resolve();
    if (mine.length) return show(mine[0].title, quiet(optionsOf(mine[0])));
    if (known && known.title) return show(known.title, quiet(known.options));
    return Promise.resolve();
  }

  /** Closes this alert's notifications that a new one with `tag` will not replace by itself
   * (iOS ignores tags), so that an alert never shows twice. */
  function closeUntagged(all, tag, alertId) {
    all.forEach(function (n) {
      if (belongs(n, tag, alertId) && n.tag !== tag) n.close();
    });
  }

  /**
   * A retraction: the notification is closed where the platform lets a push end with nothing new
   * on screen (another notification of ours is still there); otherwise the withdrawn notice
   * replaces it, quietly. Returns what is on screen for the alert afterwards.
   */
  function retract(push, all, mustShow) {
    var tag = push.options.tag, alertId = push.options.data.alertId;
    var mine = all.filter(function (n) { return belongs(n, tag, alertId); });
    var others = all.length - mine.length;
    if (!mustShow && others > 0) {
      mine.forEach(function (n) { n.close(); });
      return Promise.resolve({ closed: true });
    }
    closeUntagged(all, tag, alertId);
    return show(push.title, quiet(push.options)).then(function () { return { closed: false }; });
  }

  /**
   * Pushes are handled one at a time, whichever alert they belong to. Every decision reads what
   * is on screen: a correction and a retraction of one alert arriving together must not both
   * read it before either wrote it, and neither may retractions of two alerts (each would see
   * the other's notification as "another of ours", both would close, and nothing of ours would
   * be left on screen). And in Chromium (headless 148), two pushes handled side by side
   * sometimes leave a notification that getNotifications() no longer returns, which a later
   * retraction then could not close.
   */
  var queue = Promise.resolve();
  function serially(fn) {
    var run = queue.then(fn, fn);
    queue = run.catch(function () {});
    return run;
  }

  function handle(push, mustShow) {
    var tag = push.options.tag;
    var alertId = push.options.data.alertId;
    return Promise.all([server(), recall(tag), self.registration.getNotifications()]).then(function (r) {
      var base = r[0], stored = r[1], all = r[2] || [];
      push.options.icon = base + "/assets/icon-192.png";
      push.options.badge = base + "/assets/badge-96.png";
      // What this device knows of the alert: remembered, or on screen (if the store failed).
      var onScreen = null;
      all.forEach(function (n) {
        var d = n.data || {};
        if (belongs(n, tag, alertId)) onScreen = newest(onScreen, { kind: d.kind || "alert", revision: d.revision || 0 });
      });
      var known = newest(stored, onScreen);
      if (stale(push, known)) return keepOnScreen(push, all, stored, mustShow);
      if (push.kind === "retraction") {
        return retract(push, all, mustShow).then(function () {
          return remember(tag, { kind: "retraction", revision: push.revision, title: push.title, options: quiet(push.options) });
        });
      }
      closeUntagged(all, tag, alertId);
      return show(push.title, push.options).then(function () {
        var entry = { kind: push.kind, revision: push.revision, title: push.title, options: quiet(push.options) };
        return Promise.all([remember(tag, entry), receipt(push.options.data, "shown")]);
      });
    });
  }

  self.addEventListener("install", function () {
    self.skipWaiting();
  });

  self.addEventListener("activate", function (event) {
    event.waitUntil(self.clients.claim());
  });

  self.addEventListener("push", function (event) {
    var push = parse(event.data);
    // Safari's declarative path proposes a notification of its own and shows it unless we show
    // one; Safari without it revokes a subscription whose pushes show nothing.
    var mustShow = !!event.notification || WEBKIT;
    event.waitUntil(
      serially(function () { return handle(push, mustShow); }).catch(function () {
        // Whatever failed, the reader gets the push's own notification rather than none (and
        // Chrome's "updated in the background" in its place).
        return show(push.title, push.options);
      })
    );
  });

  self.addEventListener("notificationclick", function (event) {
    var notification = event.notification;
    var data = notification.data || {};
    notification.close();
    var url = data.url;
    event.waitUntil(
      Promise.all([
        receipt(data, "clicked"),
        self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
          var strip = function (u) { return String(u).split("#")[0]; };
          for (var i = 0; i < windows.length; i++) {
            if (url && strip(windows[i].url) === strip(url) && "focus" in windows[i]) return windows[i].focus();
          }
          if (url && self.clients.openWindow) return self.clients.openWindow(url);
          return null;
        })
      ])
    );
  });

  /* The push service replaced the subscription (expiry, key rotation): subscribe again and tell
   * the server, which drops the old endpoint. */
  self.addEventListener("pushsubscriptionchange", function (event) {
    var old = event.oldSubscription || null;
    event.waitUntil(
      reader().then(function (r) {
        var base = serverFrom(r);
        var fresh = event.newSubscription
          ? Promise.resolve(event.newSubscription)
          : fetch(base + "/api/v1/push/vapid-public-key", { credentials: "omit" })
              .then(function (res) { return res.ok ? res.json() : {}; })
              .then(function (b) { return b.publicKey; }, function () { return null; })
              .then(function (key) {
                key = key || (old && old.options && old.options.applicationServerKey);
                if (!key) throw new Error("no application server key");
                if (typeof key === "string") key = b64urlBytes(key);
                return self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
              });
        return fresh.then(function (sub) {
          var replaces = (old && old.endpoint) || r.endpoint || null;
          var body = { subscription: sub.toJSON(), topics: r.topics || [], locale: r.locale === "en" ? "en" : "tr" };
          if (replaces && replaces !== sub.endpoint) body.replaces = replaces;
          return fetch(base + "/api/v1/push/subscriptions", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify(body),
            credentials: "omit"
          }).then(function (res) {
            if (!res.ok) return;
            r.endpoint = sub.endpoint;
            return idb("readwrite", function (s) { return s.put(r, "reader"); });
          });
        });
      }).catch(function () { /* the page re-subscribes on the reader's next visit */ })
    );
  });

  function b64urlBytes(s) {
    var b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    var out = new Uint8Array(b.length);
    for (var i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
    return out;
  }
})();
