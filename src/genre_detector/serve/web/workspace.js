// The workspace: a person's catalog, briefs, line-ups and watches, on the service's public
// API only (docs/catalog.md). An ES module served as it is (no build step). The key lives in
// sessionStorage for this tab, goes out only as `Authorization: Bearer`, never in a URL, and
// is never logged. Without a key the page above works as it always has.

const STORE_KEY = "genre-detector.api-key";
const PAGE = 100; // GET /tracks?limit= (its maximum)
const POLL_MS = 3000; // an open watch's matches and deliveries
const MOODS = [
  ["", "any mood"],
  ["Q1", "Q1 exuberant"],
  ["Q2", "Q2 anxious, angry"],
  ["Q3", "Q3 sad"],
  ["Q4", "Q4 calm"],
];
const VOICES = [
  ["", "any"],
  ["instrumental", "instrumental"],
  ["female", "female voice"],
  ["male", "male voice"],
];
const ERASE_SAYS =
  "Erasing removes the track's stored analysis and its search vector (it never appears in a " +
  "result again), its share of its artist's profile, its place in any watch's like-tracks, " +
  "and cancels its webhooks not yet sent. The audio itself was never stored. This cannot be undone.";

const state = {
  me: null,
  labels: [],
  tracks: [],
  cursor: null,
  filters: {},
  lineup: [],
  likePool: new Map(), // track id -> {title, artist}: search results picked for a watch
  watches: [],
  editing: null, // the id of the watch the form edits
  openWatch: null,
  poll: null,
};

// ------------------------------------------------------------------ small helpers

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c != null && c !== false) node.append(c);
  }
  return node;
}

