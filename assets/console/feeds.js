// The console's feed parts: drafts from suggest-mode feeds (every editor), sent with one click,
// and the feeds themselves (admins). Separate from console.js, which owns composing and live
// delivery; this file only shares its signed-in token (sessionStorage) and its page.
//
// Drafts come live: the console holds GET /api/v1/feeds/drafts/stream open (read with fetch:
// EventSource cannot send the token) and shows each list the server sends the moment a poller
// stores a draft, in whichever process, also while the tab is in the background, where the
// editor is likely in their CMS: the tab title counts the new ones. A new draft is announced
// (aria-live) and highlighted. Without the stream (a proxy that buffers, the server's bound, a
// network break) the console asks every 2 seconds while the page is visible, and tries the
// stream again after a pause that doubles up to a minute.
(() => {
  "use strict";
  const TOKEN_KEY = "sondakika.console.token";
  const EVERY_MS = 2000;
  const $ = (id) => document.getElementById(id);

  const TEXT = {
    tr: {
      drafts: "Akıştan gelen taslaklar", draftsEmpty: "Bekleyen taslak yok.", send: "Gönder",
      dismiss: "Yoksay", sent: "Gönderildi", already: "Zaten gönderilmişti", newDraft: "Yeni taslak",
      feeds: "Akışlar (RSS/Atom)", feedsEmpty: "Henüz akış yok.", add: "Akış ekle", url: "Akış URL'si",
      name: "Ad", topics: "Konular", mode: "Mod", suggest: "Öneri (taslak)", auto: "Otomatik",
      prefix: "Başlık şununla başlasın", category: "Kategori/etiket", interval: "Aralık (sn)",
      poll: "Şimdi yokla", disable: "Durdur", enable: "Başlat", remove: "Sil", ok: "son başarı",
      never: "henüz yoklanmadı", failing: "HATA", disabled: "durduruldu", newItems: "yeni",
      confirmRemove: "Bu akış silinsin mi? Oluşturduğu uyarılar kalır.", from: "Kaynak",
      live: "canlı", liveTitle: "Yeni taslaklar anında gelir",
    },
    en: {
      drafts: "Drafts from feeds", draftsEmpty: "No drafts waiting.", send: "Send",
      dismiss: "Dismiss", sent: "Sent", already: "Already sent", newDraft: "New draft",
      feeds: "Feeds (RSS/Atom)", feedsEmpty: "No feeds yet.", add: "Add feed", url: "Feed URL",
      name: "Name", topics: "Topics", mode: "Mode", suggest: "Suggest (drafts)", auto: "Automatic",
      prefix: "Title starts with", category: "Category/tag", interval: "Interval (s)",
      poll: "Poll now", disable: "Pause", enable: "Resume", remove: "Remove", ok: "last success",
      never: "not polled yet", failing: "FAILING", disabled: "paused", newItems: "new",
      confirmRemove: "Remove this feed? Alerts it made stay.", from: "From",
      live: "live", liveTitle: "New drafts arrive at once",
    },
  };
  const t = (k) => (TEXT[document.documentElement.lang] || TEXT.tr)[k] || TEXT.tr[k];

  const STREAM_RETRY_FIRST_MS = 1000;
  const STREAM_RETRY_MAX_MS = 60_000;
  const state = {
    role: null, token: null, seen: new Set(), first: true, unread: 0, baseTitle: document.title,
    // The drafts stream: its fetch's AbortController while one is open, whether a list has come
    // through it (then nothing polls), and when to try again after it failed.
    stream: null, live: false, retryAt: 0, backoff: STREAM_RETRY_FIRST_MS,
  };

  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v === true) e.setAttribute(k, "");
      else if (v !== false && v != null) e.setAttribute(k, v);
    }
    for (const c of children) if (c) e.append(c);
    return e;
  }

  async function api(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${state.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw Object.assign(new Error((data && data.detail) || `HTTP ${r.status}`), { status: r.status, data });
    return { status: r.status, data };
  }

  function cards() {
    if ($("drafts-card")) return;
    const desk = $("app");
    if (!desk) return;
    desk.append(
      el("section", { id: "drafts-card", class: "card drafts", "aria-labelledby": "drafts-title" },
        el("h2", { id: "drafts-title" }, el("span", { "data-feeds-i18n": "drafts", text: t("drafts") }), " ",
          el("span", { id: "drafts-count", class: "badge", hidden: true }), " ",
          el("span", { id: "drafts-live", class: "muted small", title: t("liveTitle"), text: `● ${t("live")}`, hidden: true })),
        el("p", { id: "drafts-announce", class: "visually-hidden", "aria-live": "polite" }),
        el("p", { id: "drafts-result", class: "small", role: "status" }),
        el("p", { id: "drafts-error", class: "form-error", role: "alert", hidden: true }),
        el("ol", { id: "drafts", class: "recent-list" }),
        el("p", { id: "drafts-empty", class: "muted", text: t("draftsEmpty") })),
      el("section", { id: "feeds-card", class: "card feeds", "aria-labelledby": "feeds-title", hidden: true },
        el("h2", { id: "feeds-title", text: t("feeds") }),
        el("ol", { id: "feeds", class: "recent-list" }),
        el("p", { id: "feeds-empty", class: "muted", text: t("feedsEmpty"), hidden: true }),
        feedForm()),
    );
  }

  function feedForm() {
    const field = (id, label, input) => el("div", { class: "field" }, el("label", { for: id, text: label }), input);
    const form = el("form", { id: "feed-form", novalidate: true },
      field("feed-url", t("url"), el("input", { id: "feed-url", type: "url", required: true, placeholder: "https://www.example.com.tr/category/son-dakika/feed/" })),
      el("div", { class: "field-pair" },
        field("feed-name", t("name"), el("input", { id: "feed-name", type: "text" })),
        field("feed-topics", t("topics"), el("input", { id: "feed-topics", type: "text", placeholder: "gundem, burdur" }))),
      el("div", { class: "field-pair" },
        field("feed-mode", t("mode"), el("select", { id: "feed-mode" },
          el("option", { value: "suggest", text: t("suggest") }), el("option", { value: "auto", text: t("auto") }))),
        field("feed-interval", t("interval"), el("input", { id: "feed-interval", type: "number", min: "1", placeholder: "120" }))),
      el("div", { class: "field-pair" },
        field("feed-prefix", t("prefix"), el("input", { id: "feed-prefix", type: "text", placeholder: "SON DAKİKA" })),
        field("feed-category", t("category"), el("input", { id: "feed-category", type: "text" }))),
      el("p", { id: "feed-error", class: "form-error", role: "alert", hidden: true }),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary", text: t("add") })));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const v = (id) => $(id).value.trim();
      const body = { url: v("feed-url"), mode: v("feed-mode") };
      if (v("feed-name")) body.name = v("feed-name");
      if (v("feed-topics")) body.topics = v("feed-topics").split(",").map((s) => s.trim()).filter(Boolean);
      if (v("feed-interval")) body.interval_secs = Number(v("feed-interval"));
      if (v("feed-prefix")) body.title_prefix = v("feed-prefix");
      if (v("feed-category")) body.category = v("feed-category");
      try {
        await api("POST", "/api/v1/feeds", body);
        form.reset();
        $("feed-error").hidden = true;
        loadFeeds();
      } catch (err) {
        const errors = (err.data && err.data.errors) || [];
        $("feed-error").textContent = errors.length ? errors.map((x) => `${x.field}: ${x.message}`).join(" · ") : err.message;
        $("feed-error").hidden = false;
      }
    });
    return form;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleTimeString(document.documentElement.lang || "tr") : "";
  }

  function renderDrafts(items) {
    const list = $("drafts");
    const fresh = items.filter((d) => !state.seen.has(d.id));
    list.replaceChildren(...items.map((d) => {
      const result = el("span", { class: "muted small", role: "status" });
      const send = el("button", { type: "button", class: "send", "data-role": "send-draft", text: t("send") });
      const dismiss = el("button", { type: "button", class: "quiet", "data-role": "dismiss-draft", text: t("dismiss") });
      send.addEventListener("click", async () => {
        send.disabled = dismiss.disabled = true;
        try {
          const r = await api("POST", `/api/v1/feeds/drafts/${d.id}/send`);
          // Said outside the row too: the stream may take the row away before this answer.
          const said = `${r.status === 201 ? t("sent") : t("already")} · ${r.data.id}`;
          result.textContent = said;
          $("drafts-result").textContent = `${said} · ${d.headline}`;
          li.classList.add("sent");
          if (!state.live) setTimeout(loadDrafts, 1500);
        } catch (err) {
          result.textContent = err.message;
          send.disabled = dismiss.disabled = false;
        }
      });
      dismiss.addEventListener("click", async () => {
        send.disabled = dismiss.disabled = true;
        try { await api("POST", `/api/v1/feeds/drafts/${d.id}/dismiss`); if (!state.live) loadDrafts(); }
        catch (err) { result.textContent = err.message; send.disabled = dismiss.disabled = false; }
      });
      const li = el("li", { class: `draft${!state.first && !state.seen.has(d.id) ? " new" : ""}`, "data-draft-id": d.id },
        el("div", { class: "draft-head" },
          el("span", { class: "breaking-label", text: d.label }), " ",
          el("strong", { class: "draft-headline", text: d.headline })),
        d.summary ? el("p", { class: "small", text: d.summary }) : null,
        el("p", { class: "muted small" },
          `${t("from")}: ${d.feed_name} · ${when(d.seen_at)} · `,
          el("a", { href: d.url, target: "_blank", rel: "noopener noreferrer", text: new URL(d.url).host })),
        el("div", { class: "actions" }, send, dismiss, result));
      return li;
    }));
    $("drafts-empty").hidden = items.length > 0;
    if (!state.first && fresh.length) {
      state.unread += fresh.length;
      $("drafts-announce").textContent = `${t("newDraft")}: ${fresh[0].headline}`;
    }
    for (const d of items) state.seen.add(d.id);
    state.first = false;
    const badge = $("drafts-count");
    badge.hidden = items.length === 0;
    badge.textContent = String(items.length);
    document.title = state.unread && document.hidden ? `(${state.unread}) ${state.baseTitle}` : state.baseTitle;
  }

  async function loadDrafts() {
    try {
      const { data } = await api("GET", "/api/v1/feeds/drafts?limit=50");
      $("drafts-error").hidden = true;
      renderDrafts(data.items);
    } catch (err) {
      $("drafts-error").textContent = err.message;
      $("drafts-error").hidden = false;
    }
  }

  /** Reads the drafts stream until it ends; each `drafts` event is the whole list. */
  async function follow() {
    if (state.stream || !state.token || Date.now() < state.retryAt) return;
    const ctl = new AbortController();
    state.stream = ctl;
    try {
      const r = await fetch("/api/v1/feeds/drafts/stream", { headers: { Authorization: `Bearer ${state.token}` }, signal: ctl.signal });
      if (!r.ok || !r.body) return;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value;
        for (let end; (end = buffer.indexOf("\n\n")) >= 0; buffer = buffer.slice(end + 2)) {
          let event = "", data = "";
          for (const line of buffer.slice(0, end).split("\n")) {
            if (line.startsWith("event: ")) event = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          // `end` (a revoked token, a server shutting down) is followed by the stream's end.
          if (event !== "drafts") continue;
          setLive(true);
          state.backoff = STREAM_RETRY_FIRST_MS;
          $("drafts-error").hidden = true;
          renderDrafts(JSON.parse(data).items);
        }
      }
    } catch {
      // A network error or our own abort: the poll takes over below.
    } finally {
      if (state.stream === ctl) {
        state.stream = null;
        setLive(false);
        state.retryAt = Date.now() + state.backoff;
        state.backoff = Math.min(state.backoff * 2, STREAM_RETRY_MAX_MS);
      }
    }
  }

  function setLive(live) {
    state.live = live;
    if ($("drafts-live")) $("drafts-live").hidden = !live;
  }

  function stopFollowing() {
    const ctl = state.stream;
    state.stream = null;
    ctl?.abort();
    setLive(false);
    state.retryAt = 0;
    state.backoff = STREAM_RETRY_FIRST_MS;
  }

  function outcome(f) {
    if (!f.enabled) return t("disabled");
    if (f.last_error) return `${t("failing")} (${f.failures}×): ${f.last_error}`;
    if (f.last_success_at) return `${t("ok")} ${when(f.last_success_at)} · ${f.last_new_items} ${t("newItems")}`;
    return t("never");
  }

  async function loadFeeds() {
    if (state.role !== "admin") return;
    try {
      const { data } = await api("GET", "/api/v1/feeds");
      const action = (label, role, fn) => el("button", { type: "button", class: "quiet", "data-role": role, text: label, onclick: fn });
      $("feeds").replaceChildren(...data.items.map((f) => el("li", { class: "feed", "data-feed-id": f.id },
        el("div", {}, el("strong", { text: f.name }), ` · ${f.mode === "auto" ? t("auto") : t("suggest")} · ${f.interval_secs} s`),
        el("p", { class: "muted small mono", text: f.url }),
        el("p", { class: f.last_error ? "form-error small" : "small", "data-role": "outcome", text: outcome(f) }),
        el("div", { class: "actions" },
          action(t("poll"), "poll", async () => { await api("POST", `/api/v1/feeds/${f.id}/poll`); setTimeout(loadFeeds, 1500); }),
          action(f.enabled ? t("disable") : t("enable"), "toggle", async () => { await api("PATCH", `/api/v1/feeds/${f.id}`, { enabled: !f.enabled }); loadFeeds(); }),
          action(t("remove"), "remove", async () => { if (confirm(t("confirmRemove"))) { await api("DELETE", `/api/v1/feeds/${f.id}`); loadFeeds(); } })))));
      $("feeds-empty").hidden = data.items.length > 0;
    } catch (err) {
      $("feed-error").textContent = err.message;
      $("feed-error").hidden = false;
    }
  }

  async function tick() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token || $("app")?.hidden) {
      state.token = null;
      stopFollowing();
      return;
    }
    if (token !== state.token) {
      stopFollowing();
      state.token = token;
      state.role = null;
      state.seen.clear();
      state.first = true;
      cards();
      try { state.role = (await api("GET", "/api/v1/me")).data.role; } catch { return; }
      $("feeds-card").hidden = state.role !== "admin";
      loadFeeds();
    }
    follow();
    if (!state.live && !document.hidden) await loadDrafts();
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) { state.unread = 0; document.title = state.baseTitle; tick(); }
  });
  setInterval(tick, EVERY_MS);
  setInterval(() => !document.hidden && loadFeeds(), 10 * EVERY_MS);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", tick);
  else tick();
})();
