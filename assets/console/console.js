// sondakika editor console: sign in, compose, preview, send with one confirmation, watch the
// delivery live, correct and retract. Plain JavaScript, no framework, no build step.
//
// Rules it keeps:
// - What the editor typed is never lost: the draft lives in localStorage until a send succeeds,
//   a failed request leaves every field as it was, a 401 returns to sign-in without touching it.
// - One draft, one Idempotency-Key: a retried click after a network error replays the first
//   answer instead of alerting twice. The key changes only after a definite answer (200/201).
// - Text goes out byte-exact (no trimming of headline or summary); URLs are trimmed of the
//   spaces a paste brings along.
(() => {
  "use strict";

  const API = "/api/v1";
  const LABEL = "SON DAKİKA";
  const MAX_HEADLINE = 200;
  const MAX_SUMMARY = 500;
  const MAX_PAYLOAD = 2048; // src/push/payload.rs MAX_PAYLOAD_BYTES
  const RECEIPT_ROOM = "~".repeat(42); // src/push/payload.rs RECEIPT_ROOM
  const POLL_MS = 1000;
  const WATCH_MAX_MS = 5 * 60 * 1000;
  const REQUEST_TIMEOUT_MS = 20000;
  // PATCH `push`: replace the notification quietly, alert again, or tickers only.
  const PUSH_MODES = ["quiet", "renotify", "none"];
  const PUSH_MODE_LABEL = { quiet: "pushQuiet", renotify: "pushRenotify", none: "pushNone" };
  const STEP_STATES_SETTLED = ["done", "cancelled"];
  const STORE = {
    token: "sondakika.console.token", // sessionStorage
    draft: "sondakika.console.draft", // localStorage
    edits: "sondakika.console.edits", // localStorage
    lang: "sondakika.console.lang", // localStorage
  };

  // ---------------------------------------------------------------- strings

  const STRINGS = {
    tr: {
      title: "sondakika · Editör konsolu",
      skip: "İçeriğe geç",
      console: "Editör konsolu",
      signOut: "Çıkış",
      signInTitle: "Giriş",
      signInHelp: "Editör anahtarınızı yapıştırın (sondakika token create ile oluşturulur). Anahtar yalnızca bu sekmede saklanır.",
      tokenLabel: "Editör anahtarı",
      signIn: "Giriş yap",
      signingIn: "Kontrol ediliyor…",
      tokenMissing: "Anahtarı yapıştırın.",
      tokenRejected: "Bu anahtar tanınmadı ya da iptal edilmiş.",
      sessionExpired: "Oturum geçersiz oldu; yeniden giriş yapın. Taslağınız saklandı, hiçbir şey kaybolmadı.",
      signedOut: "Çıkış yaptınız. Taslağınız bu tarayıcıda saklı.",
      composeTitle: "uyarısı hazırla",
      headline: "Başlık",
      summary: "Özet",
      url: "Haber bağlantısı (URL)",
      image: "Görsel URL (https)",
      topics: "Konular",
      topicsHelp: "Virgülle ayırın (gundem, burdur, spor). Boş bırakırsanız herkese gider.",
      required: "(zorunlu)",
      optional: "(isteğe bağlı)",
      pushSize: "Bildirim boyutu",
      bytes: "{n} / {max} bayt",
      sizeFits: "Sığıyor: bildirim olduğu gibi gider.",
      sizeNoImage: "2048 baytı aşıyor: görsel bildirimde gösterilmeyecek.",
      sizeCutBody: "2048 baytı aşıyor: özet bildirimde {n} karaktere kısaltılacak (şu an {of}).",
      sizeCutBodyNoImage: "2048 baytı aşıyor: görsel çıkarılacak, özet {n} karaktere kısaltılacak (şu an {of}).",
      sizeCutTitle: "2048 baytı aşıyor (bağlantı çok uzun): özet çıkarılacak, başlık kısaltılacak.",
      sizeDelivered: "Gidecek boyut: {n} bayt.",
      send: "SON DAKİKA olarak gönder",
      sending: "Gönderiliyor…",
      clearDraft: "Taslağı temizle",
      clearConfirm: "Taslaktaki her şey silinsin mi?",
      draftSaved: "Taslak bu tarayıcıda saklandı.",
      draftRestored: "Önceki taslağınız geri yüklendi.",
      preview: "Önizleme",
      previewNotification: "Bildirim",
      previewTicker: "Sitedeki şerit",
      notifPreviewLabel: "Bildirim önizlemesi",
      now: "şimdi",
      headlinePlaceholder: "Başlık burada görünecek",
      errHeadlineRequired: "Başlık zorunlu.",
      errUrlRequired: "Haber bağlantısı zorunlu.",
      errTooLong: "En çok {max} karakter olabilir (şu an {n}).",
      errForm: "Gönderilmedi. İşaretli alanları düzeltin; yazdıklarınız yerinde.",
      errProblem: "Sunucu isteği reddetti ({status}): {detail}",
      errNetwork: "Sunucuya ulaşılamadı, uyarı gönderilmemiş olabilir. Yazdıklarınız yerinde. Tekrar deneyin: aynı anahtar kullanıldığı için iki kez gönderilmez.",
      errNetworkShort: "Sunucuya ulaşılamadı. Tekrar deneyin.",
      errKeyReused: "Bu taslak, bağlantı koptuğunda farklı bir metinle zaten gönderilmiş olabilir. Son uyarılar listesine bakın; gerekirse oradan düzeltin. Bu metni yeni bir uyarı olarak göndermek için:",
      newKeySend: "Yeni uyarı olarak gönder",
      resultCreated: "Gönderildi.",
      resultReplayed: "Gönderildi. (Önceki denemeniz sunucuya ulaşmıştı; ikinci kez gönderilmedi.)",
      resultAlreadyLive: "Bu haberin zaten yayında bir SON DAKİKA uyarısı var; yeni uyarı gönderilmedi.",
      resultAlreadyLiveBy: "Yayında olan: “{headline}” ({who}, {time}).",
      correctWithDraft: "Yayındakini bu taslakla düzelt",
      confirmSendTitle: "Bu haberi SON DAKİKA olarak gönder?",
      confirmSend: "Gönder",
      cancel: "Vazgeç",
      audienceAll: "Herkese gidecek (konu yok).",
      audienceTopics: "Konular: {topics}",
      liveTitle: "Canlı dağıtım",
      fTickers: "Şeritlere ulaştı",
      fTargeted: "Push hedefi",
      fSent: "Gönderildi",
      fFailed: "Başarısız",
      fGone: "Abonelik bitmiş",
      fPending: "Bekliyor",
      fShown: "Gösterildi",
      fClicked: "Tıklandı",
      fSpeed: "Ulaşma süresi: hedeflerin %50 · %95 · %100'ü",
      pushOff: "Web Push bu sunucuda kapalı: yalnızca sitedeki şeritler.",
      pushScheduled: "Zamanlanmış: bildirimler yayın anında başlar.",
      pushTargets: "Web Push {state}: {targeted} abone hedeflendi · süresi geçen: {expired} · atlanan: {skipped}",
      pushState_planning: "planlanıyor",
      pushState_running: "gönderiliyor",
      pushState_sending: "gönderiliyor",
      pushState_waiting: "bekliyor",
      pushState_done: "tamamlandı",
      pushState_cancelled: "durduruldu (geri çekildi)",
      liveWatching: "İzleniyor, her saniye güncelleniyor…",
      liveDone: "Dağıtım tamamlandı; rakamlar değişmiyor. İzleme durdu.",
      liveTimeout: "Birkaç dakika geçti; izleme durdu.",
      liveRetracted: "Bu uyarı geri çekildi.",
      liveError: "Rakamlar alınamadı, yeniden deneniyor…",
      liveGone: "Bu uyarı bulunamadı.",
      livePaused: "İzleme duraklatıldı.",
      resume: "İzlemeye devam et",
      closeLive: "Kapat",
      chartSent: "gönderilen (toplam)",
      chartFailed: "başarısız (toplam)",
      chartTickers: "şeritler",
      chartLabel: "Zamana göre dağıtım: {sent} gönderildi, {failed} başarısız, {tickers} şerit, {secs} saniyede.",
      recent: "Son uyarılar",
      refresh: "Yenile",
      recentEmpty: "Henüz uyarı yok.",
      recentError: "Liste alınamadı: {detail}",
      statusLive: "Yayında",
      statusRetracted: "Geri çekildi",
      statusScheduled: "Zamanlanmış",
      statusExpired: "Süresi doldu",
      by: "{who}",
      readers: "{n} şerit",
      watch: "İzle",
      correct: "Düzelt",
      retract: "Geri çek",
      save: "Düzeltmeyi yayınla",
      saving: "Kaydediliyor…",
      noChange: "Değişiklik yok.",
      corrected: "Düzeltme yayınlandı.",
      retracted: "Uyarı geri çekildi.",
      retractedReason: "Gerekçe: {reason}",
      confirmRetractTitle: "Bu uyarıyı geri çek?",
      retractHelp: "Şeritlerden kaldırılır; okurların cihazlarındaki bildirim kapatılır (ya da yerine kısa bir “geri çekildi” notu gelir), henüz gönderilmemiş bildirimler durdurulur.",
      reason: "Gerekçe",
      pushChoice: "Okurların cihazlarındaki bildirim",
      pushQuiet: "Sessizce değiştir (ses ve titreşim yok)",
      pushRenotify: "Yeniden uyar (sesli, titreşimli)",
      pushNone: "Yalnızca şeritler (bildirimlere dokunma)",
      pushChoiceHelp: "Henüz gönderilmemiş bildirimler her durumda düzeltilmiş metinle gider.",
      correctedQuiet: "Düzeltme yayınlandı; okurların bildirimi sessizce değiştiriliyor.",
      correctedRenotify: "Düzeltme yayınlandı; okurlar yeniden uyarılıyor.",
      correctedNone: "Düzeltme yayınlandı; yalnızca şeritler (gönderilmiş bildirimler değişmedi).",
      retractedDevices: "Uyarı geri çekildi; okurların cihazlarındaki bildirim kaldırılıyor.",
      steps: "Bildirim adımları",
      stepsNone: "Henüz bildirim adımı yok.",
      kind_alert: "Uyarı",
      kind_correction: "Düzeltme",
      kind_retraction: "Geri çekme",
      reach_alert: "uyarı {n} cihaza ulaştı",
      reach_correction: "düzeltme {n} cihaza ulaştı",
      reach_retraction: "geri çekme {n} cihaza ulaştı",
      stepRevision: "sürüm {n}",
      stepQuiet: "sessiz",
      stepRenotify: "yeniden uyarır",
      stepState_waiting: "bekliyor",
      stepWaiting: "Birkaç saniye içinde gelen başka düzeltmeler bu adıma katılır; okurlara yalnızca sonuncusu gider.",
      stepState_planning: "planlanıyor",
      stepState_running: "gönderiliyor",
      stepState_sending: "gönderiliyor",
      stepState_done: "tamamlandı",
      stepState_cancelled: "durduruldu",
      stepFigures: "hedef {targeted} · bekliyor {pending} · başarısız {failed} · abonelik bitmiş {gone} · atlanan {skipped}",
      stepSpeed: "%50 · %95 · %100: {a} · {b} · {c}",
      editHeadline: "Düzeltilmiş başlık",
      editSummary: "Düzeltilmiş özet",
      editUrl: "Düzeltilmiş bağlantı",
      topicsAll: "herkes",
      seconds: "{n} sn",
      ms: "{n} ms",
    },
    en: {
      title: "sondakika · Editor console",
      skip: "Skip to content",
      console: "Editor console",
      signOut: "Sign out",
      signInTitle: "Sign in",
      signInHelp: "Paste your editor token (created with sondakika token create). It is kept in this tab only.",
      tokenLabel: "Editor token",
      signIn: "Sign in",
      signingIn: "Checking…",
      tokenMissing: "Paste the token.",
      tokenRejected: "This token is unknown or has been revoked.",
      sessionExpired: "Your session is no longer valid; sign in again. Your draft is kept, nothing was lost.",
      signedOut: "Signed out. Your draft is kept in this browser.",
      composeTitle: "— new alert",
      headline: "Headline",
      summary: "Summary",
      url: "Article link (URL)",
      image: "Image URL (https)",
      topics: "Topics",
      topicsHelp: "Comma-separated (gundem, burdur, spor). Leave empty to reach everyone.",
      required: "(required)",
      optional: "(optional)",
      pushSize: "Push size",
      bytes: "{n} / {max} bytes",
      sizeFits: "Fits: the notification goes out as written.",
      sizeNoImage: "Over 2048 bytes: the image will be left out of the notification.",
      sizeCutBody: "Over 2048 bytes: the summary will be shortened to {n} characters in the notification (now {of}).",
      sizeCutBodyNoImage: "Over 2048 bytes: the image is left out and the summary shortened to {n} characters (now {of}).",
      sizeCutTitle: "Over 2048 bytes (the link is very long): the summary is dropped and the headline shortened.",
      sizeDelivered: "Delivered size: {n} bytes.",
      send: "Send as SON DAKİKA",
      sending: "Sending…",
      clearDraft: "Clear draft",
      clearConfirm: "Delete everything in the draft?",
      draftSaved: "Draft saved in this browser.",
      draftRestored: "Your previous draft was restored.",
      preview: "Preview",
      previewNotification: "Notification",
      previewTicker: "Ticker on the site",
      notifPreviewLabel: "Notification preview",
      now: "now",
      headlinePlaceholder: "The headline appears here",
      errHeadlineRequired: "The headline is required.",
      errUrlRequired: "The article link is required.",
      errTooLong: "At most {max} characters (now {n}).",
      errForm: "Not sent. Fix the marked fields; what you typed is still here.",
      errProblem: "The server refused the request ({status}): {detail}",
      errNetwork: "The server could not be reached; the alert may not have gone out. What you typed is still here. Try again: the same key is used, so it cannot go out twice.",
      errNetworkShort: "The server could not be reached. Try again.",
      errKeyReused: "This draft may already have gone out with different text when the connection dropped. Check Recent alerts and correct it there if needed. To send this text as a new alert:",
      newKeySend: "Send as a new alert",
      resultCreated: "Sent.",
      resultReplayed: "Sent. (Your earlier attempt had reached the server; it was not sent twice.)",
      resultAlreadyLive: "This article already has a live SON DAKİKA alert; no new alert was sent.",
      resultAlreadyLiveBy: "Live now: “{headline}” ({who}, {time}).",
      correctWithDraft: "Correct the live one with this draft",
      confirmSendTitle: "Send this story as SON DAKİKA (breaking news)?",
      confirmSend: "Send",
      cancel: "Cancel",
      audienceAll: "Goes to everyone (no topics).",
      audienceTopics: "Topics: {topics}",
      liveTitle: "Live delivery",
      fTickers: "Tickers reached",
      fTargeted: "Push targets",
      fSent: "Sent",
      fFailed: "Failed",
      fGone: "Gone",
      fPending: "Pending",
      fShown: "Shown",
      fClicked: "Clicked",
      fSpeed: "Time until 50 · 95 · 100 % of targets",
      pushOff: "Web Push is off on this server: tickers on the site only.",
      pushScheduled: "Scheduled: pushes start when it goes live.",
      pushTargets: "Web Push {state}: {targeted} subscribers targeted · expired: {expired} · skipped: {skipped}",
      pushState_planning: "planning",
      pushState_running: "sending",
      pushState_sending: "sending",
      pushState_waiting: "waiting",
      pushState_done: "finished",
      pushState_cancelled: "stopped (retracted)",
      liveWatching: "Watching, updated every second…",
      liveDone: "Delivery finished; the figures stopped changing. Stopped watching.",
      liveTimeout: "A few minutes have passed; stopped watching.",
      liveRetracted: "This alert was retracted.",
      liveError: "Could not get the figures, retrying…",
      liveGone: "This alert was not found.",
      livePaused: "Watching paused.",
      resume: "Keep watching",
      closeLive: "Close",
      chartSent: "sent (cumulative)",
      chartFailed: "failed (cumulative)",
      chartTickers: "tickers",
      chartLabel: "Delivery over time: {sent} sent, {failed} failed, {tickers} tickers, in {secs} seconds.",
      recent: "Recent alerts",
      refresh: "Refresh",
      recentEmpty: "No alerts yet.",
      recentError: "Could not load the list: {detail}",
      statusLive: "Live",
      statusRetracted: "Retracted",
      statusScheduled: "Scheduled",
      statusExpired: "Expired",
      by: "{who}",
      readers: "{n} tickers",
      watch: "Watch",
      correct: "Correct",
      retract: "Retract",
      save: "Publish correction",
      saving: "Saving…",
      noChange: "Nothing changed.",
      corrected: "Correction published.",
      retracted: "Alert retracted.",
      retractedReason: "Reason: {reason}",
      confirmRetractTitle: "Retract this alert?",
      retractHelp: "It is removed from tickers; the notification on readers' devices is closed (or replaced by a short “withdrawn” notice), and pushes not yet sent are stopped.",
      reason: "Reason",
      pushChoice: "The notification on readers' devices",
      pushQuiet: "Replace it quietly (no sound or vibration)",
      pushRenotify: "Alert again (with sound and vibration)",
      pushNone: "Tickers only (leave notifications alone)",
      pushChoiceHelp: "Pushes not yet sent go out with the corrected text in any case.",
      correctedQuiet: "Correction published; readers' notifications are being replaced quietly.",
      correctedRenotify: "Correction published; readers are being alerted again.",
      correctedNone: "Correction published; tickers only (notifications already sent are unchanged).",
      retractedDevices: "Alert retracted; the notification is being removed from readers' devices.",
      steps: "Push steps",
      stepsNone: "No push step yet.",
      kind_alert: "Alert",
      kind_correction: "Correction",
      kind_retraction: "Retraction",
      reach_alert: "alert reached {n} {devices}",
      reach_correction: "correction reached {n} {devices}",
      reach_retraction: "retraction reached {n} {devices}",
      device: "device",
      devices: "devices",
      stepRevision: "revision {n}",
      stepQuiet: "quiet",
      stepRenotify: "alerts again",
      stepState_waiting: "waiting",
      stepWaiting: "Further corrections within a few seconds join this step; readers get only the last one.",
      stepState_planning: "planning",
      stepState_running: "sending",
      stepState_sending: "sending",
      stepState_done: "finished",
      stepState_cancelled: "stopped",
      stepFigures: "targeted {targeted} · pending {pending} · failed {failed} · gone {gone} · skipped {skipped}",
      stepSpeed: "50 · 95 · 100 %: {a} · {b} · {c}",
      editHeadline: "Corrected headline",
      editSummary: "Corrected summary",
      editUrl: "Corrected link",
      topicsAll: "everyone",
      seconds: "{n} s",
      ms: "{n} ms",
    },
  };

  // ---------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);
  const enc = new TextEncoder();
  /** Characters as the server counts them (Unicode scalar values, not UTF-16 units or bytes). */
  const charCount = (s) => Array.from(s).length;
  const utf8Length = (s) => enc.encode(s).length;

  function storageGet(area, key) {
    try {
      return area.getItem(key);
    } catch {
      return null;
    }
  }
  function storageSet(area, key, value) {
    try {
      if (value === null) area.removeItem(key);
      else area.setItem(key, value);
      return true;
    } catch {
      return false;
    }
  }
  function readJson(key, fallback) {
    try {
      const v = JSON.parse(storageGet(localStorage, key) || "null");
      return v && typeof v === "object" ? v : fallback;
    } catch {
      return fallback;
    }
  }

  /** A random UUID v4 (crypto.randomUUID needs a secure context; getRandomValues does not). */
  function newKey() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  let lang = "tr";
  function t(key, vars) {
    let s = (STRINGS[lang] && STRINGS[lang][key]) ?? STRINGS.tr[key] ?? key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return s;
  }
  const locale = () => (lang === "tr" ? "tr-TR" : "en-GB");
  const num = (n) => new Intl.NumberFormat(locale()).format(n);

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    const opts = today
      ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
      : { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" };
    return new Intl.DateTimeFormat(locale(), opts).format(d);
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1000) return t("ms", { n: num(ms) });
    return t("seconds", { n: new Intl.NumberFormat(locale(), { maximumFractionDigits: 1 }).format(ms / 1000) });
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
    return e;
  }

  function hostOf(url) {
    try {
      return new URL(url).host;
    } catch {
      return "";
    }
  }

  // ---------------------------------------------------------------- the API

  class Unauthorized extends Error {}
  class NetworkError extends Error {}

  let token = storageGet(sessionStorage, STORE.token);

  /**
   * One API call. Resolves with { status, body, headers } for every HTTP answer except 401,
   * which returns the console to sign-in (keeping everything typed) and throws Unauthorized.
   * A network failure or timeout throws NetworkError.
   */
  async function api(method, path, body, extraHeaders, { auth = token, on401 = true } = {}) {
    const headers = { Accept: "application/json", ...(extraHeaders || {}) };
    if (auth) headers.Authorization = `Bearer ${auth}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
    let r;
    try {
      r = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (e) {
      throw new NetworkError(e && e.message);
    } finally {
      clearTimeout(timer);
    }
    let parsed = null;
    try {
      const text = await r.text();
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (r.status === 401 && on401) {
      sessionExpired();
      throw new Unauthorized();
    }
    return { status: r.status, body: parsed, headers: r.headers };
  }

  const detailOf = (r) => (r.body && (r.body.detail || r.body.title)) || `HTTP ${r.status}`;

  // ---------------------------------------------------------------- language

  function chooseLanguage() {
    const stored = storageGet(localStorage, STORE.lang);
    if (stored === "tr" || stored === "en") return stored;
    for (const l of navigator.languages || [navigator.language || ""]) {
      const p = String(l).toLowerCase();
      if (p.startsWith("tr")) return "tr";
      if (p.startsWith("en")) return "en";
    }
    return "tr";
  }

  function applyLanguage(next) {
    lang = next;
    document.documentElement.lang = lang;
    document.title = t("title");
    for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
    for (const b of document.querySelectorAll(".lang button")) {
      b.setAttribute("aria-pressed", String(b.dataset.lang === lang));
    }
    $("notif").setAttribute("aria-label", t("notifPreviewLabel"));
    updateCompose();
    renderLive();
    renderRecent(true);
    if (state.signinNotice) showSigninNotice(state.signinNotice);
    if (state.composeResult) showResult(state.composeResult);
  }

  // ---------------------------------------------------------------- state

  const state = {
    me: null,
    pushEnabled: null, // from GET /api/v1/push/vapid-public-key: 200 on, 503 off
    draft: null, // { headline, summary, url, image, topics, key }
    sending: false,
    recent: [],
    maxSeq: 0,
    edits: readJson(STORE.edits, {}), // alert id -> { headline, summary, url }
    editErrors: {}, // alert id -> message
    retractTarget: null,
    watch: null,
    signinNotice: null,
    composeResult: null,
    recentTimer: null,
  };

  // ---------------------------------------------------------------- sign in

  function showSignin(noticeKey) {
    state.signinNotice = noticeKey || null;
    $("app").hidden = true;
    $("who").hidden = true;
    $("signin").hidden = false;
    showSigninNotice(noticeKey);
    $("token").focus();
  }

  function showSigninNotice(key) {
    const n = $("signin-notice");
    n.hidden = !key;
    n.textContent = key ? t(key) : "";
  }

  function setTokenError(msg) {
    const e = $("token-error");
    e.hidden = !msg;
    e.textContent = msg || "";
    $("token").setAttribute("aria-invalid", msg ? "true" : "false");
  }

  async function signIn(candidate, { quiet = false } = {}) {
    const button = $("signin-button");
    button.disabled = true;
    button.textContent = t("signingIn");
    setTokenError(null);
    try {
      const r = await api("GET", "/me", undefined, null, { auth: candidate, on401: false });
      if (r.status === 200 && r.body && r.body.name) {
        token = candidate;
        storageSet(sessionStorage, STORE.token, token);
        state.me = r.body;
        $("token").value = "";
        enterApp();
        return;
      }
      if (r.status === 401) {
        token = null;
        storageSet(sessionStorage, STORE.token, null);
        setTokenError(`${t("tokenRejected")} (${detailOf(r)})`);
      } else {
        setTokenError(t("errProblem", { status: r.status, detail: detailOf(r) }));
      }
    } catch {
      setTokenError(t("errNetworkShort"));
      if (quiet) $("token").value = candidate;
    } finally {
      button.disabled = false;
      button.textContent = t("signIn");
    }
    showSignin(state.signinNotice);
  }

  function enterApp() {
    state.signinNotice = null;
    $("signin").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = state.me.name;
    $("who-name").title = state.me.role || "";
    loadRecent();
    checkPush();
    clearInterval(state.recentTimer);
    state.recentTimer = setInterval(() => {
      if (document.visibilityState === "visible" && token) loadRecent();
    }, 20000);
    if (state.watch && !state.watch.done) pollSoon(0);
    $("headline").focus();
  }

  /** Whether Web Push is on: alert figures carry a `push` object either way. */
  async function checkPush() {
    try {
      const r = await api("GET", "/push/vapid-public-key", undefined, null, { auth: null, on401: false });
      state.pushEnabled = r.status === 200 ? true : r.status === 503 ? false : null;
    } catch {
      state.pushEnabled = null;
    }
    renderLive();
  }

  /** A 401 at any moment: back to sign-in, everything typed stays where it is. */
  function sessionExpired() {
    token = null;
    storageSet(sessionStorage, STORE.token, null);
    clearInterval(state.recentTimer);
    if (state.watch) clearTimeout(state.watch.timer);
    showSignin("sessionExpired");
  }

  function signOut() {
    token = null;
    state.me = null;
    storageSet(sessionStorage, STORE.token, null);
    clearInterval(state.recentTimer);
    if (state.watch) clearTimeout(state.watch.timer);
    showSignin("signedOut");
  }

  // ---------------------------------------------------------------- the draft

  const FIELDS = ["headline", "summary", "url", "image", "topics"];

  function loadDraft() {
    const d = readJson(STORE.draft, null);
    const draft = { headline: "", summary: "", url: "", image: "", topics: "", key: null };
    if (d) for (const k of [...FIELDS, "key"]) if (typeof d[k] === "string") draft[k] = d[k];
    return draft;
  }

  function draftIsEmpty(d) {
    return FIELDS.every((f) => !d[f]);
  }

  function saveDraft() {
    const d = state.draft;
    if (draftIsEmpty(d) && !d.key) {
      storageSet(localStorage, STORE.draft, null);
      $("draft-state").textContent = "";
      return;
    }
    if (!d.key) d.key = newKey();
    storageSet(localStorage, STORE.draft, JSON.stringify(d));
    $("draft-state").textContent = t("draftSaved");
  }

  function fillForm() {
    for (const f of FIELDS) $(f).value = state.draft[f];
  }

  /** Topic slugs as the server wants them: lowercase ASCII (Gündem → gundem), no repeats. */
  function parseTopics(text) {
    const map = { ç: "c", ğ: "g", ı: "i", i̇: "i", ö: "o", ş: "s", ü: "u", â: "a", î: "i", û: "u" };
    const out = [];
    for (const raw of text.split(/[\s,;]+/)) {
      if (!raw) continue;
      let s = raw.replace(/İ/g, "i").replace(/I/g, "i").toLowerCase();
      s = s.replace(/[çğıöşüâîû]|i̇/g, (c) => map[c] || c);
      if (!out.includes(s)) out.push(s);
    }
    return out;
  }

  /** The POST body for the draft; headline and summary byte-exact, links trimmed. */
  function alertBody(d) {
    const body = { headline: d.headline, url: d.url.trim() };
    if (d.summary.trim()) body.summary = d.summary;
    if (d.image.trim()) body.image = d.image.trim();
    body.topics = parseTopics(d.topics);
    return body;
  }

  // ---------------------------------------------------------------- the push-size estimate

  /** Shortens to at most `n` characters, marking the cut with "…" (payload.rs `shorten`). */
  function shorten(s, n) {
    const c = Array.from(s);
    if (c.length <= n) return s;
    return c.slice(0, Math.max(0, n - 1)).join("") + "…";
  }

  /**
   * The push payload as src/push/payload.rs builds it, and what build() does to make it fit
   * 2048 bytes: drop the image, then shorten the body, then the title. The alert id is a UUID
   * (36 characters whatever its value), the seq is the next one we expect, and room is kept for
   * the longest receipt token (payload.rs RECEIPT_ROOM, 42 characters).
   */
  function estimatePayload(body) {
    const id = "00000000-0000-7000-8000-000000000000";
    const seq = state.maxSeq + 1;
    const topics = [...new Set(body.topics)].sort();
    const timestamp = Date.now();
    const titleFull = `${LABEL}: ${body.headline}`;
    const bodyFull = body.summary || "";
    const image = body.image || null;
    const render = (title, text, withImage) => {
      const n = { title, body: text, navigate: body.url, lang: "tr", tag: `sondakika-${id}` };
      if (withImage && image !== null) n.image = image;
      n.timestamp = timestamp;
      n.data = { kind: "alert", id, seq, label: LABEL, topics, receipt: RECEIPT_ROOM };
      return utf8Length(JSON.stringify({ web_push: 8030, notification: n }));
    };
    const full = render(titleFull, bodyFull, true);
    const result = { full, size: full, title: titleFull, body: bodyFull, image, cut: null, bodyChars: null };
    if (full <= MAX_PAYLOAD) return result;
    const noImage = render(titleFull, bodyFull, false);
    result.image = null;
    if (noImage <= MAX_PAYLOAD) return { ...result, size: noImage, cut: image ? "image" : null };
    const fits = (title, chars) => {
      const size = render(title, shorten(bodyFull, chars), false);
      return size <= MAX_PAYLOAD ? size : null;
    };
    let lo = 0;
    let hi = charCount(bodyFull);
    let best = null;
    while (lo <= hi) {
      const mid = Math.floor((lo + hi) / 2);
      const size = fits(titleFull, mid);
      if (size !== null) {
        best = { size, chars: mid };
        lo = mid + 1;
      } else if (mid === 0) break;
      else hi = mid - 1;
    }
    if (best) {
      return {
        ...result,
        size: best.size,
        body: shorten(bodyFull, best.chars),
        bodyChars: best.chars,
        cut: image ? "body+image" : "body",
      };
    }
    for (let n = charCount(titleFull); n >= 1; n -= 10) {
      const title = shorten(titleFull, n);
      const size = fits(title, 0);
      if (size !== null) return { ...result, size, title, body: shorten(bodyFull, 0), cut: "title" };
    }
    return { ...result, size: render(shorten(LABEL, 40), "", false), title: LABEL, body: "", cut: "title" };
  }

  // ---------------------------------------------------------------- compose: live feedback

  function setCounter(id, n, max) {
    const c = $(id);
    c.textContent = `${n} / ${max}`;
    c.classList.toggle("over", n > max);
  }

  function updateCompose() {
    if (!state.draft) return;
    const d = state.draft;
    const hl = charCount(d.headline);
    const sm = charCount(d.summary);
    setCounter("headline-count", hl, MAX_HEADLINE);
    setCounter("summary-count", sm, MAX_SUMMARY);

    const body = alertBody(d);
    const est = estimatePayload(body);
    $("size-figure").textContent = t("bytes", { n: num(est.full), max: num(MAX_PAYLOAD) });
    const bar = $("size-bar");
    bar.style.width = `${Math.min(100, (est.full / MAX_PAYLOAD) * 100)}%`;
    bar.classList.toggle("over", est.full > MAX_PAYLOAD);
    let note;
    switch (est.cut) {
      case null:
        note = t("sizeFits");
        break;
      case "image":
        note = t("sizeNoImage");
        break;
      case "body":
        note = t("sizeCutBody", { n: est.bodyChars, of: sm });
        break;
      case "body+image":
        note = t("sizeCutBodyNoImage", { n: est.bodyChars, of: sm });
        break;
      default:
        note = t("sizeCutTitle");
    }
    if (est.cut) note += ` ${t("sizeDelivered", { n: num(est.size) })}`;
    const noteEl = $("size-note");
    noteEl.textContent = note;
    noteEl.classList.toggle("warn", !!est.cut);
    $("size-figure").classList.toggle("warn", !!est.cut);

    // Preview: exactly what will be delivered.
    const hasHeadline = d.headline.trim() !== "";
    const title = $("notif-title");
    title.textContent = hasHeadline ? est.title : `${LABEL}: ${t("headlinePlaceholder")}`;
    title.classList.toggle("placeholder", !hasHeadline);
    $("notif-body").textContent = est.body;
    $("notif-body").hidden = !est.body;
    $("notif-site").textContent = hostOf(body.url) || location.host;
    const img = $("notif-image");
    const imgUrl = est.image && /^https:\/\//i.test(est.image) ? est.image : "";
    if (img.getAttribute("src") !== imgUrl) {
      if (imgUrl) img.src = imgUrl;
      else img.removeAttribute("src");
    }
    img.hidden = !imgUrl;
    const th = $("ticker-headline");
    th.textContent = hasHeadline ? d.headline : t("headlinePlaceholder");
    th.classList.toggle("placeholder", !hasHeadline);
  }

  // ---------------------------------------------------------------- compose: errors

  /** Field names in problems → the inputs that show them. */
  function fieldInput(field) {
    const f = String(field || "").replace(/\[\d+\]$/, "");
    return FIELDS.includes(f) ? f : null;
  }

  function setFieldError(prefix, field, message) {
    const input = $(`${prefix}${field}`);
    const err = $(`${prefix}${field}-error`);
    if (!input || !err) return false;
    err.hidden = !message;
    err.textContent = message || "";
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
    input.closest(".field")?.classList.toggle("invalid", !!message);
    return true;
  }

  function clearComposeErrors() {
    for (const f of FIELDS) setFieldError("", f, null);
    const fe = $("compose-error");
    fe.hidden = true;
    fe.replaceChildren();
  }

  function showFormError(...nodes) {
    const fe = $("compose-error");
    fe.replaceChildren(...nodes);
    fe.hidden = false;
  }

  /** Shows a problem+json answer: every field at fault next to its input, the rest above. */
  function showProblem(r) {
    const p = r.body || {};
    const errors = Array.isArray(p.errors) && p.errors.length ? p.errors : p.field ? [{ field: p.field, message: p.detail }] : [];
    let first = null;
    const unplaced = [];
    const byField = {};
    for (const e of errors) {
      const f = fieldInput(e.field);
      if (f) {
        byField[f] = byField[f] ? `${byField[f]}; ${e.message}` : e.message;
        first = first || f;
      } else unplaced.push(e);
    }
    for (const [f, m] of Object.entries(byField)) setFieldError("", f, m);
    if (unplaced.some((e) => e.field === "Idempotency-Key")) {
      showFormError(
        t("errKeyReused"),
        " ",
        el("button", { type: "button", class: "quiet", text: t("newKeySend"), onclick: () => {
          state.draft.key = newKey();
          saveDraft();
          openConfirm();
        } }),
      );
      loadRecent();
    } else {
      showFormError(t("errProblem", { status: r.status, detail: p.detail || detailOf(r) }));
    }
    if (first) $(first).focus();
  }

  function validateDraft() {
    const d = state.draft;
    const problems = {};
    const hl = charCount(d.headline);
    if (!d.headline.trim()) problems.headline = t("errHeadlineRequired");
    else if (hl > MAX_HEADLINE) problems.headline = t("errTooLong", { max: MAX_HEADLINE, n: hl });
    const sm = charCount(d.summary);
    if (sm > MAX_SUMMARY) problems.summary = t("errTooLong", { max: MAX_SUMMARY, n: sm });
    if (!d.url.trim()) problems.url = t("errUrlRequired");
    return problems;
  }

  // ---------------------------------------------------------------- compose: send

  function openConfirm() {
    clearComposeErrors();
    const problems = validateDraft();
    const fields = Object.keys(problems);
    if (fields.length) {
      for (const f of fields) setFieldError("", f, problems[f]);
      showFormError(t("errForm"));
      $(fields[0]).focus();
      return;
    }
    const topics = alertBody(state.draft).topics;
    $("confirm-headline").textContent = state.draft.headline;
    $("confirm-audience").textContent = topics.length
      ? t("audienceTopics", { topics: topics.join(", ") })
      : t("audienceAll");
    const dlg = $("confirm-send");
    dlg.returnValue = "";
    dlg.showModal();
    $("confirm-send-button").focus();
  }

  function setSending(on) {
    state.sending = on;
    const b = $("send");
    b.disabled = on;
    b.setAttribute("aria-busy", String(on));
    b.firstElementChild.textContent = on ? t("sending") : t("send");
    for (const f of FIELDS) $(f).readOnly = on;
  }

  async function send() {
    if (state.sending) return;
    clearComposeErrors();
    hideResult();
    const d = state.draft;
    if (!d.key) d.key = newKey();
    saveDraft();
    const key = d.key;
    const body = alertBody(d);
    setSending(true);
    try {
      const r = await api("POST", "/alerts", body, { "Idempotency-Key": key });
      if ((r.status === 201 || r.status === 200) && r.body && r.body.id) {
        const replayed = r.headers.get("idempotent-replayed") === "true";
        if (r.status === 201) {
          // Sent: the draft is done.
          state.draft = { headline: "", summary: "", url: "", image: "", topics: "", key: null };
          fillForm();
          saveDraft();
        } else if (state.draft.key === key) {
          // Already live: keep the text (it may become a correction), but this key is spent.
          state.draft.key = newKey();
          saveDraft();
        }
        updateCompose();
        showResult({ status: r.status, replayed, alert: r.body, draft: r.status === 200 ? body : null });
        startWatch(r.body, true);
        loadRecent();
      } else {
        showProblem(r);
      }
    } catch (e) {
      if (!(e instanceof Unauthorized)) showFormError(t("errNetwork"));
    } finally {
      setSending(false);
    }
  }

  function hideResult() {
    state.composeResult = null;
    const box = $("compose-result");
    box.hidden = true;
    box.replaceChildren();
  }

  function showResult(res) {
    state.composeResult = res;
    const box = $("compose-result");
    const a = res.alert;
    box.className = `result ${res.status === 201 ? "ok" : "warn"}`;
    if (res.status === 201) {
      box.replaceChildren(el("strong", { text: res.replayed ? t("resultReplayed") : t("resultCreated") }), " ", el("q", { text: a.headline }));
    } else {
      const nodes = [
        el("strong", { text: t("resultAlreadyLive") }),
        el("br"),
        t("resultAlreadyLiveBy", { headline: a.headline, who: a.created_by || "?", time: fmtTime(a.published_at || a.created_at) }),
      ];
      if (res.draft && a.status !== "retracted") {
        nodes.push(" ", el("button", { type: "button", class: "quiet", text: t("correctWithDraft"), onclick: () => {
          const d = state.draft;
          state.edits[a.id] = { headline: d.headline, summary: d.summary, url: d.url.trim() };
          saveEdits();
          renderRecent(true);
          rowOf(a.id)?.querySelector(`input`)?.focus();
        } }));
      }
      box.replaceChildren(...nodes);
    }
    box.hidden = false;
  }

  // ---------------------------------------------------------------- live figures

  function startWatch(alert, focus) {
    if (state.watch) clearTimeout(state.watch.timer);
    state.watch = {
      id: alert.id,
      alert,
      started: Date.now(),
      // The chart's zero: publication, unless that was long ago (then: now).
      origin: (() => {
        const published = Date.parse(alert.published_at || "");
        return published && Date.now() - published < 60000 ? published : Date.now();
      })(),
      samples: [],
      unchanged: 0,
      lastKey: null,
      done: null,
      error: false,
      timer: null,
    };
    $("live-card").hidden = false;
    renderLive();
    pollSoon(0);
    if (focus) {
      $("live-card").scrollIntoView({ block: "nearest", behavior: "instant" });
      $("live-title").focus({ preventScroll: true });
    }
  }

  /**
   * After a correction or retraction of an alert: follow its new push step in the live panel,
   * keeping the chart if that alert is the one being watched already.
   */
  function watchAgain(alert) {
    const w = state.watch;
    if (!w || w.id !== alert.id) return startWatch(alert, false);
    w.alert = { ...w.alert, ...alert };
    w.done = null;
    w.started = Date.now();
    w.unchanged = 0;
    renderLive();
    pollSoon(0);
  }

  function pollSoon(ms) {
    const w = state.watch;
    if (!w) return;
    clearTimeout(w.timer);
    w.timer = setTimeout(() => poll(w), ms);
  }

  async function poll(w) {
    if (state.watch !== w || w.done || !token) return;
    try {
      const r = await api("GET", `/alerts/${w.id}`);
      if (state.watch !== w) return;
      if (r.status === 200 && r.body) {
        w.error = false;
        w.alert = r.body;
        const p = pushOf(r.body);
        const sample = {
          t: Math.max(0, Date.now() - w.origin) / 1000,
          tickers: r.body.delivery ? r.body.delivery.tickers_reached : 0,
          sent: p ? p.sent : 0,
          failed: p ? p.failed : 0,
        };
        w.samples.push(sample);
        const steps = stepsOf(r.body);
        const key = JSON.stringify([r.body.status, r.body.delivery, p, steps]);
        w.unchanged = key === w.lastKey ? w.unchanged + 1 : 0;
        w.lastKey = key;
        // Settled once every step has finished (a correction waiting to coalesce has not).
        const settled =
          (!p || p.state === "done" || p.state === "cancelled" || (p.pending === 0 && p.state !== "planning")) &&
          steps.every((st) => STEP_STATES_SETTLED.includes(st.state));
        const elapsed = Date.now() - w.started;
        // Tickers are counted once a second; give late counts and receipts a few seconds.
        if (r.body.status !== "scheduled" && settled && w.unchanged >= 5 && elapsed >= 10000) w.done = "done";
        else if (elapsed >= WATCH_MAX_MS) w.done = "timeout";
      } else if (r.status === 404) {
        w.done = "gone";
      } else {
        w.error = true;
      }
    } catch (e) {
      if (e instanceof Unauthorized) return;
      w.error = true;
      if (Date.now() - w.started >= WATCH_MAX_MS) w.done = "timeout";
    }
    renderLive();
    if (!w.done) pollSoon(POLL_MS);
  }

  /** The alert's push steps, oldest first: the original, each correction, the retraction. */
  function stepsOf(a) {
    return state.pushEnabled === false || !Array.isArray(a.push_steps) ? [] : a.push_steps;
  }

  /** The alert's push figures, or null when Web Push is off (or the alert not yet published). */
  function pushOf(a) {
    return state.pushEnabled === false ? null : a.push || null;
  }

  function setFigure(id, value) {
    const e = $(id);
    const text = String(value);
    if (e.textContent !== text) e.textContent = text;
  }

  function renderLive() {
    const w = state.watch;
    if (!w) return;
    const a = w.alert;
    const p = pushOf(a);
    $("live-headline").textContent = a.headline || "";
    $("live-card").dataset.watching = a.id;
    setFigure("f-tickers", num(a.delivery ? a.delivery.tickers_reached : 0));
    const dash = "–";
    setFigure("f-targeted", p ? num(p.targeted) : dash);
    setFigure("f-sent", p ? num(p.sent) : dash);
    setFigure("f-failed", p ? num(p.failed) : dash);
    setFigure("f-gone", p ? num(p.gone) : dash);
    setFigure("f-pending", p ? num(p.pending) : dash);
    setFigure("f-shown", p ? num(p.shown) : dash);
    setFigure("f-clicked", p ? num(p.clicked) : dash);
    setFigure("f-speed", p ? `${fmtMs(p.ms_to_50)} · ${fmtMs(p.ms_to_95)} · ${fmtMs(p.ms_to_100)}` : dash);
    $("f-failed").classList.toggle("warn", !!(p && p.failed));
    let pushNote = "";
    if (state.pushEnabled === false) pushNote = t("pushOff");
    else if (p) {
      pushNote = t("pushTargets", {
        state: STRINGS[lang][`pushState_${p.state}`] || p.state || "",
        targeted: num(p.targeted),
        expired: num(p.expired),
        skipped: num(p.skipped),
      });
    } else if (a.status === "scheduled") pushNote = t("pushScheduled");
    else if (a.status) pushNote = t("pushOff");
    $("push-note").textContent = pushNote;
    $("figures").classList.toggle("no-push", !p && !!a.status);

    let stateText = t("liveWatching");
    if (w.done === "done") stateText = t("liveDone");
    else if (w.done === "timeout") stateText = t("liveTimeout");
    else if (w.done === "gone") stateText = t("liveGone");
    else if (w.error) stateText = t("liveError");
    else if (!token) stateText = t("livePaused");
    if (a.status === "retracted") stateText = `${t("liveRetracted")} ${stateText}`;
    const st = $("live-state");
    if (st.textContent !== stateText) st.textContent = stateText;
    renderSteps(stepsOf(a));
    $("live-resume").hidden = !(w.done === "done" || w.done === "timeout");
    drawChart(w);
  }

  /** "düzeltme 12.430 cihaza ulaştı": how many devices one step reached (push service accepted). */
  function reachText(step) {
    const n = step.sent || 0;
    return t(`reach_${step.kind}`, { n: num(n), devices: t(n === 1 ? "device" : "devices") });
  }

  /**
   * One line per push step, with its state, what it reached and its 50/95/100 % times. Lines are
   * rebuilt only when their figures change, so a screen reader's place is not lost every second.
   */
  function renderSteps(steps) {
    const box = $("steps-box");
    box.hidden = steps.length === 0;
    const list = $("steps");
    const rows = steps.map((step) => {
      const sig = JSON.stringify([step, lang]);
      const old = list.querySelector(`:scope > [data-step="${step.step}"]`);
      if (old && old.dataset.sig === sig) return old;
      const settled = STEP_STATES_SETTLED.includes(step.state);
      const share = step.targeted > 0 ? Math.min(1, (step.targeted - (step.pending || 0)) / step.targeted) : settled ? 1 : 0;
      const mode = step.kind === "correction" ? t(step.quiet ? "stepQuiet" : "stepRenotify") : null;
      const li = el(
        "li",
        { class: `step step-${step.kind} state-${step.state}`, "data-step": step.step, "data-kind": step.kind, "data-state": step.state },
        el(
          "div",
          { class: "step-head" },
          el("strong", { class: "step-kind", text: t(`kind_${step.kind}`) || step.kind }),
          step.kind === "alert" ? null : el("span", { class: "muted", text: t("stepRevision", { n: num(step.revision || 0) }) }),
          mode ? el("span", { class: "step-mode", text: mode }) : null,
          el("span", { class: `step-state badge state-${step.state}`, text: t(`stepState_${step.state}`) }),
          step.requested_at ? el("time", { datetime: step.requested_at, text: fmtTime(step.requested_at) }) : null,
        ),
        el("p", { class: "step-reach", text: reachText(step) }),
        step.state === "waiting" && step.kind === "correction" ? el("p", { class: "step-waiting small muted", text: t("stepWaiting") }) : null,
        el("div", { class: "bar", "aria-hidden": "true" }, el("div", { class: "step-bar", style: `width: ${(share * 100).toFixed(1)}%` })),
        el("p", { class: "step-figures small muted", text: t("stepFigures", {
          targeted: num(step.targeted || 0),
          pending: num(step.pending || 0),
          failed: num(step.failed || 0),
          gone: num(step.gone || 0),
          skipped: num(step.skipped || 0),
        }) }),
        el("p", { class: "step-speed small", text: t("stepSpeed", { a: fmtMs(step.ms_to_50), b: fmtMs(step.ms_to_95), c: fmtMs(step.ms_to_100) }) }),
      );
      li.dataset.sig = sig;
      return li;
    });
    const same = rows.length === list.children.length && rows.every((r, i) => r === list.children[i]);
    if (!same) list.replaceChildren(...rows);
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** Cumulative sent and failed (and tickers reached) per poll, as inline SVG. */
  function drawChart(w) {
    const chart = $("chart");
    const width = Math.max(240, Math.round(chart.getBoundingClientRect().width) || 600);
    const height = 150;
    chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
    chart.setAttribute("height", String(height));
    const pad = { l: 40, r: 10, t: 10, b: 22 };
    const s = w.samples;
    const targeted = pushOf(w.alert) ? pushOf(w.alert).targeted : 0;
    const maxY = Math.max(1, targeted, ...s.map((x) => Math.max(x.sent, x.failed, x.tickers)));
    const maxX = Math.max(10, ...s.map((x) => x.t));
    const X = (v) => pad.l + (v / maxX) * (width - pad.l - pad.r);
    const Y = (v) => height - pad.b - (v / maxY) * (height - pad.t - pad.b);
    const nodes = [];
    const yTicks = maxY >= 4 ? [0, Math.round(maxY / 2), maxY] : [0, maxY];
    for (const v of yTicks) {
      nodes.push(svg("line", { x1: pad.l, x2: width - pad.r, y1: Y(v), y2: Y(v), class: "grid" }));
      nodes.push(svg("text", { x: pad.l - 6, y: Y(v) + 4, "text-anchor": "end", class: "axis" }, num(Math.round(v))));
    }
    for (const v of [0, maxX / 2, maxX]) {
      nodes.push(svg("text", { x: X(v), y: height - 6, "text-anchor": v === 0 ? "start" : v === maxX ? "end" : "middle", class: "axis" }, t("seconds", { n: num(Math.round(v)) })));
    }
    if (targeted) {
      nodes.push(svg("line", { x1: pad.l, x2: width - pad.r, y1: Y(targeted), y2: Y(targeted), class: "target" }));
    }
    const line = (key, cls) => {
      if (!s.length) return;
      const pts = [[X(0), Y(0)], ...s.map((x) => [X(x.t), Y(x[key])])];
      nodes.push(svg("polyline", { points: pts.map((p) => p.map((n) => n.toFixed(1)).join(",")).join(" "), class: `series ${cls}` }));
      const last = pts[pts.length - 1];
      nodes.push(svg("circle", { cx: last[0].toFixed(1), cy: last[1].toFixed(1), r: 3, class: `dot ${cls}` }));
    };
    line("tickers", "tickers");
    line("failed", "failed");
    line("sent", "sent");
    const last = s[s.length - 1] || { sent: 0, failed: 0, tickers: 0, t: 0 };
    nodes.unshift(svg("title", {}, t("chartLabel", { sent: last.sent, failed: last.failed, tickers: last.tickers, secs: Math.round(last.t) })));
    chart.replaceChildren(...nodes);
  }

  // ---------------------------------------------------------------- recent alerts

  async function loadRecent() {
    if (!token) return;
    try {
      const r = await api("GET", "/alerts?limit=20");
      if (r.status === 200 && r.body && Array.isArray(r.body.items)) {
        state.recent = r.body.items;
        for (const a of state.recent) if (a.seq && a.seq > state.maxSeq) state.maxSeq = a.seq;
        $("recent-error").hidden = true;
        renderRecent();
        updateTopicList();
        updateCompose();
      } else {
        showRecentError(detailOf(r));
      }
    } catch (e) {
      if (!(e instanceof Unauthorized)) showRecentError(t("errNetworkShort"));
    }
  }

  function showRecentError(detail) {
    const e = $("recent-error");
    e.textContent = t("recentError", { detail });
    e.hidden = false;
  }

  function updateTopicList() {
    const seen = new Set(["gundem", "burdur", "spor", "ekonomi", "dunya"]);
    for (const a of state.recent) for (const tp of a.topics || []) seen.add(tp);
    const dl = $("topic-list");
    dl.replaceChildren(...[...seen].sort().map((v) => el("option", { value: v })));
  }

  const rowOf = (id) => $("recent").querySelector(`[data-alert-id="${id}"]`);

  function saveEdits() {
    storageSet(localStorage, STORE.edits, Object.keys(state.edits).length ? JSON.stringify(state.edits) : null);
  }

  function statusOf(a) {
    if (a.status === "live" && a.expires_at && Date.parse(a.expires_at) < Date.now()) return "expired";
    return a.status;
  }

  /** Re-renders the list, leaving rows being edited (and their focus) alone unless forced. */
  function renderRecent(force) {
    const list = $("recent");
    $("recent-empty").hidden = state.recent.length > 0;
    const keep = new Map();
    for (const li of list.children) keep.set(li.dataset.alertId, li);
    const rows = state.recent.map((a) => {
      const old = keep.get(a.id);
      const sig = JSON.stringify([a, state.edits[a.id] ? "edit" : "", state.editErrors[a.id] || "", lang]);
      if (old && old.dataset.sig === sig && !force) return old;
      if (old && state.edits[a.id] && old.contains(document.activeElement) && !force) return old;
      const li = recentRow(a);
      li.dataset.sig = sig;
      return li;
    });
    const focusedId = document.activeElement?.closest?.("[data-alert-id]")?.dataset.alertId;
    const focusedRole = document.activeElement?.dataset?.role;
    list.replaceChildren(...rows);
    if (focusedId && focusedRole && !list.contains(document.activeElement)) {
      list.querySelector(`[data-alert-id="${focusedId}"] [data-role="${focusedRole}"]`)?.focus();
    }
  }

  function recentRow(a) {
    const status = statusOf(a);
    const statusKey = { live: "statusLive", retracted: "statusRetracted", scheduled: "statusScheduled", expired: "statusExpired" }[status] || "statusLive";
    const time = a.published_at || a.send_at || a.created_at;
    const li = el("li", { class: `alert-row status-${status}`, "data-alert-id": a.id, "data-status": a.status });
    const meta = el(
      "div",
      { class: "row-meta" },
      el("span", { class: `badge badge-${status}`, text: t(statusKey) }),
      el("time", { datetime: time, text: fmtTime(time) }),
      a.created_by ? el("span", { class: "muted", text: a.created_by }) : null,
      el("span", { class: "muted", text: (a.topics || []).length ? a.topics.join(", ") : t("topicsAll") }),
      el("span", { class: "figure", text: t("readers", { n: num(a.delivery ? a.delivery.tickers_reached : 0) }) }),
    );
    li.append(meta);
    const edit = state.edits[a.id];
    if (edit && a.status !== "retracted") {
      li.append(editForm(a, edit));
      return li;
    }
    li.append(el("p", { class: "row-headline", text: a.headline }));
    if (a.summary) li.append(el("p", { class: "row-summary", text: a.summary }));
    const link = el("a", { href: a.url, target: "_blank", rel: "noopener noreferrer", class: "row-url", text: a.url });
    li.append(el("p", { class: "row-link" }, link));
    if (a.status === "retracted" && a.retract_reason) {
      li.append(el("p", { class: "muted small", text: t("retractedReason", { reason: a.retract_reason }) }));
    }
    const actions = el(
      "div",
      { class: "row-actions" },
      el("button", { type: "button", class: "quiet", "data-role": "watch", text: t("watch"), onclick: () => startWatch(a, true) }),
    );
    if (a.status !== "retracted") {
      actions.append(
        el("button", { type: "button", class: "quiet", "data-role": "correct", text: t("correct"), onclick: () => {
          state.edits[a.id] = { headline: a.headline, summary: a.summary || "", url: a.url };
          saveEdits();
          renderRecent(true);
          rowOf(a.id)?.querySelector(`[data-role="edit-headline"]`)?.focus();
        } }),
        el("button", { type: "button", class: "quiet", "data-role": "retract", text: t("retract"), onclick: () => openRetract(a) }),
      );
    }
    li.append(actions);
    return li;
  }

  function editForm(a, edit) {
    const uid = `e-${a.id}`;
    const errId = `${uid}-error`;
    const counter = (id, value, max) => el("span", { class: `counter${charCount(value) > max ? " over" : ""}`, id, text: `${charCount(value)} / ${max}` });
    const field = (name, labelKey, control, counterNode) =>
      el(
        "div",
        { class: "field" },
        el("div", { class: "label-row" }, el("label", { for: `${uid}-${name}`, text: t(labelKey) }), counterNode),
        control,
      );
    const onInput = (name, max) => (e) => {
      edit[name] = e.target.value;
      saveEdits();
      if (max) {
        const c = $(`${uid}-${name}-count`);
        c.textContent = `${charCount(e.target.value)} / ${max}`;
        c.classList.toggle("over", charCount(e.target.value) > max);
      }
    };
    const headline = el("input", { id: `${uid}-headline`, type: "text", autocomplete: "off", "data-role": "edit-headline", "aria-describedby": `${uid}-headline-count ${errId}`, oninput: onInput("headline", MAX_HEADLINE) });
    headline.value = edit.headline;
    const summary = el("textarea", { id: `${uid}-summary`, rows: "2", "data-role": "edit-summary", "aria-describedby": `${uid}-summary-count ${errId}`, oninput: onInput("summary", MAX_SUMMARY) });
    summary.value = edit.summary;
    const url = el("input", { id: `${uid}-url`, type: "url", autocomplete: "off", spellcheck: "false", "data-role": "edit-url", "aria-describedby": errId, oninput: onInput("url") });
    url.value = edit.url;
    // Per correction: what happens to the notification already on readers' devices. Quiet is
    // the default: a fix of a typo or a figure should not ring every phone a second time.
    const pushMode = PUSH_MODES.includes(edit.push) ? edit.push : "quiet";
    const choice = el(
      "fieldset",
      { class: "push-choice", "data-role": "edit-push", "aria-describedby": `${uid}-push-help` },
      el("legend", { text: t("pushChoice") }),
      ...PUSH_MODES.map((mode) => {
        const id = `${uid}-push-${mode}`;
        const radio = el("input", { type: "radio", id, name: `${uid}-push`, value: mode, "data-push": mode, onchange: () => {
          edit.push = mode;
          saveEdits();
        } });
        radio.checked = mode === pushMode;
        return el("div", { class: "choice" }, radio, el("label", { for: id, text: t(PUSH_MODE_LABEL[mode]) }));
      }),
      el("p", { class: "help", id: `${uid}-push-help`, text: t("pushChoiceHelp") }),
    );
    const errMsg = state.editErrors[a.id];
    const badField = errMsg && errMsg.field;
    for (const [n, c] of [["headline", headline], ["summary", summary], ["url", url]]) if (badField === n) c.setAttribute("aria-invalid", "true");
    if (badField === "push") choice.setAttribute("aria-invalid", "true");
    const form = el(
      "form",
      { class: "edit", novalidate: true, onsubmit: (e) => {
        e.preventDefault();
        saveCorrection(a, edit, form);
      }, onkeydown: (e) => {
        if (e.key === "Escape") {
          e.preventDefault();
          cancelEdit(a.id);
        }
      } },
      field("headline", "editHeadline", headline, counter(`${uid}-headline-count`, edit.headline, MAX_HEADLINE)),
      field("summary", "editSummary", summary, counter(`${uid}-summary-count`, edit.summary, MAX_SUMMARY)),
      field("url", "editUrl", url, null),
      choice,
      el("p", { class: "field-error", id: errId, role: "alert", hidden: !errMsg, text: errMsg ? errMsg.text : "" }),
      el(
        "div",
        { class: "row-actions" },
        el("button", { type: "submit", class: "primary", "data-role": "save", text: t("save") }),
        el("button", { type: "button", class: "quiet", "data-role": "cancel", text: t("cancel"), onclick: () => cancelEdit(a.id) }),
      ),
    );
    return form;
  }

  function cancelEdit(id) {
    delete state.edits[id];
    delete state.editErrors[id];
    saveEdits();
    renderRecent(true);
    rowOf(id)?.querySelector(`[data-role="correct"]`)?.focus();
  }

  async function saveCorrection(a, edit, form) {
    const patch = {};
    if (edit.headline !== a.headline) patch.headline = edit.headline;
    if (edit.summary !== (a.summary || "")) patch.summary = edit.summary.trim() ? edit.summary : null;
    if (edit.url.trim() !== a.url) patch.url = edit.url.trim();
    const setError = (text, field) => {
      state.editErrors[a.id] = { text, field };
      renderRecent(true);
      const row = rowOf(a.id);
      row?.querySelector(field ? `[data-role="edit-${field}"]` : `[data-role="edit-headline"]`)?.focus();
    };
    if (!Object.keys(patch).length) return setError(t("noChange"));
    const push = PUSH_MODES.includes(edit.push) ? edit.push : "quiet";
    patch.push = push;
    const button = form.querySelector('[data-role="save"]');
    button.disabled = true;
    button.textContent = t("saving");
    try {
      const r = await api("PATCH", `/alerts/${a.id}`, patch);
      if (r.status === 200 && r.body) {
        delete state.edits[a.id];
        delete state.editErrors[a.id];
        saveEdits();
        const i = state.recent.findIndex((x) => x.id === a.id);
        if (i >= 0) state.recent[i] = r.body;
        renderRecent(true);
        announce(t({ quiet: "correctedQuiet", renotify: "correctedRenotify", none: "correctedNone" }[push]));
        rowOf(a.id)?.querySelector(`[data-role="correct"]`)?.focus();
        // Follow the correction's push step live (a tickers-only correction has none to follow).
        if (push !== "none" || (state.watch && state.watch.id === a.id)) watchAgain(r.body);
        loadRecent();
      } else {
        const p = r.body || {};
        const field = ["headline", "summary", "url", "push"].includes(p.field) ? p.field : null;
        setError(t("errProblem", { status: r.status, detail: p.detail || detailOf(r) }), field);
      }
    } catch (e) {
      if (!(e instanceof Unauthorized)) setError(t("errNetworkShort"));
    } finally {
      if (button.isConnected) {
        button.disabled = false;
        button.textContent = t("save");
      }
    }
  }

  function announce(text) {
    $("recent-error").hidden = true;
    $("recent-status").textContent = text;
  }

  // ---------------------------------------------------------------- retraction

  function openRetract(a) {
    state.retractTarget = a;
    $("retract-headline").textContent = a.headline;
    $("retract-reason").value = "";
    const err = $("retract-error");
    err.hidden = true;
    err.textContent = "";
    const dlg = $("confirm-retract");
    dlg.returnValue = "";
    dlg.showModal();
    $("retract-reason").focus();
  }

  async function retract(ev) {
    const submitter = ev.submitter;
    if (!submitter || submitter.value !== "retract") return; // Cancel closes as usual.
    ev.preventDefault();
    const a = state.retractTarget;
    if (!a) return;
    const reason = $("retract-reason").value;
    const button = $("confirm-retract-button");
    button.disabled = true;
    const err = $("retract-error");
    try {
      const r = await api("POST", `/alerts/${a.id}/retract`, reason.trim() ? { reason } : {});
      if (r.status === 200) {
        $("confirm-retract").close("retracted");
        state.retractTarget = null;
        const i = state.recent.findIndex((x) => x.id === a.id);
        if (i >= 0 && r.body) state.recent[i] = r.body;
        delete state.edits[a.id];
        saveEdits();
        renderRecent(true);
        announce(t("retractedDevices"));
        rowOf(a.id)?.querySelector(`[data-role="watch"]`)?.focus();
        if (r.body) watchAgain(r.body);
        loadRecent();
      } else {
        err.textContent = t("errProblem", { status: r.status, detail: detailOf(r) });
        err.hidden = false;
      }
    } catch (e) {
      if (e instanceof Unauthorized) {
        $("confirm-retract").close("cancel");
        return;
      }
      err.textContent = t("errNetworkShort");
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    lang = chooseLanguage();
    state.draft = loadDraft();
    fillForm();

    for (const b of document.querySelectorAll(".lang button")) {
      b.addEventListener("click", () => {
        storageSet(localStorage, STORE.lang, b.dataset.lang);
        applyLanguage(b.dataset.lang);
      });
    }

    $("signin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = $("token").value.trim();
      if (!v) {
        setTokenError(t("tokenMissing"));
        $("token").focus();
        return;
      }
      signIn(v);
    });
    $("sign-out").addEventListener("click", signOut);

    for (const f of FIELDS) {
      $(f).addEventListener("input", () => {
        state.draft[f] = $(f).value;
        setFieldError("", f, null);
        saveDraft();
        updateCompose();
      });
    }
    $("compose").addEventListener("submit", (e) => {
      e.preventDefault();
      if (!state.sending) openConfirm();
    });
    $("clear-draft").addEventListener("click", () => {
      if (!draftIsEmpty(state.draft) && !confirm(t("clearConfirm"))) return;
      state.draft = { headline: "", summary: "", url: "", image: "", topics: "", key: null };
      fillForm();
      saveDraft();
      clearComposeErrors();
      hideResult();
      updateCompose();
      $("headline").focus();
    });
    $("confirm-send").addEventListener("close", () => {
      if ($("confirm-send").returnValue === "send") send();
      else $("send").focus();
    });
    $("confirm-retract").querySelector("form").addEventListener("submit", retract);
    $("confirm-retract").addEventListener("close", () => {
      if ($("confirm-retract").returnValue !== "retracted" && state.retractTarget) {
        const id = state.retractTarget.id;
        state.retractTarget = null;
        rowOf(id)?.querySelector(`[data-role="retract"]`)?.focus();
      }
    });
    $("recent-refresh").addEventListener("click", loadRecent);
    $("live-close").addEventListener("click", () => {
      if (state.watch) clearTimeout(state.watch.timer);
      state.watch = null;
      $("live-card").hidden = true;
      $("send").focus();
    });
    $("live-resume").addEventListener("click", () => {
      const w = state.watch;
      if (!w) return;
      w.done = null;
      w.started = Date.now();
      w.unchanged = 0;
      renderLive();
      pollSoon(0);
    });
    window.addEventListener("resize", () => state.watch && drawChart(state.watch));
    window.addEventListener("storage", (e) => {
      // Another tab of this console sent or changed the draft.
      if (e.key === STORE.draft && document.activeElement?.form !== $("compose")) {
        state.draft = loadDraft();
        fillForm();
        updateCompose();
      }
    });

    applyLanguage(lang);
    if (!draftIsEmpty(state.draft)) $("draft-state").textContent = t("draftRestored");
    if (token) {
      signIn(token, { quiet: true });
    } else {
      showSignin(null);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