function fmt(n, digits = 0) {
  return Number(n).toLocaleString("en", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function key() {
  return sessionStorage.getItem(STORE_KEY);
}

function trackName(t) {
  return (t.title || "Untitled") + (t.artist ? " — " + t.artist : "");
}

function tempoOf(t) {
  const bpm = t.descriptors && t.descriptors.tempo && t.descriptors.tempo.bpm;
  return bpm == null ? null : Math.round(bpm);
}

function keyOf(t) {
  const k = t.descriptors && t.descriptors.key;
  return k && k.tonic ? `${k.tonic} ${k.mode} (${k.camelot})` : null;
}

function moodOf(t) {
  const m = t.descriptors && t.descriptors.mood;
  return m && m.quadrant ? m.quadrant : null;
}

function voiceOf(t) {
  const v = t.descriptors && t.descriptors.voice;
  if (!v) return null;
  const heard = Object.entries(v).filter(([, p]) => Number(p) >= 0.5);
  heard.sort((a, b) => b[1] - a[1]);
  return heard.length ? heard.map(([name]) => name).join(", ") : "unclear";
}

// ------------------------------------------------------------------ the API

function apiUrl(path, params) {
  const url = new URL("../" + path.replace(/^\//, ""), window.location.href);
  for (const [k, v] of Object.entries(params || {})) {
    if (v != null && v !== "") url.searchParams.set(k, v);
  }
  return url.toString();
}

function retryAfter(headers) {
  const s = parseInt(headers.get ? headers.get("retry-after") : headers, 10);
  return Number.isFinite(s) && s >= 0 ? s : 1;
}

function slowDown(seconds) {
  const text = `Slow down: try again in ${seconds} s.`;
  notice(text);
  return text;
}

// {ok, status, data, error, field, slow}: error is the API's detail in words; field the
// request field it names ("webhook_url: ..." -> "webhook_url").
function outcome(status, data, headers) {
  if (status >= 200 && status < 300) return { ok: true, status, data };
  if (status === 429) {
    const s = retryAfter(headers);
    return { ok: false, status, data, slow: s, error: slowDown(s) };
  }
  if (status === 401 && key()) {
    signOut("The service no longer accepts this key (revoked or unknown): signed out.");
  }
  let error = data && (data.detail || data.error);
  if (error && typeof error !== "string") error = JSON.stringify(error);
  if (!error) error = status ? `The service answered HTTP ${status}.` : "The service could not be reached.";
  const m = /^([a-z_]+)(\[\d+\])?: /.exec(error);
  return { ok: false, status, data, error, field: m ? m[1] : null };
}

async function api(method, path, options = {}) {
  const headers = {};
  if (key()) headers.Authorization = "Bearer " + key();
  let body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (options.form) {
    body = options.form;
  }
  let r;
  try {
    r = await fetch(apiUrl(path, options.params), { method, headers, body, cache: "no-store" });
  } catch (e) {
    return outcome(0, null, new Headers());
  }
  let data = null;
  if (r.status !== 204) {
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
  }
  return outcome(r.status, data, r.headers);
}

// An upload with its progress (fetch has none): XMLHttpRequest.
function uploadWithProgress(path, form, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", apiUrl(path));
    if (key()) xhr.setRequestHeader("Authorization", "Bearer " + key());
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.upload.onload = () => onProgress(1);
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch (e) {
        data = null;
      }
      resolve(outcome(xhr.status, data, xhr.getResponseHeader("retry-after")));
    };
    xhr.onerror = () => resolve(outcome(0, null, ""));
    xhr.send(form);
  });
}

// ------------------------------------------------------------------ messages

function notice(text) {
  const p = $("ws-notice");
  if (p) p.textContent = text;
}

function showError(id, res) {
  const p = $(id);
  if (!p) return;
  if (!res) {
    p.hidden = true;
    p.textContent = "";
    return;
  }
  p.textContent = typeof res === "string" ? res : res.error;
  p.classList.toggle("ws-slow", Boolean(res.slow));
  p.hidden = false;
}

// An error naming a field goes next to that field; anything else next to the form's button.
function showFieldError(prefix, res, fallbackId) {
  document.querySelectorAll(`[id^="${prefix}-err-"]`).forEach((p) => {
    p.hidden = true;
    p.textContent = "";
  });
  showError(fallbackId, null);
  if (!res) return;
  const p = res.field && $(`${prefix}-err-${res.field}`);
  if (p) {
    showError(p.id, res);
    const input = document.querySelector(`[aria-describedby~="${p.id}"]`);
    if (input) input.focus();
  } else {
    showError(fallbackId, res);
  }
}

// ------------------------------------------------------------------ the page's frame

function field(id, label, input, help) {
  input.id = id;
  const err = h("p", { id: `${id}-error`, class: "ws-error", role: "alert", hidden: true });
  return h("div", { class: "ws-field" }, h("label", { for: id, text: label }), input, help, err);
}

function select(id, options, attrs) {
  return h(
    "select",
    { id, ...attrs },
    options.map(([value, text]) => h("option", { value, text })),
  );
}

function buildSignIn(host) {
  host.append(
    h(
      "form",
      { id: "ws-signin", class: "ws-signin", autocomplete: "off", onsubmit: onSignIn },
      h("label", { for: "ws-key", text: "API key" }),
      h("input", {
        id: "ws-key",
        type: "password",
        autocomplete: "off",
        spellcheck: "false",
        required: true,
        "aria-describedby": "ws-signin-error",
      }),
      h("button", { type: "submit", class: "ws-btn", text: "Sign in" }),
      h("p", { id: "ws-signin-error", class: "ws-error", role: "alert", hidden: true }),
    ),
    h(
      "div",
      { id: "ws-account", class: "ws-account", hidden: true },
      h("p", { class: "ws-who" }, "Signed in as ", h("b", { id: "ws-account-name" })),
      h("ul", { id: "ws-quotas", class: "ws-quotas", "aria-label": "Quotas and budgets left" }),
      h("button", { type: "button", id: "ws-signout", class: "ws-btn ws-quiet", text: "Sign out", onclick: () => signOut() }),
    ),
  );
}

const VIEWS = [
  ["catalog", "My catalog"],
  ["find", "Find"],
  ["lineup", "Line-up"],
  ["watches", "Watches"],
];

function buildWorkspace(host) {
  host.append(
    h("h2", { id: "ws-title", tabindex: "-1", text: "Your workspace" }),
    h("p", { id: "ws-notice", class: "ws-notice", role: "status", "aria-live": "polite" }),
    h(
      "nav",
      { class: "ws-tabs", "aria-label": "Workspace views" },
      VIEWS.map(([v, text]) =>
        h("button", {
          type: "button",
          class: "ws-tab",
          id: `ws-tab-${v}`,
          "data-view": v,
          "aria-controls": `ws-view-${v}`,
          "aria-pressed": v === "catalog" ? "true" : "false",
          text,
          onclick: () => showView(v),
        }),
      ),
    ),
    buildCatalog(),
    buildFind(),
    buildLineup(),
    buildWatches(),
  );
}

function showView(view) {
  for (const [v] of VIEWS) {
    $(`ws-view-${v}`).hidden = v !== view;
    $(`ws-tab-${v}`).setAttribute("aria-pressed", v === view ? "true" : "false");
  }
  if (view === "watches") renderLikeChoices();
  if (view !== "watches") closeWatch();
}

// ------------------------------------------------------------------ sign in and out

async function onSignIn(e) {
  e.preventDefault();
  const input = $("ws-key");
  const value = input.value.trim();
  if (!value) return;
  sessionStorage.setItem(STORE_KEY, value);
  input.value = "";
  await signIn(true);
}

async function signIn(focus) {
  const res = await api("GET", "me");
  if (!res.ok) {
    if (res.status === 401) {
      sessionStorage.removeItem(STORE_KEY);
      showError("ws-signin-error", "This key was not accepted: it is unknown or revoked.");
    } else {
      showError("ws-signin-error", res);
      if (!res.slow) sessionStorage.removeItem(STORE_KEY);
    }
    return;
  }
  showError("ws-signin-error", null);
  renderMe(res.data);
  $("ws-signin").hidden = true;
  $("ws-account").hidden = false;
  $("workspace").hidden = false;
  if (focus) $("ws-title").focus();
  await Promise.all([loadLabels(), loadTracks(true), loadWatches()]);
}

function signOut(message) {
  sessionStorage.removeItem(STORE_KEY);
  stopPolling();
  Object.assign(state, {
    me: null,
    tracks: [],
    cursor: null,
    lineup: [],
    watches: [],
    editing: null,
    openWatch: null,
  });
  state.likePool.clear();
  const ws = $("workspace");
  ws.hidden = true;
  ws.textContent = "";
  buildWorkspace(ws);
  $("ws-account").hidden = true;
  $("ws-signin").hidden = false;
  showError("ws-signin-error", message || null);
  $("ws-key").focus();
}

async function refreshMe() {
  const res = await api("GET", "me");
  if (res.ok) renderMe(res.data);
}

function renderMe(me) {
  state.me = me;
  $("ws-account-name").textContent = me.account;
  const items = [];
  for (const [name, q] of Object.entries(me.quotas || {})) {
    items.push(
      h("li", { "data-quota": name }, `${name}: ${fmt(q.used)} of ${fmt(q.limit)} (${fmt(q.left)} left)`),
    );
  }
  const words = { search: "searches", uploads: "uploads", watch_changes: "watch changes" };
  for (const [name, b] of Object.entries(me.budgets || {})) {
    items.push(
      h(
        "li",
        { "data-budget": name },
        `${words[name] || name} left: ${fmt(b.remaining)} at once (${fmt(b.limit)} a ${b.window_s === 60 ? "minute" : b.window_s + " s"})`,
      ),
    );
  }
  $("ws-quotas").replaceChildren(...items);
}

async function loadLabels() {
  if (!state.labels.length) {
    const res = await api("GET", "models/");
    state.labels = (res.ok && res.data.labels) || [];
  }
  for (const id of ["ws-filter-genre", "ws-find-genre"]) {
    const s = $(id);
    s.replaceChildren(
      h("option", { value: "", text: "any genre" }),
      ...state.labels.map((g) => h("option", { value: g, text: g })),
    );
  }
  renderGenreSliders();
}

// ------------------------------------------------------------------ my catalog

function buildCatalog() {
  const files = h("input", {
    type: "file",
    multiple: true,
    accept: "audio/*,.wav,.mp3,.flac,.ogg,.au,.m4a,.aiff",
    "aria-describedby": "ws-files-error",
  });
  const bpmHelp = "Tempo in BPM";
  return h(
    "section",
    { id: "ws-view-catalog", class: "ws-view card", "aria-labelledby": "ws-catalog-title" },
    h("h3", { id: "ws-catalog-title", text: "Add tracks to my catalog" }),
    h(
      "form",
      { id: "ws-upload", onsubmit: onUpload },
      field("ws-files", "Audio files (several at once)", files),
      field("ws-upload-artist", "Artist (optional; else each file's tags)", h("input", { type: "text", maxlength: "200" })),
      h(
        "fieldset",
        { class: "ws-consent" },
        h("legend", { text: "Consent" }),
        h(
          "label",
          { for: "ws-consent-search" },
          h("input", { type: "checkbox", id: "ws-consent-search", checked: true }),
          " search: others may find these tracks (needed to store them)",
        ),
        h(
          "label",
          { for: "ws-consent-notify" },
          h("input", { type: "checkbox", id: "ws-consent-notify" }),
          " notify: other people's watches may announce them",
        ),
      ),
      h("button", { type: "submit", class: "ws-btn", id: "ws-upload-btn", text: "Upload" }),
    ),
    h("ol", { id: "ws-upload-lines", class: "ws-lines", "aria-live": "polite", "aria-label": "Uploads" }),
    h("h3", { id: "ws-tracks-title", text: "My tracks" }),
    h(
      "form",
      { id: "ws-filters", class: "ws-inline", onsubmit: onFilter, "aria-label": "Filter my tracks" },
      field("ws-filter-genre", "Genre", select("ws-filter-genre", [["", "any genre"]])),
      field("ws-filter-mood", "Mood", select("ws-filter-mood", MOODS)),
      field("ws-filter-bpm-min", "Tempo from", h("input", { type: "number", min: "20", max: "300", inputmode: "numeric", title: bpmHelp })),
      field("ws-filter-bpm-max", "Tempo to", h("input", { type: "number", min: "20", max: "300", inputmode: "numeric", title: bpmHelp })),
      field("ws-filter-key", "Key", h("input", { type: "text", placeholder: "A minor or 8A", maxlength: "20" })),
      h("button", { type: "submit", class: "ws-btn", text: "Apply" }),
      h("button", { type: "reset", class: "ws-btn ws-quiet", text: "Clear", onclick: () => setTimeout(() => onFilter(), 0) }),
    ),
    h("p", { id: "ws-tracks-error", class: "ws-error", role: "alert", hidden: true }),
    h("p", { id: "ws-tracks-summary", class: "ws-muted", "aria-live": "polite" }),
    h(
      "div",
      { class: "ws-scroll" },
      h(
        "table",
        { id: "ws-tracks", class: "ws-table" },
        h("caption", { class: "ws-sr", text: "My tracks" }),
        h(
          "thead",
          null,
          h(
            "tr",
            null,
            ["Title", "Artist", "Genre", "Tempo", "Key"].map((t) => h("th", { scope: "col", text: t })),
            h("th", { scope: "col", class: "ws-col-mood", text: "Mood" }),
            h("th", { scope: "col", class: "ws-col-voice", text: "Voice" }),
            h("th", { scope: "col", text: "Consent" }),
            h("th", { scope: "col", text: "Actions" }),
          ),
        ),
        h("tbody", { id: "ws-tracks-body", onclick: onTrackAction }),
      ),
    ),
    h("button", { type: "button", id: "ws-tracks-more", class: "ws-btn ws-quiet", hidden: true, text: "Load more", onclick: () => loadTracks(false) }),
  );
}

function uploadLine(file) {
  const status = h("span", { class: "ws-line-status", text: "waiting" });
  const li = h("li", { class: "ws-line", "data-file": file.name, "data-state": "waiting" }, h("b", { text: file.name }), " — ", status);
  $("ws-upload-lines").append(li);
  return {
    set(text, st) {
      status.textContent = text;
      if (st) li.dataset.state = st;
    },
    li,
  };
}

async function onUpload(e) {
  e.preventDefault();
  const input = $("ws-files");
  const files = Array.from(input.files || []);
  showError("ws-files-error", null);
  if (!files.length) {
    showError("ws-files-error", "Choose one or more audio files first.");
    input.focus();
    return;
  }
  const consent = ["search", "notify"].filter((c) => $(`ws-consent-${c}`).checked).join(",");
  const artist = $("ws-upload-artist").value.trim();
  const button = $("ws-upload-btn");
  button.disabled = true;
  $("ws-upload-lines").replaceChildren();
  const lines = files.map(uploadLine);
  for (let i = 0; i < files.length; i++) {
    await uploadFile(files[i], consent, artist, lines[i]);
  }
  input.value = "";
  button.disabled = false;
  await Promise.all([refreshMe(), loadTracks(true)]);
}

async function uploadFile(file, consent, artist, line) {
  for (let attempt = 0; attempt < 4; attempt++) {
    const form = new FormData();
    form.append("audio", file, file.name);
    if (consent) form.append("consent", consent);
    if (artist) form.append("artist", artist);
    line.set("uploading 0 %", "uploading");
    const res = await uploadWithProgress("tracks", form, (f) =>
      line.set(f < 1 ? `uploading ${Math.round(f * 100)} %` : "analysing…", "uploading"),
    );
    if (res.slow) {
      line.set(`slow down: trying again in ${res.slow} s`, "waiting");
      await new Promise((r) => setTimeout(r, res.slow * 1000 + 200));
      continue;
    }
    if (!res.ok) {
      line.set("not stored: " + res.error, "error");
      return;
    }
    const t = res.data;
    line.li.dataset.id = t.id;
    const what = `${t.top_genre}${tempoOf(t) != null ? ", " + tempoOf(t) + " BPM" : ""}${keyOf(t) ? ", " + keyOf(t) : ""}`;
    if (t.created) line.set(`stored: ${what}`, "stored");
    else line.set(`duplicate: already in my catalog as ${trackName(t)} (${what})`, "duplicate");
    return;
  }
  line.set("not stored: the upload budget stayed empty; try again later", "error");
}

function currentFilters() {
  const min = $("ws-filter-bpm-min").value;
  const max = $("ws-filter-bpm-max").value;
  let bpm = "";
  if (min || max) bpm = `${min || 20}-${max || 300}`;
  return {
    genre: $("ws-filter-genre").value,
    mood: $("ws-filter-mood").value,
    bpm,
    key: $("ws-filter-key").value.trim(),
  };
}

function onFilter(e) {
  if (e) e.preventDefault();
  state.filters = currentFilters();
  loadTracks(true);
}

// The filters the service may not apply yet (an older service ignores mood, bpm and key on
// GET /tracks): checked here too, on what each page brings.
function fits(t, f) {
  if (f.genre && t.top_genre !== f.genre) return false;
  if (f.mood && /^Q[1-4]$/.test(f.mood) && moodOf(t) && moodOf(t) !== f.mood) return false;
  if (f.bpm) {
    const [lo, hi] = f.bpm.split("-").map(Number);
    const bpm = tempoOf(t);
    if (bpm == null || bpm < lo || bpm > hi) return false;
  }
  if (f.key) {
    const k = t.descriptors && t.descriptors.key;
    const want = f.key.toLowerCase().replace(/\s+/g, " ");
    if (!k || (want !== `${k.tonic} ${k.mode}`.toLowerCase() && want !== String(k.camelot).toLowerCase()))
      return false;
  }
  return true;
}

async function loadTracks(fresh) {
  if (!key()) return;
  const params = { ...state.filters, limit: PAGE };
  if (!fresh) params.cursor = state.cursor;
  const asked = performance.now();
  const res = await api("GET", "tracks", { params });
  const answered = performance.now();
  performance.measure("ws-tracks-fetch", { start: asked, end: answered });
  if (!res.ok) {
    showError("ws-tracks-error", res);
    return;
  }
  showError("ws-tracks-error", null);
  const rows = res.data.tracks || [];
  if (fresh) state.tracks = [];
  const kept = rows.filter((t) => fits(t, state.filters));
  state.hiddenByPage = (fresh ? 0 : state.hiddenByPage || 0) + rows.length - kept.length;
  state.tracks.push(...kept);
  state.cursor = res.data.next_cursor || null;
  renderTracks(fresh ? state.tracks : kept, !fresh);
  renderMyArtists();
  renderLikeTrackSelect();
  // User Timing, read by loadtests/ui_render.py: building this page's rows (layout and paint
  // follow in the next frames)
  performance.measure("ws-tracks-render", { start: answered });
}

function cell(label, text, cls) {
  return h("td", { "data-label": label, class: cls, text: text == null ? "—" : String(text) });
}

function trackRow(t) {
  const notify = t.consent.includes("notify");
  const name = t.title || "Untitled";
  return h(
    "tr",
    { "data-id": t.id },
    cell("Title", name, "ws-title-cell"),
    cell("Artist", t.artist || "—"),
    cell("Genre", `${t.top_genre} ${Math.round(t.top_probability * 100)} %`, "ws-genre"),
    cell("Tempo", tempoOf(t) == null ? null : `${tempoOf(t)} BPM`, "ws-tempo"),
    cell("Key", keyOf(t), "ws-key"),
    cell("Mood", moodOf(t), "ws-col-mood"),
    cell("Voice", voiceOf(t), "ws-col-voice"),
    cell("Consent", t.consent.join(", "), "ws-consent-cell"),
    h(
      "td",
      { "data-label": "Actions", class: "ws-actions" },
      h("button", { type: "button", class: "ws-btn ws-small", "data-action": "like", "aria-label": `Sounds like ${name}`, text: "Sounds like" }),
      h("button", {
        type: "button",
        class: "ws-btn ws-small ws-quiet",
        "data-action": notify ? "withdraw" : "give",
        "aria-label": `${notify ? "Withdraw notify consent for" : "Give notify consent for"} ${name}`,
        text: notify ? "Withdraw notify" : "Give notify",
      }),
      h("button", { type: "button", class: "ws-btn ws-small ws-danger", "data-action": "erase", "aria-label": `Erase ${name}`, text: "Erase" }),
    ),
  );
}

function renderTracks(rows, append) {
  const body = $("ws-tracks-body");
  const frag = document.createDocumentFragment();
  for (const t of rows) frag.append(trackRow(t));
  if (append) body.append(frag);
  else body.replaceChildren(frag);
  const table = $("ws-tracks");
  table.classList.toggle("ws-has-mood", state.tracks.some((t) => moodOf(t)));
  table.classList.toggle("ws-has-voice", state.tracks.some((t) => voiceOf(t)));
  $("ws-tracks-more").hidden = !state.cursor;
  const n = state.tracks.length;
  let summary = n ? `${fmt(n)} track${n === 1 ? "" : "s"} shown${state.cursor ? "; more to load" : ""}.` : "No tracks here yet.";
  if (state.hiddenByPage) summary += ` ${state.hiddenByPage} more on these pages did not fit the filters (checked on this page).`;
  $("ws-tracks-summary").textContent = summary;
}

async function onTrackAction(e) {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest("tr").dataset.id;
  const t = state.tracks.find((x) => x.id === id);
  const action = button.dataset.action;
  if (action === "like") {
    showView("find");
    $("ws-like-track").value = id;
    await soundsLike(id);
    $("ws-find-results-title").focus();
    return;
  }
  if (action === "erase") {
    if (!window.confirm(`Erase “${trackName(t)}”?\n\n${ERASE_SAYS}`)) return;
    const res = await api("DELETE", `tracks/${encodeURIComponent(id)}`);
    if (!res.ok) return showError("ws-tracks-error", res);
    state.tracks = state.tracks.filter((x) => x.id !== id);
    state.likePool.delete(id);
    button.closest("tr").remove();
    document.querySelectorAll(`#ws-find-results [data-id="${id}"]`).forEach((li) => li.remove());
    notice(`Erased ${trackName(t)}.`);
    renderTracks(state.tracks, false);
    renderMyArtists();
    renderLikeTrackSelect();
    await refreshMe();
    return;
  }
  const consent = action === "withdraw" ? "search" : "search,notify";
  const res = await api("PATCH", `tracks/${encodeURIComponent(id)}`, { json: { consent } });
  if (!res.ok) return showError("ws-tracks-error", res);
  const i = state.tracks.findIndex((x) => x.id === id);
  state.tracks[i] = { ...t, ...res.data };
  const row = trackRow(state.tracks[i]);
  button.closest("tr").replaceWith(row);
  row.querySelector(`button[data-action="${action === "withdraw" ? "give" : "withdraw"}"]`).focus();
  notice(`${action === "withdraw" ? "Withdrew" : "Gave"} notify consent for ${trackName(t)}.`);
}

// ------------------------------------------------------------------ find

function buildFind() {
  return h(
    "section",
    { id: "ws-view-find", class: "ws-view card", hidden: true, "aria-labelledby": "ws-find-title" },
    h("h3", { id: "ws-find-title", text: "Find tracks by a brief" }),
    h(
      "form",
      { id: "ws-find", onsubmit: onFind },
      field("ws-brief", "Brief", h("input", { type: "search", placeholder: "calm instrumental jazz around 90 BPM", maxlength: "500", "aria-describedby": "ws-find-err-q" })),
      h("p", { id: "ws-find-err-q", class: "ws-error", role: "alert", hidden: true }),
      h(
        "div",
        { class: "ws-inline" },
        field("ws-find-genre", "Genre", select("ws-find-genre", [["", "any genre"]])),
        field("ws-find-mood", "Mood", select("ws-find-mood", MOODS)),
        field("ws-find-bpm", "Tempo (BPM range)", h("input", { type: "text", placeholder: "85-95", maxlength: "20" })),
        field("ws-find-key", "Key", h("input", { type: "text", placeholder: "A minor or 8A", maxlength: "20" })),
        field("ws-find-voice", "Voice", select("ws-find-voice", VOICES)),
      ),
      h("button", { type: "submit", class: "ws-btn", text: "Search" }),
    ),
    h("div", { id: "ws-brief-read", class: "ws-read", "aria-live": "polite" }),
    h("h3", { text: "Sounds like" }),
    h(
      "form",
      { id: "ws-like", class: "ws-inline", onsubmit: (e) => (e.preventDefault(), soundsLike($("ws-like-track").value)) },
      field("ws-like-track", "One of my tracks", select("ws-like-track", [["", "choose a track"]])),
      h(
        "label",
        { for: "ws-like-exclude", class: "ws-check" },
        h("input", { type: "checkbox", id: "ws-like-exclude", checked: true }),
        " leave out the same artist",
      ),
      h("button", { type: "submit", class: "ws-btn", text: "Find tracks like it" }),
    ),
    h(
      "form",
      { id: "ws-like-upload", class: "ws-inline", onsubmit: onLikeUpload },
      field("ws-like-file", "Or an audio file (not stored)", h("input", { type: "file", accept: "audio/*" })),
      h("button", { type: "submit", class: "ws-btn", text: "Find tracks like it" }),
    ),
    h("h3", { id: "ws-find-results-title", tabindex: "-1", text: "Results" }),
    h("p", { id: "ws-find-error", class: "ws-error", role: "alert", hidden: true }),
    h("ol", { id: "ws-find-results", class: "ws-results", onclick: onResultAction }),
  );
}

async function onFind(e) {
  e.preventDefault();
  const params = {
    q: $("ws-brief").value.trim(),
    genre: $("ws-find-genre").value,
    mood: $("ws-find-mood").value,
    bpm: $("ws-find-bpm").value.trim(),
    key: $("ws-find-key").value.trim(),
    voice: $("ws-find-voice").value,
  };
  showFieldError("ws-find", null, "ws-find-error");
  $("ws-brief-read").replaceChildren();
  const res = await api("GET", "tracks/search", { params });
  if (!res.ok) {
    $("ws-find-results").replaceChildren();
    const where = res.field === "q" ? "ws-find-err-q" : "ws-find-error";
    return showError(where, res);
  }
  renderBriefRead(res.data);
  const closest = (res.data.why && res.data.why.closest) || [];
  renderResults(res.data.results.length ? res.data.results : closest);
  refreshMe(); // the search budget the header shows
}

// How the service read the brief (query.brief: understood, not_understood), in words, and,
// when nothing met every filter, why (why.message) and the closest fits (why.closest).
function renderBriefRead(data) {
  const read = (data.query && data.query.brief) || {};
  const out = [h("h4", { text: "How the brief was read" })];
  const list = h("ul", { id: "ws-brief-terms" });
  const value = (v) => (Array.isArray(v) ? v.join("-") : typeof v === "object" && v ? Object.keys(v).join(" or ") : String(v));
  for (const u of read.understood || []) {
    list.append(
      h("li", { "data-term": u.filter }, h("b", { text: `“${u.words}”` }), ` → ${u.filter} ${value(u.value)}` + (u.note ? ` (${u.note})` : "")),
    );
  }
  if ((read.not_understood || []).length) {
    list.append(h("li", { "data-term": "not_understood" }, h("b", { text: "not understood: " }), read.not_understood.join(", ")));
  }
  if (!list.children.length) list.append(h("li", { text: "no filter was taken from the brief" }));
  out.push(list);
  const why = data.why;
  if (why && why.message) out.push(h("p", { id: "ws-why", text: `Nothing meets every filter: ${why.message}.` }));
  if (why && (why.closest || []).length) out.push(h("p", { class: "ws-muted", text: "Closest fits, with what each misses:" }));
  $("ws-brief-read").replaceChildren(...out);
}

async function soundsLike(id) {
  if (!id) return showError("ws-find-error", "Choose one of your tracks first.");
  const exclude = $("ws-like-exclude").checked ? "true" : "false";
  const params = { k: 10, exclude_same_artist: exclude };
  const res = await api("GET", `tracks/${encodeURIComponent(id)}/similar`, { params });
  $("ws-brief-read").replaceChildren();
  if (!res.ok) return showError("ws-find-error", res);
  showError("ws-find-error", null);
  renderResults(res.data.results);
  refreshMe();
}

async function onLikeUpload(e) {
  e.preventDefault();
  const file = $("ws-like-file").files[0];
  if (!file) return showError("ws-find-error", "Choose an audio file first.");
  const form = new FormData();
  form.append("audio", file, file.name);
  notice(`Listening to ${file.name}…`);
  const res = await api("POST", "similar", { form, params: { k: 10 } });
  $("ws-brief-read").replaceChildren();
  if (!res.ok) return showError("ws-find-error", res);
  showError("ws-find-error", null);
  notice("");
  renderResults(res.data.results);
  refreshMe();
}

function descriptorsText(r) {
  const parts = [];
  if (tempoOf(r) != null) parts.push(`${tempoOf(r)} BPM`);
  if (keyOf(r)) parts.push(keyOf(r));
  if (moodOf(r)) parts.push(`mood ${moodOf(r)}`);
  if (voiceOf(r)) parts.push(`voice ${voiceOf(r)}`);
  return parts.join(", ");
}

function renderResults(results) {
  state.results = new Map(results.map((r) => [r.id, r]));
  const items = results.map((r) =>
    h(
      "li",
      { "data-id": r.id, class: "ws-result" },
      h("b", { class: "ws-r-title", text: r.title || "Untitled" }),
      " — ",
      h("span", { class: "ws-r-artist", text: r.artist || "unknown artist" }),
      " · ",
      h("span", { class: "ws-r-score", text: r.score != null ? `score ${Number(r.score).toFixed(2)}` : `fit ${Number(r.fit).toFixed(2)}` }),
      r.unmet && r.unmet.length ? h("span", { class: "ws-r-unmet", text: ` · misses ${r.unmet.join(", ")}` }) : null,
      " · ",
      h("span", { class: "ws-r-genre", text: r.genre || r.top_genre || "" }),
      descriptorsText(r) ? h("span", { class: "ws-r-desc", text: " · " + descriptorsText(r) }) : null,
      " ",
      h("button", { type: "button", class: "ws-btn ws-small ws-quiet", "data-action": "pick", "aria-label": `Add ${r.title || "Untitled"} to a watch's like-tracks`, text: "Add to a watch" }),
    ),
  );
  $("ws-find-results").replaceChildren(...items);
  if (!items.length) $("ws-find-results").append(h("li", { class: "ws-muted", text: "Nothing found." }));
}

function onResultAction(e) {
  const button = e.target.closest("button[data-action=pick]");
  if (!button) return;
  const r = state.results.get(button.closest("li").dataset.id);
  state.likePool.set(r.id, { title: r.title, artist: r.artist });
  button.disabled = true;
  button.textContent = "Added";
  notice(`${trackName(r)} is among the like-tracks you can pick in Watches.`);
}

// ------------------------------------------------------------------ line-up

function buildLineup() {
  return h(
    "section",
    { id: "ws-view-lineup", class: "ws-view card", hidden: true, "aria-labelledby": "ws-lineup-title" },
    h("h3", { id: "ws-lineup-title", text: "Artists who sound alike" }),
    h(
      "form",
      { id: "ws-alike-form", class: "ws-inline", onsubmit: onAlike },
      field("ws-lineup-mine", "One of my artists", select("ws-lineup-mine", [["", "choose an artist"]])),
      field("ws-lineup-name", "or any artist's name", h("input", { type: "text", maxlength: "200", "aria-describedby": "ws-lineup-err-artist" })),
      field("ws-lineup-k", "How many", h("input", { type: "number", min: "1", max: "100", value: "10", "aria-describedby": "ws-lineup-err-k" })),
      h("button", { type: "submit", class: "ws-btn", text: "Find artists alike" }),
    ),
    h("p", { id: "ws-lineup-err-artist", class: "ws-error", role: "alert", hidden: true }),
    h("p", { id: "ws-lineup-err-k", class: "ws-error", role: "alert", hidden: true }),
    h("p", { id: "ws-alike-error", class: "ws-error", role: "alert", hidden: true }),
    h("p", { id: "ws-alike-query", class: "ws-muted" }),
    h(
      "div",
      { class: "ws-scroll" },
      h(
        "table",
        { id: "ws-alike", class: "ws-table" },
        h("caption", { class: "ws-sr", text: "Artists who sound alike" }),
        h("thead", null, h("tr", null, ["Artist", "Score", "Tracks", ""].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", { id: "ws-alike-body", onclick: onAddToLineup }),
      ),
    ),
    h("h3", { id: "ws-my-lineup", text: "My line-up" }),
    h("ol", { id: "ws-lineup", class: "ws-lineup", onclick: onLineupRemove }),
    h("button", { type: "button", id: "ws-lineup-csv", class: "ws-btn", text: "Export CSV", onclick: exportLineup }),
  );
}

function renderMyArtists() {
  const s = $("ws-lineup-mine");
  if (!s) return;
  const seen = new Map();
  for (const t of state.tracks) if (t.artist && t.artist_id && !seen.has(t.artist_id)) seen.set(t.artist_id, t.artist);
  const keep = s.value;
  s.replaceChildren(
    h("option", { value: "", text: "choose an artist" }),
    ...[...seen].map(([id, name]) => h("option", { value: id, text: name })),
  );
  s.value = seen.has(keep) ? keep : "";
}

async function onAlike(e) {
  e.preventDefault();
  const id = $("ws-lineup-mine").value;
  const name = $("ws-lineup-name").value.trim();
  const params = { k: $("ws-lineup-k").value };
  if (name) params.artist = name;
  else params.artist_id = id;
  showFieldError("ws-lineup", null, "ws-alike-error");
  const res = await api("GET", "artists/similar", { params });
  if (!res.ok) {
    $("ws-alike-body").replaceChildren();
    return showFieldError("ws-lineup", res, "ws-alike-error");
  }
  refreshMe();
  const q = res.data.query;
  $("ws-alike-query").textContent = `Alike to ${q.artist} (${fmt(q.n_tracks)} track${q.n_tracks === 1 ? "" : "s"}):`;
  state.alike = res.data.results;
  $("ws-alike-body").replaceChildren(
    ...res.data.results.map((r, i) =>
      h(
        "tr",
        { "data-artist": r.artist },
        cell("Artist", r.artist),
        cell("Score", Number(r.score).toFixed(2)),
        cell("Tracks", r.n_tracks),
        h("td", { "data-label": "" }, h("button", { type: "button", class: "ws-btn ws-small", "data-i": String(i), "aria-label": `Add ${r.artist} to my line-up`, text: "Add to line-up" })),
      ),
    ),
  );
  if (!res.data.results.length) $("ws-alike-query").textContent += " no other artist in the catalog yet.";
}

function onAddToLineup(e) {
  const b = e.target.closest("button[data-i]");
  if (!b) return;
  const r = state.alike[Number(b.dataset.i)];
  if (!state.lineup.some((x) => x.artist === r.artist)) state.lineup.push({ artist: r.artist, score: r.score, n_tracks: r.n_tracks });
  renderLineup();
  notice(`${r.artist} is on the line-up.`);
}

function renderLineup() {
  $("ws-lineup").replaceChildren(
    ...state.lineup.map((x, i) =>
      h(
        "li",
        { "data-artist": x.artist },
        `${x.artist} (score ${Number(x.score).toFixed(2)}, ${x.n_tracks} track${x.n_tracks === 1 ? "" : "s"}) `,
        h("button", { type: "button", class: "ws-btn ws-small ws-quiet", "data-i": String(i), "aria-label": `Remove ${x.artist} from my line-up`, text: "Remove" }),
      ),
    ),
  );
}

function onLineupRemove(e) {
  const b = e.target.closest("button[data-i]");
  if (!b) return;
  state.lineup.splice(Number(b.dataset.i), 1);
  renderLineup();
}

function csvCell(v, isText) {
  let s = String(v == null ? "" : v);
  // a name a spreadsheet would run as a formula (numbers are written as they are)
  if (isText && /^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function lineupCsv() {
  const rows = [["artist", "score", "n_tracks"], ...state.lineup.map((x) => [x.artist, Number(x.score).toFixed(4), x.n_tracks])];
  return rows.map((r) => r.map((v, i) => csvCell(v, i === 0)).join(",")).join("\r\n") + "\r\n";
}

function exportLineup() {
  if (!state.lineup.length) return notice("The line-up is empty: add artists first.");
  const url = URL.createObjectURL(new Blob([lineupCsv()], { type: "text/csv;charset=utf-8" }));
  const a = h("a", { href: url, download: "line-up.csv", hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ------------------------------------------------------------------ watches

function buildWatches() {
  const err = (name) => h("p", { id: `ws-watch-err-${name}`, class: "ws-error", role: "alert", hidden: true });
  const described = (name) => ({ "aria-describedby": `ws-watch-err-${name}` });
  return h(
    "section",
    { id: "ws-view-watches", class: "ws-view card", hidden: true, "aria-labelledby": "ws-watch-form-title" },
    h(
      "form",
      { id: "ws-watch", onsubmit: onSaveWatch, novalidate: true },
      h("h3", { id: "ws-watch-form-title", tabindex: "-1", text: "New watch" }),
      field("ws-watch-name", "Name", h("input", { type: "text", maxlength: "200", ...described("name") })),
      err("name"),
      field("ws-watch-url", "Webhook URL", h("input", { type: "url", placeholder: "https://example.com/hook", maxlength: "2000", ...described("webhook_url") })),
      err("webhook_url"),
      h(
        "fieldset",
        { id: "ws-watch-genres", ...described("genres") },
        h("legend", { text: "Genres: the minimum probability of each (0: not watched)" }),
        h("div", { id: "ws-genre-sliders", class: "ws-sliders" }),
      ),
      err("genres"),
      h(
        "fieldset",
        { id: "ws-watch-like", ...described("like") },
        h("legend", { text: "Like-tracks: new tracks that sound like these (from my catalog or search results)" }),
        h("div", { id: "ws-like-choices", class: "ws-choices" }),
      ),
      err("like"),
      field("ws-watch-min-sim", "Minimum similarity to a like-track", h("input", { type: "number", min: "-1", max: "1", step: "0.01", value: "0.8", ...described("min_similarity") })),
      err("min_similarity"),
      field("ws-watch-exclude", "Leave out these artists (comma-separated)", h("input", { type: "text", maxlength: "2000", ...described("exclude_artists") })),
      err("exclude_artists"),
      h(
        "fieldset",
        { class: "ws-inline" },
        h("legend", { text: "Mood, tempo, key and voice (optional)" }),
        field("ws-watch-mood", "Mood", select("ws-watch-mood", MOODS, described("mood"))),
        field("ws-watch-bpm", "Tempo (BPM range)", h("input", { type: "text", placeholder: "85-95", maxlength: "20", ...described("bpm") })),
        field("ws-watch-key", "Key", h("input", { type: "text", placeholder: "A minor or 8A", maxlength: "20", ...described("key") })),
        field("ws-watch-voice", "Voice", select("ws-watch-voice", VOICES, described("voice"))),
      ),
      err("mood"),
      err("bpm"),
      err("key"),
      err("voice"),
      h(
        "div",
        { class: "ws-buttons" },
        h("button", { type: "button", id: "ws-watch-check", class: "ws-btn ws-quiet", text: "Check", onclick: () => checkWatch() }),
        h("button", { type: "submit", id: "ws-watch-save", class: "ws-btn", text: "Save watch" }),
        h("button", { type: "button", id: "ws-watch-cancel", class: "ws-btn ws-quiet", hidden: true, text: "Cancel editing", onclick: resetWatchForm }),
      ),
      h("p", { id: "ws-watch-checked", class: "ws-ok", role: "status" }),
      h("p", { id: "ws-watch-error", class: "ws-error", role: "alert", hidden: true }),
    ),
    h(
      "div",
      { id: "ws-secret", class: "ws-secret", hidden: true, role: "region", "aria-labelledby": "ws-secret-title" },
      h("h4", { id: "ws-secret-title", tabindex: "-1", text: "The watch's signing secret: shown this once" }),
      h("p", { text: "Copy it now into your webhook receiver: the service will never show it again (rotate the secret to get a new one). Anyone with it can sign messages as this service." }),
      h("label", { for: "ws-secret-value", text: "Signing secret" }),
      h("input", { id: "ws-secret-value", type: "text", readonly: true, class: "ws-code" }),
      h(
        "div",
        { class: "ws-buttons" },
        h("button", { type: "button", id: "ws-secret-copy", class: "ws-btn", text: "Copy", onclick: copySecret }),
        h("button", { type: "button", id: "ws-secret-done", class: "ws-btn ws-quiet", text: "I have stored it", onclick: hideSecret }),
      ),
      h("p", { id: "ws-secret-copied", role: "status" }),
    ),
    h("h3", { text: "My watches" }),
    h("p", { id: "ws-watches-error", class: "ws-error", role: "alert", hidden: true }),
    h(
      "div",
      { class: "ws-scroll" },
      h(
        "table",
        { id: "ws-watches", class: "ws-table" },
        h("caption", { class: "ws-sr", text: "My watches" }),
        h("thead", null, h("tr", null, ["Name", "State", "Conditions", "Actions"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", { id: "ws-watches-body", onclick: onWatchAction }),
      ),
    ),
    h(
      "section",
      { id: "ws-watch-detail", class: "ws-detail", hidden: true, "aria-labelledby": "ws-detail-title" },
      h("h3", { id: "ws-detail-title", tabindex: "-1" }),
      h(
        "div",
        { class: "ws-buttons" },
        h("button", { type: "button", class: "ws-btn ws-quiet", text: "Refresh", onclick: () => loadWatchDetail() }),
        h("button", { type: "button", class: "ws-btn ws-quiet", text: "Close", onclick: closeWatch }),
      ),
      h("p", { id: "ws-detail-error", class: "ws-error", role: "alert", hidden: true }),
      h("h4", { text: "Matches" }),
      h("ol", { id: "ws-matches", class: "ws-results" }),
      h("h4", { text: "Deliveries" }),
      h("ol", { id: "ws-deliveries", class: "ws-results", onclick: onRedeliver }),
    ),
  );
}

function renderGenreSliders(values) {
  const box = $("ws-genre-sliders");
  if (!box) return;
  box.replaceChildren(
    ...state.labels.map((g) => {
      const id = `ws-genre-${g}`;
      const v = values && values[g] != null ? values[g] : 0;
      const out = h("output", { for: id, id: `${id}-value`, text: v ? v.toFixed(2) : "off" });
      const input = h("input", {
        type: "range",
        id,
        min: "0",
        max: "1",
        step: "0.05",
        value: String(v),
        "data-genre": g,
        "aria-valuetext": v ? `at least ${v.toFixed(2)}` : "not watched",
        oninput: (e) => {
          const x = Number(e.target.value);
          out.textContent = x ? x.toFixed(2) : "off";
          e.target.setAttribute("aria-valuetext", x ? `at least ${x.toFixed(2)}` : "not watched");
        },
      });
      return h("div", { class: "ws-slider" }, h("label", { for: id, text: g }), input, out);
    }),
  );
}

function renderLikeChoices(chosen) {
  const box = $("ws-like-choices");
  if (!box) return;
  const picked = new Set(chosen || [...box.querySelectorAll("input:checked")].map((i) => i.value));
  const options = new Map();
  for (const t of state.tracks) options.set(t.id, trackName(t) + " (mine)");
  for (const [id, t] of state.likePool) if (!options.has(id)) options.set(id, trackName(t) + " (from search)");
  for (const id of picked) if (!options.has(id)) options.set(id, `track ${id}`);
  box.replaceChildren(
    ...[...options].map(([id, text]) =>
      h("label", { class: "ws-choice" }, h("input", { type: "checkbox", value: id, checked: picked.has(id), "data-like": id }), " " + text),
    ),
  );
  if (!options.size) box.append(h("p", { class: "ws-muted", text: "No tracks yet: upload some, or add search results." }));
}

function renderLikeTrackSelect() {
  const s = $("ws-like-track");
  if (!s) return;
  const keep = s.value;
  const frag = document.createDocumentFragment();
  frag.append(h("option", { value: "", text: "choose a track" }));
  for (const t of state.tracks) frag.append(h("option", { value: t.id, text: trackName(t) }));
  s.replaceChildren(frag);
  s.value = state.tracks.some((t) => t.id === keep) ? keep : "";
  if (!$("ws-view-watches").hidden) renderLikeChoices();
}

function watchBody() {
  const genres = {};
  document.querySelectorAll("#ws-genre-sliders input[type=range]").forEach((i) => {
    if (Number(i.value) > 0) genres[i.dataset.genre] = Number(i.value);
  });
  const body = {
    name: $("ws-watch-name").value.trim(),
    webhook_url: $("ws-watch-url").value.trim(),
    genres,
    like: [...document.querySelectorAll("#ws-like-choices input:checked")].map((i) => i.value),
    min_similarity: Number($("ws-watch-min-sim").value || 0.8),
    exclude_artists: $("ws-watch-exclude").value.split(",").map((s) => s.trim()).filter(Boolean),
  };
  // the conditions of issue 33, sent only when set (an older service names them unknown)
  for (const [name, id] of [["mood", "ws-watch-mood"], ["bpm", "ws-watch-bpm"], ["key", "ws-watch-key"], ["voice", "ws-watch-voice"]]) {
    const v = $(id).value.trim();
    if (v) body[name] = v;
  }
  return body;
}

// POST /watches?dry_run=true: everything a save checks (the webhook URL as the API checks
// it included), nothing stored.
async function checkWatch() {
  $("ws-watch-checked").textContent = "";
  const res = await api("POST", "watches", { json: watchBody(), params: { dry_run: "true" } });
  const editQuota = state.editing && res.status === 403; // an edit adds no watch
  if (!res.ok && !editQuota) {
    showFieldError("ws-watch", res, "ws-watch-error");
    return false;
  }
  showFieldError("ws-watch", null, "ws-watch-error");
  $("ws-watch-checked").textContent = "Checked: the service accepts this watch and its webhook URL.";
  return true;
}

async function onSaveWatch(e) {
  e.preventDefault();
  if (!(await checkWatch())) return;
  const body = watchBody();
  const res = state.editing
    ? await api("PATCH", `watches/${encodeURIComponent(state.editing)}`, { json: body })
    : await api("POST", "watches", { json: body });
  if (!res.ok) {
    $("ws-watch-checked").textContent = "";
    return showFieldError("ws-watch", res, "ws-watch-error");
  }
  $("ws-watch-checked").textContent = state.editing ? `Saved “${res.data.name}”.` : `Created “${res.data.name}”.`;
  if (res.data.secret) showSecret(res.data.secret);
  resetWatchForm(null, true);
  await Promise.all([loadWatches(), refreshMe()]);
}

function showSecret(secret) {
  $("ws-secret-value").value = secret;
  $("ws-secret-copied").textContent = "";
  $("ws-secret").hidden = false;
  $("ws-secret-title").focus();
}

function hideSecret() {
  $("ws-secret-value").value = "";
  $("ws-secret").hidden = true;
  $("ws-watch-form-title").focus();
}

async function copySecret() {
  const input = $("ws-secret-value");
  let done = false;
  try {
    await navigator.clipboard.writeText(input.value);
    done = true;
  } catch (e) {
    input.select();
    done = document.execCommand && document.execCommand("copy");
  }
  $("ws-secret-copied").textContent = done ? "Copied." : "Select the secret and copy it by hand.";
}

function resetWatchForm(e, keepStatus) {
  state.editing = null;
  $("ws-watch").reset();
  renderGenreSliders();
  renderLikeChoices([]);
  $("ws-watch-form-title").textContent = "New watch";
  $("ws-watch-save").textContent = "Save watch";
  $("ws-watch-cancel").hidden = true;
  if (!keepStatus) $("ws-watch-checked").textContent = "";
  showFieldError("ws-watch", null, "ws-watch-error");
}

function editWatch(w) {
  resetWatchForm();
  state.editing = w.id;
  $("ws-watch-name").value = w.name;
  $("ws-watch-url").value = w.webhook_url;
  renderGenreSliders(w.genres || {});
  renderLikeChoices(w.like || []);
  $("ws-watch-min-sim").value = w.min_similarity;
  $("ws-watch-exclude").value = (w.exclude_artists || []).join(", ");
  for (const [name, id] of [["mood", "ws-watch-mood"], ["bpm", "ws-watch-bpm"], ["key", "ws-watch-key"], ["voice", "ws-watch-voice"]]) {
    if (w[name] != null) $(id).value = typeof w[name] === "string" ? w[name] : JSON.stringify(w[name]);
  }
  $("ws-watch-form-title").textContent = `Edit “${w.name}”`;
  $("ws-watch-save").textContent = "Save changes";
  $("ws-watch-cancel").hidden = false;
  $("ws-watch-form-title").focus();
}

function conditions(w) {
  const parts = [];
  const g = Object.entries(w.genres || {});
  if (g.length) parts.push(g.map(([k, v]) => `${k} ≥ ${Number(v).toFixed(2)}`).join(", "));
  if ((w.like || []).length) parts.push(`like ${w.like.length} track${w.like.length === 1 ? "" : "s"} (≥ ${w.min_similarity})`);
  for (const name of ["mood", "bpm", "key", "voice"]) {
    if (w[name] != null && w[name] !== "") parts.push(`${name} ${typeof w[name] === "string" ? w[name] : JSON.stringify(w[name])}`);
  }
  if ((w.exclude_artists || []).length) parts.push(`not by ${w.exclude_artists.join(", ")}`);
  return parts.join("; ");
}

async function loadWatches() {
  if (!key()) return;
  const res = await api("GET", "watches");
  if (!res.ok) return showError("ws-watches-error", res);
  showError("ws-watches-error", null);
  state.watches = res.data.watches;
  const rows = state.watches.map((w) =>
    h(
      "tr",
      { "data-id": w.id },
      cell("Name", w.name),
      cell("State", w.active ? "active" : `disabled: ${w.disabled_reason || "by its owner"}`, "ws-state"),
      cell("Conditions", conditions(w)),
      h(
        "td",
        { "data-label": "Actions", class: "ws-actions" },
        ["open:Matches and deliveries", "edit:Edit", "test:Send a test", "rotate:Rotate secret", w.active ? null : "enable:Enable", "delete:Delete"]
          .filter(Boolean)
          .map((s) => {
            const [action, text] = s.split(":");
            return h("button", {
              type: "button",
              class: `ws-btn ws-small${action === "delete" ? " ws-danger" : " ws-quiet"}`,
              "data-action": action,
              "aria-label": `${text}: ${w.name}`,
              text,
            });
          }),
      ),
    ),
  );
  $("ws-watches-body").replaceChildren(...rows);
  if (!rows.length) $("ws-watches-body").append(h("tr", null, h("td", { colspan: "4", class: "ws-muted", text: "No watches yet." })));
}

async function onWatchAction(e) {
  const b = e.target.closest("button[data-action]");
  if (!b) return;
  const id = b.closest("tr").dataset.id;
  const w = state.watches.find((x) => x.id === id);
  const path = `watches/${encodeURIComponent(id)}`;
  let res;
  switch (b.dataset.action) {
    case "open":
      return openWatch(w);
    case "edit":
      return editWatch(w);
    case "test":
      res = await api("POST", `${path}/test`);
      if (res.ok) notice(`A test event is on its way to ${w.webhook_url}.`);
      break;
    case "rotate":
      if (!window.confirm(`Rotate the signing secret of “${w.name}”? The old one keeps signing beside the new one for 24 hours.`)) return;
      res = await api("POST", `${path}/rotate-secret`);
      if (res.ok) showSecret(res.data.secret);
      break;
    case "enable":
      res = await api("PATCH", path, { json: { active: true } });
      break;
    case "delete":
      if (!window.confirm(`Delete the watch “${w.name}”? Its deliveries not yet sent are cancelled.`)) return;
      res = await api("DELETE", path);
      if (res.ok && state.openWatch === id) closeWatch();
      break;
  }
  if (res && !res.ok) return showError("ws-watches-error", res);
  await Promise.all([loadWatches(), refreshMe()]);
  if (state.openWatch === id) loadWatchDetail();
}

function openWatch(w) {
  state.openWatch = w.id;
  $("ws-detail-title").textContent = `“${w.name}”: matches and deliveries`;
  $("ws-watch-detail").hidden = false;
  $("ws-detail-title").focus();
  loadWatchDetail();
  stopPolling();
  state.poll = setInterval(loadWatchDetail, POLL_MS);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

function closeWatch() {
  stopPolling();
  state.openWatch = null;
  const d = $("ws-watch-detail");
  if (d) d.hidden = true;
}

async function loadWatchDetail() {
  const id = state.openWatch;
  if (!id || !key()) return;
  const path = `watches/${encodeURIComponent(id)}`;
  const [m, d] = await Promise.all([api("GET", `${path}/matches`), api("GET", `${path}/deliveries`)]);
  if (state.openWatch !== id) return;
  if (!m.ok || !d.ok) return showError("ws-detail-error", m.ok ? d : m);
  showError("ws-detail-error", null);
  const matches = m.data.matches.map((x) =>
    h(
      "li",
      { "data-track": x.track_id, class: "ws-match" },
      h("b", { text: x.title || "Untitled" }),
      ` — ${x.artist || "unknown artist"} · score ${Number(x.score).toFixed(2)} · ${new Date(x.created_at).toLocaleString()}`,
    ),
  );
  $("ws-matches").replaceChildren(...matches);
  if (!matches.length) $("ws-matches").append(h("li", { class: "ws-muted", text: "No match yet." }));
  const deliveries = d.data.deliveries.map((x) => {
    const attempts = x.attempts.map((a) =>
      h(
        "li",
        { class: "ws-attempt", "data-status-code": a.status_code == null ? "" : String(a.status_code) },
        `${new Date(a.at).toLocaleString()}: ${a.status_code == null ? "no reply" : "HTTP " + a.status_code} in ${fmt(a.latency_ms)} ms${a.error ? " — " + a.error : ""}`,
      ),
    );
    return h(
      "li",
      { "data-id": x.id, "data-status": x.status, class: "ws-delivery" },
      h("b", { text: `${x.event} · ${x.status}` }),
      x.track_id ? ` · track ${x.track_id}` : "",
      x.last_error ? ` · last error: ${x.last_error}` : "",
      x.next_attempt_at ? ` · next attempt ${new Date(x.next_attempt_at).toLocaleTimeString()}` : "",
      " ",
      h("button", { type: "button", class: "ws-btn ws-small ws-quiet", "data-delivery": x.id, "aria-label": `Redeliver ${x.event} ${x.id}`, text: "Redeliver" }),
      attempts.length ? h("ol", { class: "ws-attempts", "aria-label": "Attempts" }, attempts) : h("p", { class: "ws-muted", text: "no attempt yet" }),
    );
  });
  $("ws-deliveries").replaceChildren(...deliveries);
  if (!deliveries.length) $("ws-deliveries").append(h("li", { class: "ws-muted", text: "No delivery yet." }));
}

async function onRedeliver(e) {
  const b = e.target.closest("button[data-delivery]");
  if (!b) return;
  const res = await api("POST", `watches/${encodeURIComponent(state.openWatch)}/deliveries/${encodeURIComponent(b.dataset.delivery)}/redeliver`);
  if (!res.ok) return showError("ws-detail-error", res);
  notice("Sent again (the same webhook-id).");
  loadWatchDetail();
}

// ------------------------------------------------------------------ start

function start() {
  const header = $("ws-header");
  const ws = $("workspace");
  if (!header || !ws) return;
  buildSignIn(header);
  buildWorkspace(ws);
  if (key()) signIn(false);
}

start();

// for loadtests/ui_render.py (which imports this module into the page it measures)
export { lineupCsv, renderTracks, state };
