/*! sondakika reader embed: a live "SON DAKİKA" ticker and a breaking-news alerts button.
 *
 *   <script src="https://haber.example.com.tr/embed/sondakika.js" data-topics="burdur,gundem" defer></script>
 *
 * data-server    the sondakika server (default: where this script comes from)
 * data-topics    comma-separated topic slugs (empty: everything)
 * data-lang      tr | en (default: the reader's browser language, else tr)
 * data-position  inline (where the tag is; default in <body>) | top | bottom (default in <head>: top)
 * data-target    CSS selector of an element to render into instead
 * data-sw        the service worker's URL on this site (default /sw.js)
 *
 * Everything renders in a Shadow DOM, so the host page's styles and layout are left alone.
 */
(function () {
  "use strict";
  if (window.Sondakika) return;

  var VERSION = "1.0.0";
  var script = document.currentScript || document.querySelector('script[src*="sondakika.js"]');
  var ds = (script && script.dataset) || {};
  var server = (ds.server || (script && script.src ? new URL(script.src, location.href).origin : location.origin)).replace(/\/+$/, "");
  var topics = (ds.topics || "").split(",").map(function (t) { return t.trim().toLowerCase(); }).filter(function (t) {
    if (!t) return false;
    if (/^[a-z0-9-]{1,64}$/.test(t)) return true;
    if (window.console) console.warn("sondakika: ignoring topic " + JSON.stringify(t) + " (slugs are a-z, 0-9 and -)");
    return false;
  }).slice(0, 20);
  var swUrl = ds.sw || "/sw.js";
  var inHead = !!(script && script.closest && script.closest("head"));
  var position = /^(top|bottom|inline)$/.test(ds.position || "") ? ds.position : inHead ? "top" : "inline";
  var seqKey = "sondakika:seq:" + server + "|" + topics.join(",");
  var langKey = "sondakika:lang";

  function store(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key);
      localStorage.setItem(key, String(value));
    } catch (e) { /* storage may be blocked; memory is enough */ }
    return null;
  }

  function pickLang() {
    if (ds.lang === "tr" || ds.lang === "en") return ds.lang;
    var saved = store(langKey);
    if (saved === "tr" || saved === "en") return saved;
    var langs = navigator.languages || [navigator.language || ""];
    for (var i = 0; i < langs.length; i++) {
      var l = String(langs[i]).toLowerCase();
      if (l.indexOf("tr") === 0) return "tr";
      if (l.indexOf("en") === 0) return "en";
    }
    return "tr";
  }
  var lang = pickLang();

  var STRINGS = {
    tr: {
      label: "SON DAKİKA",
      region: "Son dakika haberleri",
      empty: "Şu anda son dakika gelişmesi yok.",
      live: "Canlı",
      connecting: "Bağlanıyor",
      offline: "Bağlantı yok",
      updated: "güncellendi",
      now: "az önce",
      announce: "Son dakika: ",
      announceCorrected: "Düzeltme: ",
      announceRetracted: "Geri çekildi: ",
      on: "Son dakika bildirimlerini aç",
      off: "Bildirimleri kapat",
      working: "Bir saniye…",
      stOff: "Önemli gelişmeleri, sayfa kapalıyken de anında bildirim olarak alın.",
      stOn: "Son dakika bildirimleri açık.",
      stOffDone: "Bildirimler kapatıldı.",
      stWorking: "Bildirimler ayarlanıyor…",
      stDenied: "Bu site için bildirimleri engellemişsiniz. Açmak için adres çubuğundaki kilit (site ayarları) simgesine dokunun, Bildirimler'i “İzin ver” yapın ve sayfayı yenileyin.",
      stDismissed: "Bildirim izni verilmedi. Dilediğinizde yeniden deneyebilirsiniz.",
      stIos: "iPhone ve iPad'de bildirim almak için siteyi Ana Ekrana ekleyin: Safari'de Paylaş düğmesine, sonra “Ana Ekrana Ekle”ye dokunun; siteyi Ana Ekran'daki simgesinden açıp bu düğmeye yeniden basın.",
      stUnsupported: "Bu tarayıcı anlık bildirimleri desteklemiyor. Güncel bir Chrome, Firefox, Edge ya da Safari ile deneyin.",
      stInsecure: "Bildirimler yalnızca güvenli (https) sayfalarda çalışır.",
      stNoPush: "Bu sitede anlık bildirimler şu anda kapalı.",
      stError: "Bildirimler açılamadı. Lütfen biraz sonra yeniden deneyin.",
      stTimeout: "Tarayıcınızın bildirim hizmetine ulaşılamadı; bu ağ onu engelliyor olabilir. Bildirimler açılmadı. Başka bir ağda ya da biraz sonra yeniden deneyin.",
      stOffError: "Bildirimler kapatılamadı. Lütfen yeniden deneyin.",
      langLabel: "Dil",
      close: "Kapat"
    },
    en: {
      label: "BREAKING",
      region: "Breaking news",
      empty: "No breaking news right now.",
      live: "Live",
      connecting: "Connecting",
      offline: "Offline",
      updated: "updated",
      now: "just now",
      announce: "Breaking news: ",
      announceCorrected: "Correction: ",
      announceRetracted: "Withdrawn: ",
      on: "Turn on breaking-news alerts",
      off: "Turn off alerts",
      working: "One moment…",
      stOff: "Get major news as a notification the moment it breaks, even with this page closed.",
      stOn: "Breaking-news alerts are on.",
      stOffDone: "Alerts are off.",
      stWorking: "Setting up alerts…",
      stDenied: "You have blocked notifications for this site. To allow them, click the lock (site settings) icon in the address bar, set Notifications to “Allow” and reload the page.",
      stDismissed: "Notification permission was not given. You can try again whenever you like.",
      stIos: "On iPhone and iPad, add this site to your Home Screen first: tap Share, then “Add to Home Screen”, open the site from its Home Screen icon and press this button again.",
      stUnsupported: "This browser does not support push notifications. Try a recent Chrome, Firefox, Edge or Safari.",
      stInsecure: "Notifications only work on secure (https) pages.",
      stNoPush: "Push alerts are not enabled on this site right now.",
      stError: "Could not turn on alerts. Please try again shortly.",
      stTimeout: "Your browser's notification service could not be reached; this network may be blocking it. Alerts were not turned on. Try again later or on another network.",
      stOffError: "Could not turn off alerts. Please try again.",
      langLabel: "Language",
      close: "Close"
    }
  };
  function t(k) { return STRINGS[lang][k]; }

  /* ---------- DOM ---------- */

  var CSS =
    ":host{all:initial;display:block}" +
    ":host([data-position=bottom]){position:fixed;left:0;right:0;bottom:0;z-index:2147483000;padding:0 8px 8px}" +
    ":host([hidden]){display:none}" +
    "*{box-sizing:border-box}" +
    // `all:initial` here too: whatever the page sets on the host element is not inherited.
    ".w{all:initial;display:block;font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,sans-serif;color:#1a1a1a;text-align:left;background:#fff;border:1px solid #e2e2e2;border-radius:6px;overflow:hidden;margin:0 0 16px}" +
    ":host([data-position=top]) .w{border-radius:0;border-width:0 0 1px;margin:0}" +
    ":host([data-position=bottom]) .w{max-width:960px;margin:0 auto;box-shadow:0 4px 24px rgba(0,0,0,.18)}" +
    ".t{display:flex;align-items:stretch;min-height:44px}" +
    ".lb{flex:none;display:flex;flex-direction:column;justify-content:center;gap:2px;background:#c8102e;color:#fff;font-weight:800;letter-spacing:.04em;font-size:14px;padding:8px 14px}" +
    ".cs{display:flex;align-items:center;gap:5px;font-weight:600;font-size:11px;letter-spacing:.02em;opacity:.9}" +
    ".dot{width:7px;height:7px;border-radius:50%;background:#ffd0d6}" +
    ".live .dot{background:#fff;animation:p 2s infinite}" +
    "@keyframes p{50%{opacity:.3}}" +
    ".ls{list-style:none;margin:0;padding:4px 0;flex:1;min-width:0;display:flex;flex-direction:column;justify-content:center}" +
    ".ls li{display:flex;align-items:baseline;gap:10px;padding:4px 14px;min-width:0}" +
    ".ls li+li{border-top:1px solid #f0f0f0}" +
    ".ls a{color:#111;font-weight:700;text-decoration:none;overflow-wrap:anywhere}" +
    ".ls a:hover,.ls a:focus-visible{text-decoration:underline;color:#c8102e}" +
    ".tag{flex:none;font-size:11px;font-weight:700;color:#c8102e;border:1px solid #c8102e;border-radius:3px;padding:0 4px}" +
    ".tm{flex:none;margin-left:auto;color:#666;font-size:13px;white-space:nowrap}" +
    ".up{font-style:italic}" +
    ".em{color:#666;font-size:14px}" +
    ".new{animation:f 1.6s ease-out}" +
    "@keyframes f{from{background:#ffe3e7;transform:translateY(-4px)}to{background:transparent;transform:none}}" +
    ".ft{display:flex;flex-wrap:wrap;align-items:center;gap:8px 14px;padding:8px 14px;background:#f7f7f7;border-top:1px solid #e9e9e9}" +
    ".bt{font:inherit;font-size:14px;font-weight:700;cursor:pointer;border:1px solid #c8102e;background:#c8102e;color:#fff;border-radius:999px;padding:6px 14px;display:inline-flex;align-items:center;gap:6px}" +
    ".bt[data-state=on]{background:#fff;color:#c8102e}" +
    ".bt:disabled{opacity:.6;cursor:progress}" +
    ".bt:focus-visible,.lg button:focus-visible,.x:focus-visible{outline:2px solid #1a5fb4;outline-offset:2px}" +
    ".bt svg{width:16px;height:16px;fill:currentColor}" +
    ".st{margin:0;flex:1 1 260px;color:#444;font-size:13px}" +
    ".st:empty{display:none}" +
    ".lg{display:inline-flex;border:1px solid #ccc;border-radius:4px;overflow:hidden;margin-left:auto}" +
    ".lg button{font:inherit;font-size:12px;font-weight:700;border:0;background:#fff;color:#555;padding:3px 8px;cursor:pointer}" +
    ".lg button[aria-pressed=true]{background:#333;color:#fff}" +
    ".x{font:inherit;font-size:18px;line-height:1;border:0;background:none;color:#666;cursor:pointer;padding:2px 6px}" +
    ".sr{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}" +
    "[hidden]{display:none!important}" +
    "@media (max-width:560px){.t{flex-direction:column}.lb{flex-direction:row;justify-content:space-between;padding:6px 12px}.tm{font-size:12px}}" +
    "@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}";

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }

  var host = el("sondakika-widget", { "data-position": position });
  var root = host.attachShadow({ mode: "open" });
  if (root.adoptedStyleSheets !== undefined && window.CSSStyleSheet && "replaceSync" in CSSStyleSheet.prototype) {
    // Constructed stylesheets: not blocked by a host page's CSP without 'unsafe-inline'.
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    root.adoptedStyleSheets = [sheet];
  } else {
    root.appendChild(el("style", null, CSS));
  }
  var wrap = el("div", { class: "w" });
  var ticker = el("section", { class: "t", "data-sondakika": "ticker", role: "region" });
  var labelBox = el("div", { class: "lb" });
  var labelText = el("span");
  var conn = el("span", { class: "cs", "data-sondakika": "connection" });
  var connText = el("span");
  conn.appendChild(el("span", { class: "dot", "aria-hidden": "true" }));
  conn.appendChild(connText);
  labelBox.appendChild(labelText);
  labelBox.appendChild(conn);
  var list = el("ol", { class: "ls" });
  var announcer = el("div", { class: "sr", "aria-live": "polite", "aria-atomic": "true", "data-sondakika": "announcer" });
  ticker.appendChild(labelBox);
  ticker.appendChild(list);
  ticker.appendChild(announcer);

  var foot = el("div", { class: "ft" });
  var button = el("button", { type: "button", class: "bt", "data-sondakika": "subscribe", "data-state": "checking", hidden: "" });
  var status = el("p", { class: "st", "data-sondakika": "status", role: "status" });
  var langs = el("div", { class: "lg", role: "group" });
  var langButtons = {};
  ["tr", "en"].forEach(function (l) {
    var b = el("button", { type: "button", lang: l, "data-lang": l }, l.toUpperCase());
    b.addEventListener("click", function () { setLang(l); });
    langButtons[l] = b;
    langs.appendChild(b);
  });
  foot.appendChild(button);
  foot.appendChild(status);
  foot.appendChild(langs);
  if (position === "bottom") {
    var closeBtn = el("button", { type: "button", class: "x" }, "×");
    closeBtn.addEventListener("click", function () { host.hidden = true; });
    foot.appendChild(closeBtn);
  }
  wrap.appendChild(ticker);
  wrap.appendChild(foot);
  root.appendChild(wrap);

  function mount() {
    var target = null;
    if (ds.target) {
      try { target = document.querySelector(ds.target); } catch (e) { /* bad selector */ }
    }
    if (target) target.appendChild(host);
    else if (position === "inline" && script && script.parentNode && !inHead) script.parentNode.insertBefore(host, script.nextSibling);
    else if (position === "bottom") document.body.appendChild(host);
    else document.body.insertBefore(host, document.body.firstChild);
  }

  /* ---------- the ticker ---------- */

  var alerts = {}; // id -> latest alert/update frame
  var fresh = {}; // ids that just arrived (highlighted once)
  var since = null; // the last seq processed
  var clockSkew = 0; // server time - local time
  var transport = null; // { kind: "ws"|"sse", close() }
  var connected = false;
  var offline = navigator.onLine === false;
  var delay = 500;
  var wsFailures = 0;
  var useSse = typeof WebSocket !== "function";
  var retryTimer = null;
  var generation = 0;

  function now() { return Date.now() + clockSkew; }

  function safeUrl(u) { return /^https?:\/\//i.test(u || "") ? u : null; }

  function ago(iso) {
    var s = Math.max(0, (now() - Date.parse(iso)) / 1000);
    if (!(s >= 0)) return "";
    if (s < 60) return t("now");
    var rtf = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(lang, { numeric: "auto", style: "short" }) : null;
    var n, unit;
    if (s < 3600) { n = Math.floor(s / 60); unit = "minute"; }
    else if (s < 86400) { n = Math.floor(s / 3600); unit = "hour"; }
    else { n = Math.floor(s / 86400); unit = "day"; }
    return rtf ? rtf.format(-n, unit) : n + " " + unit;
  }

  function visibleAlerts() {
    var t0 = now();
    return Object.keys(alerts)
      .map(function (id) { return alerts[id]; })
      .filter(function (a) { return !a.expires_at || Date.parse(a.expires_at) > t0; })
      .sort(function (a, b) { return Date.parse(b.published_at) - Date.parse(a.published_at) || b.seq - a.seq; });
  }

  var items = {}; // id -> { li, time, key }: kept across renders so focus and hover survive
  var emptyItem = el("li", { class: "em" });

  function buildItem(a) {
    var li = el("li", { "data-sondakika-alert": a.id, class: fresh[a.id] ? "new" : null });
    if (a.label && a.label !== "SON DAKİKA") li.appendChild(el("span", { class: "tag" }, a.label));
    var href = safeUrl(a.url);
    li.appendChild(el(href ? "a" : "span", { href: href, class: "hl", lang: "tr" }, a.headline));
    var tm = el("time", { class: "tm", datetime: a.published_at });
    var rel = el("span");
    tm.appendChild(rel);
    if (a.type === "update") {
      tm.appendChild(document.createTextNode(" · "));
      tm.appendChild(el("span", { class: "up" }, t("updated")));
    }
    li.appendChild(tm);
    return { li: li, rel: rel, key: itemKey(a) };
  }

  function itemKey(a) { return [a.type, a.label, a.headline, a.url, lang].join("\n"); }

  function renderTicker() {
    var shown = visibleAlerts();
    // Forget expired alerts and keep memory bounded.
    var keep = {};
    shown.slice(0, 20).forEach(function (a) { keep[a.id] = a; });
    alerts = keep;
    var top = shown.slice(0, 3);
    var wanted = {};
    top.forEach(function (a, i) {
      wanted[a.id] = true;
      var item = items[a.id];
      if (!item || item.key !== itemKey(a)) {
        var built = buildItem(a);
        if (item && item.li.parentNode) list.replaceChild(built.li, item.li);
        item = items[a.id] = built;
      }
      item.rel.textContent = ago(a.published_at);
      if (list.children[i] !== item.li) list.insertBefore(item.li, list.children[i] || null);
    });
    for (var id in items) {
      if (!wanted[id]) {
        if (items[id].li.parentNode) list.removeChild(items[id].li);
        delete items[id];
      }
    }
    emptyItem.textContent = t("empty");
    if (top.length && emptyItem.parentNode) list.removeChild(emptyItem);
    if (!top.length && !emptyItem.parentNode) list.appendChild(emptyItem);
    ticker.setAttribute("data-count", String(top.length));
    connText.textContent = offline ? t("offline") : connected ? t("live") : t("connecting");
    labelBox.classList.toggle("live", connected);
  }

  // What the screen reader was told, by alert id: a correction or retraction of an alert it
  // announced is announced too, so that nobody is left with the wrong headline. (The live region
  // holds only the latest announcement; clearing it would take nothing back.)
  var announced = {};
  var announcedCount = 0;

  function say(textFor) {
    announcer.textContent = "";
    announcer.textContent = textFor;
  }

  function headlineOf(frame) { return (frame.label || t("label")) + ": " + frame.headline; }

  function apply(frame, announce) {
    if (!frame || !frame.id) return;
    if (frame.type === "alert" || frame.type === "update") {
      var isNew = !alerts[frame.id];
      alerts[frame.id] = frame;
      if (announce && isNew && frame.type === "alert") {
        fresh[frame.id] = true;
        setTimeout(function () { delete fresh[frame.id]; }, 2000);
        if (!(frame.id in announced) && ++announcedCount > 50) { announced = {}; announcedCount = 1; }
        announced[frame.id] = headlineOf(frame);
        say(announced[frame.id]);
      } else if (announce && frame.type === "update" && announced[frame.id] && announced[frame.id] !== headlineOf(frame)) {
        announced[frame.id] = headlineOf(frame);
        say(t("announceCorrected") + announced[frame.id]);
      }
    } else if (frame.type === "retract") {
      var gone = alerts[frame.id];
      delete alerts[frame.id];
      if (announce && announced[frame.id]) {
        say(t("announceRetracted") + (gone ? gone.headline : announced[frame.id]));
        delete announced[frame.id];
      }
    }
  }

  function setSince(seq) {
    since = seq;
    store(seqKey, seq);
  }

  function onFrame(text) {
    var f;
    try { f = JSON.parse(text); } catch (e) { return; }
    if (!f || typeof f.type !== "string") return;
    if (f.type === "hello") {
      var st = Date.parse(f.server_time);
      if (st) clockSkew = st - Date.now();
      connected = true;
      delay = 500;
      wsFailures = 0;
      if (since === null) setSince(f.seq);
      else if (typeof f.seq === "number" && f.seq < since) {
        // The server's sequence is behind ours (a different or restored database): start over.
        setSince(f.seq);
        loadLive(true);
      } else if (f.replay && f.replay.truncated) {
        // We missed more than the server keeps: take the current state, then the replay on top.
        loadLive(false);
      }
      renderTicker();
      return f.type;
    }
    if (typeof f.seq === "number") {
      if (since !== null && f.seq <= since) return f.type; // already applied
      setSince(f.seq);
    }
    apply(f, true);
    renderTicker();
    return f.type;
  }

  function loadLive(resetSince) {
    var q = topics.length ? "?topics=" + encodeURIComponent(topics.join(",")) : "";
    return fetch(server + "/api/v1/live" + q, { credentials: "omit" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (body) {
        alerts = {};
        (body.alerts || []).forEach(function (a) { apply(a, false); });
        if (since === null || resetSince) setSince(body.seq);
        renderTicker();
      });
  }

  function wsUrl() {
    var q = [];
    if (topics.length) q.push("topics=" + encodeURIComponent(topics.join(",")));
    if (since !== null) q.push("since=" + since);
    return q.length ? "?" + q.join("&") : "";
  }

  function closeTransport() {
    generation++;
    if (transport) transport.close();
    transport = null;
    connected = false;
  }

  function scheduleReconnect(wait) {
    clearTimeout(retryTimer);
    if (offline) return;
    if (wait == null) {
      wait = delay * (0.5 + Math.random());
      delay = Math.min(delay * 2, 30000);
    }
    retryTimer = setTimeout(connect, wait);
  }

  function connect() {
    clearTimeout(retryTimer);
    closeTransport();
    if (offline) return renderTicker();
    var gen = generation;
    if (!useSse) {
      var ws;
      try { ws = new WebSocket(server.replace(/^http/i, "ws") + "/ws" + wsUrl()); } catch (e) { useSse = true; return connect(); }
      var hello = false;
      transport = { kind: "ws", close: function () { try { ws.close(1000); } catch (e) { /* closed */ } } };
      ws.onmessage = function (m) {
        if (gen === generation && onFrame(m.data) === "hello") hello = true;
      };
      ws.onclose = function (e) {
        if (gen !== generation) return;
        transport = null;
        connected = false;
        if (!hello && ++wsFailures >= 3) useSse = true; // WebSockets blocked on this network?
        renderTicker();
        // 1001: the server is restarting; every ticker comes back, spread over a few seconds.
        scheduleReconnect(e.code === 1001 ? 500 + Math.random() * 2500 : null);
      };
    } else {
      var es = new EventSource(server + "/sse" + wsUrl());
      transport = { kind: "sse", close: function () { es.close(); } };
      ["hello", "alert", "update", "retract"].forEach(function (type) {
        es.addEventListener(type, function (m) { if (gen === generation) onFrame(m.data); });
      });
      es.onerror = function () {
        if (gen !== generation) return;
        connected = false;
        renderTicker();
        // EventSource retries by itself (with Last-Event-ID) unless the server refused it.
        if (es.readyState === 2) {
          transport = null;
          scheduleReconnect(null);
        }
      };
    }
    renderTicker();
  }

  function startTicker() {
    var saved = parseInt(store(seqKey), 10);
    loadLive(false)
      .catch(function () {
        // No initial state (the API is unreachable): resume from where this reader left off.
        if (since === null && saved >= 0) since = saved;
      })
      .then(connect);
    setInterval(renderTicker, 15000);
    window.addEventListener("offline", function () {
      offline = true;
      clearTimeout(retryTimer);
      closeTransport();
      renderTicker();
    });
    window.addEventListener("online", function () {
      offline = false;
      delay = 500;
      connect();
    });
    // Let the page enter the back/forward cache, and resume when it comes back.
    window.addEventListener("pagehide", function (e) { if (e.persisted) { clearTimeout(retryTimer); closeTransport(); } });
    window.addEventListener("pageshow", function (e) { if (e.persisted && !offline) connect(); });
  }

  /* ---------- the alerts control ---------- */

  var pushState = "checking";
  var statusKey = "";
  var vapidKey = null;

  var BELL = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1z"/></svg>';

  function setPush(state, key) {
    pushState = state;
    statusKey = key === undefined ? { off: "stOff", on: "stOn", working: "stWorking", denied: "stDenied", ios: "stIos", unsupported: "stUnsupported", insecure: "stInsecure", nopush: "stNoPush", error: "stError" }[state] || "" : key;
    renderControl();
  }

  function renderControl() {
    var usable = pushState === "off" || pushState === "on" || pushState === "working" || pushState === "error";
    button.hidden = !usable;
    button.disabled = pushState === "working";
    button.setAttribute("data-state", pushState);
    button.setAttribute("aria-pressed", pushState === "on" ? "true" : "false");
    button.innerHTML = BELL;
    button.appendChild(document.createTextNode(pushState === "on" ? t("off") : pushState === "working" ? t("working") : t("on")));
    status.textContent = statusKey ? t(statusKey) : "";
  }

  function setLang(l) {
    if (l === lang) return;
    lang = l;
    store(langKey, l);
    render();
    if (pushState === "on") sync();
  }

  function render() {
    host.setAttribute("lang", lang);
    wrap.setAttribute("lang", lang);
    labelText.textContent = t("label");
    ticker.setAttribute("aria-label", t("region"));
    langs.setAttribute("aria-label", t("langLabel"));
    for (var l in langButtons) langButtons[l].setAttribute("aria-pressed", l === lang ? "true" : "false");
    if (closeBtn) closeBtn.setAttribute("aria-label", t("close"));
    renderTicker();
    renderControl();
  }

  var isIos = /iPad|iPhone|iPod/.test(navigator.userAgent) || (navigator.platform === "MacIntel" && navigator.maxTouchPoints > 1);
  var standalone = navigator.standalone === true || (window.matchMedia && matchMedia("(display-mode: standalone)").matches);

  function b64urlBytes(s) {
    var b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    var out = new Uint8Array(b.length);
    for (var i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
    return out;
  }

  function json(method, path, body) {
    return fetch(server + path, {
      method: method,
      credentials: "omit",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined
    });
  }

  function getKey() {
    if (vapidKey) return Promise.resolve(vapidKey);
    return json("GET", "/api/v1/push/vapid-public-key").then(function (r) {
      if (r.status === 503) { var e = new Error("push off"); e.noPush = true; throw e; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (b) { return (vapidKey = b.publicKey); });
  }

  // The reader's choice, for the service worker (which has no localStorage) after
  // `pushsubscriptionchange`.
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
  function remember(endpoint) {
    var reader = { server: server, topics: topics, locale: lang, endpoint: endpoint, sw: swUrl };
    return idb("readwrite", function (s) { return s.put(reader, "reader"); }).catch(function () { /* private mode */ });
  }

  function registration() {
    return navigator.serviceWorker.getRegistration().then(function (reg) { return reg || null; });
  }

  function activeWorker(reg) {
    if (reg.active) return Promise.resolve(reg);
    return new Promise(function (resolve, reject) {
      var w = reg.installing || reg.waiting;
      if (!w) return reject(new Error("no service worker"));
      w.addEventListener("statechange", function () {
        if (w.state === "activated") resolve(reg);
        else if (w.state === "redundant") reject(new Error("service worker failed"));
      });
    });
  }

  function sameKey(sub, key) {
    var k = sub.options && sub.options.applicationServerKey;
    if (!k) return true;
    var a = new Uint8Array(k), b = b64urlBytes(key);
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  function post(sub) {
    return json("POST", "/api/v1/push/subscriptions", { subscription: sub.toJSON(), topics: topics, locale: lang }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      remember(sub.endpoint);
      return r;
    });
  }

  // Already subscribed: post it again (the server drops subscriptions it has not seen for
  // weeks), re-subscribing if the server's key changed.
  function sync() {
    return registration().then(function (reg) {
      if (!reg) return null;
      return reg.pushManager.getSubscription().then(function (sub) {
        if (!sub) return null;
        return getKey().then(function (key) {
          if (sameKey(sub, key)) return sub;
          return sub.unsubscribe().then(function () {
            return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlBytes(key) });
          });
        });
      });
    }).then(function (sub) {
      if (!sub) return setPush("off");
      setPush("on");
      return post(sub).catch(function (e) {
        // Still subscribed in this browser; the next page load tries again.
        if (window.console) console.warn("sondakika: could not refresh the subscription", e);
      });
    });
  }

  function checkPush() {
    if (!window.isSecureContext) return setPush("insecure");
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      return setPush(isIos && !standalone ? "ios" : "unsupported");
    }
    if (Notification.permission === "denied") setPush("denied");
    if (navigator.permissions && navigator.permissions.query) {
      navigator.permissions.query({ name: "notifications" }).then(function (p) {
        p.onchange = function () {
          if (p.state === "denied") setPush("denied");
          else if (pushState === "denied") setPush("off");
        };
      }).catch(function () { /* not queryable here */ });
    }
    getKey().then(function () {
      if (Notification.permission === "denied") return;
      if (Notification.permission !== "granted") return setPush("off");
      return sync();
    }).catch(function (e) {
      if (e && e.noPush) setPush("nopush");
      else if (pushState !== "denied") setPush("off"); // the key is fetched again on click
    });
  }

  function askPermission() {
    if (Notification.permission === "granted") return Promise.resolve("granted");
    return new Promise(function (resolve) {
      var p = Notification.requestPermission(resolve); // old Safari: callback only
      if (p && p.then) p.then(resolve, function () { resolve("default"); });
    });
  }

  // Where the browser's push service cannot be reached (a network that blocks FCM, say),
  // pushManager.subscribe() never settles. Give up after this long: a reachable push service
  // answers within a few seconds, even on a slow mobile network.
  var SUBSCRIBE_TIMEOUT_MS = 20000;
  var attempt = 0;

  /** pushManager.subscribe(), bounded. Should the abandoned call settle after all, the reader's
   * request is completed then (unless a newer attempt took over). */
  function subscribeBounded(reg, key) {
    var mine = attempt;
    var call = reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlBytes(key) });
    var timer;
    var timeout = new Promise(function (resolve, reject) {
      timer = setTimeout(function () {
        var e = new Error("push service unreachable");
        e.timeout = true;
        reject(e);
        call.then(function (sub) {
          if (mine !== attempt || pushState !== "error") return;
          attempt++;
          setPush("working");
          return post(sub).then(function () { setPush("on"); });
        }).catch(function () { /* still unreachable: the reader was told */ });
      }, SUBSCRIBE_TIMEOUT_MS);
    });
    return Promise.race([call, timeout]).then(function (sub) {
      clearTimeout(timer);
      return sub;
    }, function (e) {
      clearTimeout(timer);
      throw e;
    });
  }

  function turnOn() {
    var permission = askPermission(); // right here in the click, as browsers require
    var HANDLED = {};
    attempt++;
    setPush("working");
    permission.then(function (p) {
      if (p === "denied") { setPush("denied"); throw HANDLED; }
      if (p !== "granted") { setPush("off", "stDismissed"); throw HANDLED; }
      return Promise.all([getKey(), navigator.serviceWorker.register(swUrl).then(activeWorker)]);
    }).then(function (r) {
      var key = r[0], reg = r[1];
      return reg.pushManager.getSubscription().then(function (sub) {
        if (sub && sameKey(sub, key)) return sub;
        return (sub ? sub.unsubscribe() : Promise.resolve()).then(function () {
          return subscribeBounded(reg, key);
        });
      });
    }).then(post).then(function () {
      setPush("on");
    }).catch(function (e) {
      if (e === HANDLED) return;
      if (e && e.noPush) return setPush("nopush");
      if (e && e.timeout) return setPush("error", "stTimeout");
      if (window.console) console.warn("sondakika: could not turn on alerts", e);
      setPush(Notification.permission === "denied" ? "denied" : "error");
    });
  }

  function turnOff() {
    setPush("working");
    registration().then(function (reg) {
      return reg && reg.pushManager.getSubscription();
    }).then(function (sub) {
      if (!sub) return;
      var endpoint = sub.endpoint;
      return sub.unsubscribe().then(function () {
        remember(null);
        return json("DELETE", "/api/v1/push/subscriptions", { endpoint: endpoint });
      });
    }).then(function () {
      setPush("off", "stOffDone");
    }, function (e) {
      if (window.console) console.warn("sondakika: could not turn off alerts", e);
      setPush("on", "stOffError");
    });
  }

  button.addEventListener("click", function () {
    if (pushState === "on") turnOff();
    else if (pushState === "off" || pushState === "error") turnOn();
  });

  /* ---------- start ---------- */

  function start() {
    mount();
    render();
    startTicker();
    checkPush();
  }

  window.Sondakika = Object.freeze({
    version: VERSION,
    state: function () {
      return {
        version: VERSION,
        server: server,
        topics: topics.slice(),
        lang: lang,
        position: position,
        transport: transport ? transport.kind : null,
        connected: connected,
        offline: offline,
        seq: since,
        push: pushState,
        alerts: visibleAlerts().map(function (a) {
          return { id: a.id, seq: a.seq, label: a.label, headline: a.headline, url: a.url, published_at: a.published_at, expires_at: a.expires_at };
        })
      };
    }
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
