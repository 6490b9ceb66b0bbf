// The page's own script (the verdict, the timeline, the spectrogram, mood, "Tracks like
// this"): a file, so the Content-Security-Policy allows scripts from the service only.
(function () {
  "use strict";

  var PALETTE = {
    blues: "#2f6fde", classical: "#8e6bbf", country: "#c8892b", disco: "#e0559b",
    electronic: "#12a4a8", hiphop: "#d9573b", "hip-hop": "#d9573b", jazz: "#b5852f",
    metal: "#4a4f5c", pop: "#e64980", reggae: "#2f9e44", rock: "#e8590c",
    folk: "#7a9a3a", experimental: "#6f5bd6", instrumental: "#3f8fc0", international: "#c2255c",
    "pop-rock": "#e8590c", rnb: "#9c36b5"
  };
  var FALLBACK = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#0c8599", "#f08c00", "#c2255c", "#5c940d", "#1971c2", "#862e9c"];

  function genreColor(label, labels) {
    var key = String(label).toLowerCase();
    if (PALETTE[key]) return PALETTE[key];
    var idx = labels ? labels.indexOf(label) : -1;
    if (idx < 0) { idx = 0; for (var i = 0; i < key.length; i++) idx = (idx * 31 + key.charCodeAt(i)) >>> 0; }
    return FALLBACK[idx % FALLBACK.length];
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c != null) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function pct(p) { return Math.round((Number(p) || 0) * 100); }
  function fmtTime(s) {
    s = Math.max(0, Math.round(Number(s) || 0));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }

  var $ = function (id) { return document.getElementById(id); };
  var input = $("file-input"), dropzone = $("dropzone"), chooseBtn = $("choose-btn");
  var progress = $("progress"), progressBar = $("progress-bar"), progressText = $("progress-text"),
      progressPct = $("progress-pct"), progressTrack = $("progress-track");
  var errorBox = $("error"), results = $("results");
  var busy = false;

  function setBusy(b) {
    busy = b;
    input.disabled = b;
    dropzone.classList.toggle("busy", b);
    dropzone.setAttribute("aria-disabled", b ? "true" : "false");
    chooseBtn.textContent = b ? "Working…" : (results.hidden ? "Choose a file" : "Analyse another file");
  }
  function showProgress(fraction) {
    progress.hidden = false;
    progress.classList.remove("indeterminate");
    var p = Math.round(fraction * 100);
    progressText.textContent = "Uploading…";
    progressPct.textContent = p + " %";
    progressBar.style.width = p + "%";
    progressTrack.setAttribute("aria-valuenow", String(p));
  }
  function showAnalysing() {
    progress.hidden = false;
    progress.classList.add("indeterminate");
    progressText.textContent = "Analysing… the models are listening";
    progressPct.textContent = "";
    progressBar.style.width = "";
    progressTrack.removeAttribute("aria-valuenow");
  }
  function hideProgress() { progress.hidden = true; progress.classList.remove("indeterminate"); }
  function showError(msg) {
    errorBox.textContent = "";
    errorBox.appendChild(el("strong", { text: "We couldn't analyse that file: " }));
    errorBox.appendChild(document.createTextNode(msg));
    errorBox.hidden = false;
  }
  function clearError() { errorBox.hidden = true; errorBox.textContent = ""; }

  function predictUrl() {
    return new URL("../predict?spectrogram=true", window.location.href).toString();
  }

  function similarUrl() {
    return new URL("../similar?k=5", window.location.href).toString();
  }

  // "Tracks like this": the catalog's consented tracks nearest to the upload (not stored).
  function loadSimilar(file) {
    var list = $("similar"), note = $("similar-note");
    list.textContent = ""; list.hidden = true;
    note.textContent = "Looking for tracks like this in the catalog…"; note.hidden = false;
    var form = new FormData();
    form.append("audio", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", similarUrl());
    xhr.onload = function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status !== 200 || !body) {
        note.textContent = "The catalog could not be searched right now" +
          (body && body.detail ? " (" + body.detail + ")." : ".");
        return;
      }
      renderSimilar(body.results || []);
    };
    xhr.onerror = function () { note.textContent = "The catalog could not be reached."; };
    xhr.send(form);
  }

  function renderSimilar(results) {
    var list = $("similar"), note = $("similar-note");
    list.textContent = "";
    if (!results.length) {
      note.textContent = "No tracks in the catalog yet: tracks appear here once their owners add them with consent to be found.";
      note.hidden = false; list.hidden = true;
      return;
    }
    results.forEach(function (r) {
      list.appendChild(el("li", { className: "similar-track", "data-id": r.id }, [
        el("b", { className: "title", text: r.title || "Untitled" }),
        " — ", el("span", { className: "artist", text: r.artist || "unknown artist" }),
        " · ", el("span", { className: "genre", text: r.genre }),
        " · ", el("span", { className: "score", text: "similarity " + Number(r.score).toFixed(2) })
      ]));
    });
    list.hidden = false; note.hidden = true;
  }
  window.renderSimilar = renderSimilar;

  // The upload plays in the page; a playhead moves over the timeline and the spectrogram,
  // and a click on either seeks there.
  var player = $("player"), trackDuration = 0, objectUrl = null;
  function playerDuration() {
    return isFinite(player.duration) && player.duration > 0 ? player.duration : trackDuration;
  }
  function movePlayheads() {
    var d = playerDuration(), f = d > 0 ? Math.min(1, Math.max(0, player.currentTime / d)) : 0;
    ["playhead-timeline", "playhead-spectrogram"].forEach(function (id) {
      var h = $(id); h.hidden = false; h.style.left = (f * 100).toFixed(3) + "%";
    });
  }
  function seekFrom(event) {
    var rect = event.currentTarget.getBoundingClientRect(), d = playerDuration();
    if (!rect.width || !d) return;
    player.currentTime = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)) * d;
    movePlayheads();
    var p = player.play(); if (p && p.catch) p.catch(function () {});
  }
  ["timeupdate", "seeked", "loadedmetadata"].forEach(function (t) { player.addEventListener(t, movePlayheads); });
  player.addEventListener("play", function tick() {
    movePlayheads();
    if (!player.paused) window.requestAnimationFrame(tick);
  });
  $("timeline-wrap").addEventListener("click", seekFrom);
  $("spectrogram-wrap").addEventListener("click", seekFrom);
  function setPlayer(file, duration) {
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    trackDuration = Number(duration) || 0;
    player.src = objectUrl;
    movePlayheads();
  }

  function upload(file) {
    if (busy || !file) return;
    clearError();
    results.hidden = true;  // don't leave an older track's results next to the new upload
    setBusy(true);
    showProgress(0);
    var form = new FormData();
    form.append("audio", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", predictUrl());
    xhr.responseType = "text";
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) showProgress(e.loaded / e.total);
    };
    xhr.upload.onload = showAnalysing;
    xhr.onload = function () {
      hideProgress();
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 200 && body) {
        try { renderResults(body, file.name); setPlayer(file, body.duration_s); loadSimilar(file); }
        catch (e) { results.hidden = true; showError("the server's reply could not be displayed (" + e.message + ")."); }
      } else {
        var detail = body && (body.detail || body.error);
        if (detail && typeof detail !== "string") detail = JSON.stringify(detail);
        showError(detail || ("the server answered with HTTP " + xhr.status + (xhr.statusText ? " " + xhr.statusText : "") + "."));
      }
      setBusy(false);
    };
    xhr.onerror = function () {
      hideProgress();
      showError("the server could not be reached. Check your connection and try again.");
      setBusy(false);
    };
    xhr.ontimeout = xhr.onerror;
    xhr.send(form);
  }

  function renderModel(key, m, labels) {
    var probs = m.probabilities || {};
    var top = m.top_genre;
    var rows = labels.map(function (g) {
      var p = pct(probs[g]);
      var bar = el("div", { className: "bar", title: g + " " + p + " %" });
      bar.style.width = p + "%";
      if (g === top) bar.style.background = genreColor(g, labels);
      return el("div", { className: "row" + (g === top ? " is-top" : ""), "data-genre": g }, [
        el("span", { className: "name", text: g }),
        el("div", { className: "track" }, [bar]),
        el("span", { className: "pct", text: p + " %" })
      ]);
    });
    var met = m.metrics || {};
    var accText;
    if (met.accuracy != null && met.n_tracks) {
      var right = Math.round(met.accuracy * met.n_tracks);
      accText = "Right on " + right + " of " + met.n_tracks + " tracks by artists it never heard in training (" + pct(met.accuracy) + " %).";
    } else if (met.accuracy != null) {
      accText = "Right on " + pct(met.accuracy) + " % of test tracks by artists it never heard in training.";
    } else {
      accText = "No validation score recorded for this model.";
    }
    if (met.ece != null) {
      // the reply's metrics are those of the calibrated probabilities shown above
      accText += " Its percentages are calibrated: on those tracks they were off from how often it was right by " + (met.ece * 100).toFixed(1) + " points on average.";
    }
    return el("div", { className: "model-card", "data-model": key }, [
      el("h3", { text: m.display_name || key }),
      el("p", { className: "top" }, ["Hears ", el("b", { className: "top-genre", text: top }), " (" + pct(m.top_probability) + " %)"]),
      el("div", { className: "bars" }, rows),
      el("p", { className: "acc", text: accText })
    ]);
  }

  function renderTimeline(data, labels) {
    var tl = $("timeline"), legend = $("legend");
    tl.textContent = ""; legend.textContent = "";
    var entries = (data.timeline || []).slice().sort(function (a, b) { return a.start_s - b.start_s; });
    var duration = Number(data.duration_s) || (entries.length ? entries[entries.length - 1].end_s : 0);
    var used = {};
    entries.forEach(function (w, i) {
      var start = Math.max(0, w.start_s);
      var end = i + 1 < entries.length ? entries[i + 1].start_s : duration;
      if (i === 0) start = 0;  // cover the strip from the very beginning
      var frac = duration > 0 ? Math.max(0, end - start) / duration : 1 / entries.length;
      var seg = el("div", { className: "segment", "data-genre": w.top_genre,
        title: fmtTime(w.start_s) + "\u2013" + fmtTime(w.end_s) + " " + w.top_genre + " " + pct(w.probability) + " %" +
          (w.bpm != null ? ", " + Math.round(w.bpm) + " BPM" : "") + (w.key ? ", " + w.key : "") });
      seg.style.width = (frac * 100).toFixed(3) + "%";
      seg.style.background = genreColor(w.top_genre, labels);
      seg.style.opacity = String(0.55 + 0.45 * Math.min(1, Math.max(0, Number(w.probability) || 0)));
      tl.appendChild(seg);
      used[w.top_genre] = true;
    });
    $("time-start").textContent = "0:00";
    $("time-end").textContent = fmtTime(duration);
    labels.forEach(function (g) {
      var item = el("span", { className: "legend-item", "data-genre": g }, [el("span", { className: "genre-chip" }), g]);
      item.firstChild.style.background = genreColor(g, labels);
      if (!used[g]) item.style.opacity = "0.45";
      legend.appendChild(item);
    });
  }

  // Tempo and key beside the verdict (docs/api.md "Tempo and key").
  function renderDescriptors(d) {
    var parts = [], t = d.tempo || {}, k = d.key || {};
    if (t.bpm != null) {
      parts.push("Tempo " + Math.round(t.bpm) + " BPM" +
        (t.alternative_bpm != null ? " (or " + Math.round(t.alternative_bpm) + ")" : "") +
        ", " + pct(t.confidence) + " % sure");
    }
    if (k.tonic) {
      parts.push("key " + k.tonic + " " + k.mode + " (" + k.camelot + "), " + pct(k.confidence) + " % sure");
    }
    var p = $("descriptors");
    p.textContent = parts.join(" \u00b7 ");
    p.hidden = parts.length === 0;
  }

  // Mood and voice (docs/api.md "Mood and voice"): arousal-valence point, GEMS bars, voice and
  // instrument chips, mood over time. Self-contained: reads the reply, writes #mood only.
  var QUAD = { Q1: ["exuberant", "#f2a541"], Q2: ["anxious", "#d9534f"], Q3: ["sad", "#5b7bd5"], Q4: ["calm", "#5cb85c"] };
  var RELIABLE = ["tenderness", "calmness", "power", "joyful_activation"];
  function renderMood(d, timeline, duration) {
    var box = $("mood"), m = d.mood;
    box.hidden = !m;
    if (!m) return;
    var svg = $("mood-plane"), ns = "http://www.w3.org/2000/svg";
    svg.textContent = "";
    function add(tag, attrs, text) {
      var n = document.createElementNS(ns, tag);
      Object.keys(attrs).forEach(function (a) { n.setAttribute(a, attrs[a]); });
      if (text) n.textContent = text;
      svg.appendChild(n); return n;
    }
    add("line", { x1: 50, y1: 0, x2: 50, y2: 100, stroke: "#ccd" });
    add("line", { x1: 0, y1: 50, x2: 100, y2: 50, stroke: "#ccd" });
    [["Q1", 75, 12], ["Q2", 25, 12], ["Q3", 25, 95], ["Q4", 75, 95]].forEach(function (q) {
      add("text", { x: q[1], y: q[2], "font-size": 8, "text-anchor": "middle", fill: "#889" }, QUAD[q[0]][0]);
    });
    add("text", { x: 98, y: 48, "font-size": 6, "text-anchor": "end", fill: "#aab" }, "valence \u2192");
    add("text", { x: 52, y: 30, "font-size": 6, fill: "#aab", transform: "rotate(-90 52 30)" }, "arousal \u2192");
    add("circle", { id: "mood-point", cx: 100 * m.valence, cy: 100 * (1 - m.arousal), r: 5, fill: QUAD[m.quadrant][1], "fill-opacity": 0.8 });
    var gems = $("mood-gems");
    gems.textContent = "";
    gems.appendChild(el("div", { className: "muted", text: "Mood " + m.quadrant + " (" + QUAD[m.quadrant][0] + ", " +
      pct(m.probabilities[m.quadrant]) + " %): arousal " + pct(m.arousal) + " %, valence " + pct(m.valence) + " %" }));
    Object.keys(d.gems || {}).forEach(function (g) {
      var bar = el("div", { className: "bar" });
      bar.style.width = pct(d.gems[g]) + "%";
      gems.appendChild(el("div", { className: "gem" + (RELIABLE.indexOf(g) < 0 ? " weak" : ""), "data-gem": g },
        [g.replace("_", " "), el("div", null, [bar]), pct(d.gems[g]) + " %"]));
    });
    var chips = $("mood-chips");
    chips.textContent = "";
    var v = d.voice || {}, heard = [v.instrumental >= 0.5 ? "instrumental" : "vocals"];
    if (v.instrumental < 0.5) heard.push(v.female >= v.male ? "female voice" : "male voice");
    Object.keys(d.instruments || {}).filter(function (i) { return d.instruments[i] >= 0.2; })
      .sort(function (a, b) { return d.instruments[b] - d.instruments[a]; }).forEach(function (i) { heard.push(i); });
    heard.forEach(function (h) { chips.appendChild(el("span", { className: "chip", text: h })); });
    var strip = $("mood-time");
    strip.textContent = "";
    (timeline || []).forEach(function (w) {
      if (!w.mood) return;
      var seg = el("div", { title: fmtTime(w.start_s) + " " + w.mood + " (" + QUAD[w.mood][0] + ")" });
      seg.style.flex = String(Math.max(w.end_s - w.start_s, 0.01));
      seg.style.background = QUAD[w.mood][1];
      strip.appendChild(seg);
    });
    var legend = $("mood-legend");
    legend.textContent = "Mood over time: ";
    Object.keys(QUAD).forEach(function (q) {
      var dot = el("span", { text: "\u25a0 " });
      dot.style.color = QUAD[q][1];
      legend.appendChild(dot);
      legend.appendChild(document.createTextNode(q + " " + QUAD[q][0] + "  "));
    });
  }

  function renderResults(data, fileName) {
    var labels = Array.isArray(data.labels) && data.labels.length ? data.labels
      : Object.keys((data.ensemble && data.ensemble.probabilities) || {});
    var ens = data.ensemble || {};
    var models = data.models || {};
    var keys = Object.keys(models);

    var verdict = $("verdict");
    verdict.textContent = "";
    var chip = el("span", { className: "genre-chip" });
    chip.style.background = genreColor(ens.top_genre, labels);
    var nModels = ens.n_models || keys.length;
    var agree = ens.agreeing_models;
    var agreeText = agree == null ? "" : ", " + agree + " of " + nModels + (agree === 1 ? " model agrees" : " models agree");
    verdict.appendChild(document.createTextNode("This sounds like "));
    verdict.appendChild(chip);
    verdict.appendChild(el("strong", { id: "verdict-genre", text: ens.top_genre }));
    verdict.appendChild(document.createTextNode(" (" + pct(ens.top_probability) + " % confident" + agreeText + ")."));
    var between = Array.isArray(ens.between_genres) ? ens.between_genres : [];
    var note = $("between");
    if (between.length === 2) {
      note.textContent = "This track sits between genres: " + between[0] + " and " + between[1] +
        " are both likely, so read it as a blend rather than one label.";
      note.hidden = false;
    } else { note.textContent = ""; note.hidden = true; }
    renderDescriptors(data.descriptors || {});
    renderMood(data.descriptors || {}, data.timeline, data.duration_s);
    var top3 = Array.isArray(ens.top3) ? ens.top3 : [];
    $("top3").textContent = top3.length ? "Top three: " + top3.map(function (t) {
      return t.genre + " " + pct(t.probability) + " %"; }).join(", ") +
      (ens.calibrated ? " (calibrated probabilities)" : "") : "";
    $("file-name").textContent = fileName ? "File: " + fileName : "";

    var box = $("models");
    box.textContent = "";
    keys.forEach(function (k) { box.appendChild(renderModel(k, models[k], labels)); });

    var img = $("spectrogram");
    if (data.spectrogram_png) { img.src = data.spectrogram_png; img.parentNode.parentNode.hidden = false; }
    else { img.removeAttribute("src"); img.parentNode.parentNode.hidden = true; }

    renderTimeline(data, labels);

    var meta = $("meta");
    meta.textContent = "";
    meta.appendChild(document.createTextNode(
      "Duration " + fmtTime(data.duration_s) + " (" + (Number(data.duration_s) || 0).toFixed(1) + " s) \u00b7 " +
      (data.n_windows != null ? data.n_windows : (data.timeline || []).length) + " windows analysed \u00b7 request id "));
    meta.appendChild(el("code", { id: "request-id", text: data.request_id || "—" }));

    clearError();
    results.hidden = false;
    if (!busy) chooseBtn.textContent = "Analyse another file";
  }
  window.renderResults = renderResults;

  input.addEventListener("change", function () {
    var f = input.files && input.files[0];
    input.value = "";  // allow re-selecting the same file later
    if (f) upload(f);
  });
  dropzone.addEventListener("keydown", function (e) {
    if ((e.key === "Enter" || e.key === " ") && !busy) { e.preventDefault(); input.click(); }
  });
  ["dragenter", "dragover"].forEach(function (t) {
    dropzone.addEventListener(t, function (e) { e.preventDefault(); if (!busy) dropzone.classList.add("dragover"); });
  });
  ["dragleave", "dragend", "drop"].forEach(function (t) {
    dropzone.addEventListener(t, function () { dropzone.classList.remove("dragover"); });
  });
  dropzone.addEventListener("drop", function (e) {
    e.preventDefault();
    var f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
    if (f && !busy) upload(f);
  });
  // Keep a file dropped slightly outside the zone from navigating away from the page.
  window.addEventListener("dragover", function (e) { e.preventDefault(); });
  window.addEventListener("drop", function (e) { e.preventDefault(); });
})();
