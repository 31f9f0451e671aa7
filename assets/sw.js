/* sondakika service worker: shows breaking-news push notifications.
 *
 * The sondakika server serves this file at /sw.js with `self.SONDAKIKA_CONFIG = {server,
 * receiptSampleRate}` in front of it. A news site on another origin needs a worker on its own
 * origin: its /sw.js is the one line `importScripts("https://<sondakika server>/sw.js");`, which
 * brings that configuration along. (Without it, the server the reader subscribed with, which
 * the embed script remembers in IndexedDB, or `?server=` on the worker's URL is used.)
 *
 * Every push shows a notification: browsers (Safari first) revoke the subscriptions of sites
 * whose pushes show nothing.
 */
// In a function: a site that imports this next to its own worker code keeps its globals.
(function () {
  "use strict";

  var CONFIG = self.SONDAKIKA_CONFIG || {};
  var FALLBACK_TITLE = "SON DAKİKA";

  function idb(mode, fn) {
    return new Promise(function (resolve, reject) {
      var open = indexedDB.open("sondakika", 1);
      open.onupgradeneeded = function () { open.result.createObjectStore("kv"); };
      open.onerror = function () { reject(open.error); };
      open.onsuccess = function () {
        var db = open.result;
        var tx = db.transaction("kv", mode);
        var req = fn(tx.objectStore("kv"));
        tx.oncomplete = function () { db.close(); resolve(req.result); };
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
   * it is logged: the answer is then 409 with Retry-After, and the worker tries again.
   */
  function receipt(data, event) {
    if (!data || !data.alertId || !UUID.test(data.alertId) || !RECEIPT.test(data.receipt || "") || !sampled()) {
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

  /** Turns any push payload into {title, options}. */
  function parse(data) {
    var raw = null, json = null;
    if (data) {
      try { raw = data.text(); } catch (e) { raw = null; }
      try { json = JSON.parse(raw); } catch (e) { json = null; }
    }
    // sondakika's own payload: Declarative Web Push (RFC 8030 magic number).
    var n = json && typeof json === "object" ? (json.web_push === 8030 && json.notification) || json.notification || json : null;
    if (!n || typeof n !== "object") {
      return { title: FALLBACK_TITLE, options: { body: text(raw || "", 300), data: {} } };
    }
    var d = n.data && typeof n.data === "object" ? n.data : {};
    var url = httpUrl(n.navigate || n.url || d.url);
    var options = {
      body: text(n.body || n.message || "", 500),
      lang: typeof n.lang === "string" ? n.lang : "tr",
      dir: "auto",
      data: {
        url: url,
        alertId: typeof d.id === "string" ? d.id : null,
        receipt: typeof d.receipt === "string" ? d.receipt : null,
        kind: d.kind || "alert",
        seq: d.seq || null
      }
    };
    if (typeof n.tag === "string" && n.tag) {
      options.tag = n.tag;
      // A correction replaces the earlier notification and alerts the reader again.
      options.renotify = d.kind === "update";
    }
    var image = httpUrl(n.image);
    if (image) options.image = image;
    if (typeof n.timestamp === "number") options.timestamp = n.timestamp;
    return { title: text(n.title, 200) || FALLBACK_TITLE, options: options };
  }

  self.addEventListener("install", function () {
    self.skipWaiting();
  });

  self.addEventListener("activate", function (event) {
    event.waitUntil(self.clients.claim());
  });

  self.addEventListener("push", function (event) {
    var n = parse(event.data);
    event.waitUntil(
      server().then(function (base) {
        n.options.icon = base + "/assets/icon.svg";
        n.options.badge = base + "/assets/icon.svg";
        return self.registration.showNotification(n.title, n.options).catch(function () {
          // Something in the options was refused (an image URL, …): show it plainly rather than not at all.
          return self.registration.showNotification(n.title, { body: n.options.body, tag: n.options.tag, data: n.options.data });
        });
      }).then(function () {
        return receipt(n.options.data, "shown");
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
