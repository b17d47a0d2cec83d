/* labelaudit report: plots, the issue table, the detail view and review decisions.
 * Vanilla JavaScript, no libraries besides the inlined plotly.js. Data is only ever
 * written into the page with textContent (never innerHTML); strings handed to plotly
 * are HTML-escaped first because plotly renders a subset of HTML in labels. */
(function () {
  "use strict";

  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const TEMPLATE = JSON.parse(document.getElementById("plotly-template").textContent);
  /* One record per image, most suspicious first (labelaudit/report/table.py, TableRow):
   * id, given and suggested (class indices), detectors (bitmask over DATA.methods),
   * n_flags, consensus, consensus_flag, scores (in the order of DATA.scores), thumb and
   * detail (indices into DATA.thumbs / DATA.details, -1: none), changes, unreliable,
   * evidence, duplicate (group id text). DATA.stains: a caption per channel;
   * DATA.exclusive: the classes that stand alone (labelaudit/data/exclusive.py). */
  const ROWS = DATA.rows;
  const CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["sendDataToCloud", "lasso2d", "select2d"],
  };

  // ------------------------------------------------------------------ helpers

  function $(id) { return document.getElementById(id); }

  /** Escape text for plotly, which renders some HTML tags in labels and hover text. */
  function esc(s) {
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  /** Create an element with a class and text content (never HTML). */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function names(idx) { return idx.map(function (k) { return DATA.classes[k]; }); }
  function tokens(idx) { return idx.map(function (k) { return DATA.tokens[k]; }).join(DATA.sep); }
  function fmt(v) { return v === null || v === undefined ? "" : Number(v).toFixed(3); }
  function sameSet(a, b) { return a.length === b.length && a.every(function (x, i) { return x === b[i]; }); }
  function methodsOf(row) {
    return DATA.methods.filter(function (m, b) { return (row.detectors >> b) & 1; });
  }

  // -------------------------------------------------------------------- plots

  function webglAvailable() {
    try {
      const c = document.createElement("canvas");
      return !!(window.WebGLRenderingContext && (c.getContext("webgl") || c.getContext("experimental-webgl")));
    } catch (e) {
      return false;
    }
  }

  function drawPlots() {
    const gl = webglAvailable();
    document.querySelectorAll(".plot[data-fig]").forEach(function (div) {
      const spec = JSON.parse($(div.dataset.fig).textContent);
      const layout = spec.layout || {};
      layout.template = TEMPLATE;
      const traces = (spec.data || []).map(function (t) {
        if (t.type === "scattergl" && !gl) t.type = "scatter";
        return t;
      });
      Plotly.newPlot(div, traces, layout, CONFIG).then(function () {
        if (div.dataset.role === "embedding") wireEmbedding(div);
        if (div.dataset.role) wireClick(div);
      }, function (err) {
        div.replaceChildren(el("p", "missing", "This chart could not be drawn: " + err));
      });
    });
  }

  function wireClick(div) {
    div.on("plotly_click", function (ev) {
      const p = ev && ev.points && ev.points[0];
      if (p && typeof p.customdata === "number" && p.customdata >= 0) openDetail(p.customdata);
    });
  }

  function wireEmbedding(div) {
    const card = $("hovercard");
    div.on("plotly_hover", function (ev) {
      const p = ev && ev.points && ev.points[0];
      if (!p || typeof p.customdata !== "number" || p.customdata < 0) return;
      const row = ROWS[p.customdata];
      const img = card.querySelector("img");
      if (row.thumb >= 0) {
        img.src = DATA.thumbs[row.thumb];
        img.hidden = false;
      } else {
        img.hidden = true;
        img.removeAttribute("src");
      }
      card.querySelector(".hc-id").textContent = row.id;
      card.querySelector(".hc-labels").textContent = names(row.given).join(", ") || "(no label)";
      card.hidden = false;
      const e = ev.event || {};
      const x = (e.clientX || 0) + 16, y = (e.clientY || 0) + 16;
      card.style.left = Math.min(x, window.innerWidth - 280) + "px";
      card.style.top = Math.min(y, window.innerHeight - 200) + "px";
    });
    div.on("plotly_unhover", function () { card.hidden = true; });
  }

  // ---------------------------------------------------------------- decisions

  /* A decision per image id: {d: "keep" | "accept" | "edit" | "reject", labels: [class
   * indices] (edit only)}. keep: the given labels are right; accept: the suggestion (only
   * where there is one); edit: the reviewer's own labels; reject: leave the image out.
   * Kept in localStorage under the run's key and exported as id,decision,labels. */
  const KINDS = ["keep", "accept", "edit", "reject"];
  const DONE = { keep: "kept", accept: "accepted", edit: "edited", reject: "rejected" };
  const STORE_KEY = "labelaudit:decisions:v2:" + DATA.runKey;
  const OLD_STORE_KEY = "labelaudit:decisions:" + DATA.runKey;  // accept/reject only
  const EXCLUSIVE = DATA.exclusive || [];
  const decisions = new Map();
  const ROW_OF = new Map(ROWS.map(function (row, r) { return [row.id, r]; }));

  function hasSuggestion(row) { return !sameSet(row.given, row.suggested); }

  /** The labels a decision applies (sorted class indices; reject: none). */
  function labelsOf(row, rec) {
    if (!rec) return row.given;
    if (rec.d === "accept") return row.suggested;
    if (rec.d === "edit") return rec.labels;
    if (rec.d === "reject") return [];
    return row.given;
  }

  /** Why a decision cannot be taken for this row ("" when it can). */
  function refusal(row, rec) {
    if (KINDS.indexOf(rec.d) < 0) return "unknown decision " + JSON.stringify(rec.d);
    if (rec.d === "accept" && !hasSuggestion(row)) {
      return "no suggestion to accept for this image: keep (g), edit (e) or reject (r)";
    }
    if (rec.d === "edit") {
      const x = exclusiveConflict(rec.labels);
      if (x >= 0) return DATA.classes[x] + " cannot be combined with another class";
    }
    return "";
  }

  /** The exclusive class a label set combines with another (-1: none). */
  function exclusiveConflict(labels) {
    if (labels.length < 2) return -1;
    for (let i = 0; i < labels.length; i++) if (EXCLUSIVE.indexOf(labels[i]) >= 0) return labels[i];
    return -1;
  }

  function normalise(rec) {
    const out = { d: rec.d };
    if (rec.d === "edit") {
      out.labels = Array.from(new Set(rec.labels)).filter(function (k) {
        return Number.isInteger(k) && k >= 0 && k < DATA.classes.length;
      }).sort(function (a, b) { return a - b; });
    }
    return out;
  }

  function loadDecisions() {
    try {
      const saved = JSON.parse(window.localStorage.getItem(STORE_KEY) || "null");
      if (Array.isArray(saved)) {
        saved.forEach(function (item) {
          if (!Array.isArray(item)) return;
          const r = ROW_OF.get(String(item[0]));
          const rec = normalise({ d: item[1], labels: Array.isArray(item[2]) ? item[2] : [] });
          if (r !== undefined && !refusal(ROWS[r], rec)) decisions.set(ROWS[r].id, rec);
        });
        return;
      }
      // A page from before edit/keep stored [id, "accept" | "reject"]; its reject kept
      // the given labels, which is keep now.
      const old = JSON.parse(window.localStorage.getItem(OLD_STORE_KEY) || "[]");
      if (Array.isArray(old)) {
        old.forEach(function (pair) {
          if (!Array.isArray(pair)) return;
          const r = ROW_OF.get(String(pair[0]));
          const rec = { d: pair[1] === "reject" ? "keep" : pair[1] };
          if (r !== undefined && !refusal(ROWS[r], rec)) decisions.set(ROWS[r].id, rec);
        });
      }
    } catch (e) {
      storageFailed();
    }
  }

  function saveDecisions() {
    try {
      const items = [];
      decisions.forEach(function (rec, id) {
        items.push(rec.d === "edit" ? [id, rec.d, rec.labels] : [id, rec.d]);
      });
      window.localStorage.setItem(STORE_KEY, JSON.stringify(items));
    } catch (e) {
      storageFailed();
    }
  }

  function storageFailed() {
    const w = $("storage-warn");
    if (w) w.hidden = false;
  }

  /** Say something about the review (a refused key, an import) where the reviewer looks. */
  function say(text) {
    ["review-msg", "detail-msg"].forEach(function (id) { if ($(id)) $(id).textContent = text; });
  }

  /** Record ``rec`` for row ``r`` (``null``: undecided); false (and says why) if refused. */
  function decide(r, rec) {
    const row = ROWS[r];
    if (rec) {
      rec = normalise(rec);
      const why = refusal(row, rec);
      if (why) { say(row.id + ": " + why); return false; }
      decisions.set(row.id, rec);
    } else {
      decisions.delete(row.id);
    }
    say("");
    saveDecisions();
    refreshRow(r);
    updateDecided();
    if (state.detail === r) fillDecision(r);
    return true;
  }

  /** Toggle one decision of the buttons: pressing the decision taken undoes it. */
  function toggle(r, d) {
    const rec = decisions.get(ROWS[r].id);
    return decide(r, rec && rec.d === d && d !== "edit" ? null : { d: d });
  }

  /** Toggle class ``k`` in the labels of row ``r``'s decision (an edit); exclusive classes
   * stand alone: switching one on clears the others, switching another on clears it. */
  function toggleClass(r, k) {
    const row = ROWS[r];
    const rec = decisions.get(row.id);
    const base = rec && rec.d !== "reject" ? labelsOf(row, rec) : row.given;
    let next;
    if (base.indexOf(k) >= 0) {
      next = base.filter(function (x) { return x !== k; });
    } else if (EXCLUSIVE.indexOf(k) >= 0) {
      next = [k];
    } else {
      next = base.filter(function (x) { return EXCLUSIVE.indexOf(x) < 0; }).concat([k]);
    }
    return decide(r, { d: "edit", labels: next });
  }

  function updateDecided() {
    const n = { keep: 0, accept: 0, edit: 0, reject: 0 };
    decisions.forEach(function (rec) { n[rec.d]++; });
    $("decided").textContent = "reviewed " + decisions.size + " of " + ROWS.length + ": " +
      KINDS.map(function (d) { return n[d] + " " + DONE[d]; }).join(", ");
  }

  function csvField(s) {
    s = String(s);
    return /[",\r\n]|^\s|\s$/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  /** The decisions as CSV: id, decision, labels (the labels to apply, dataset notation). */
  function decisionsCsv() {
    const lines = ["id,decision,labels"];
    ROWS.forEach(function (row) {
      const rec = decisions.get(row.id);
      if (rec) lines.push([row.id, rec.d, tokens(labelsOf(row, rec))].map(csvField).join(","));
    });
    return lines.join("\n") + "\n";
  }

  function exportDecisions() {
    const blob = new Blob([decisionsCsv()], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "decisions-" + String(DATA.runName).replace(/[^A-Za-z0-9._-]+/g, "_") + ".csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }

  /** Records of a CSV text (RFC 4180: quoted fields, "" inside quotes), with line numbers. */
  function parseCsv(text) {
    const out = [];
    let field = "", rec = [], quoted = false, line = 1, start = 1;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (c === '"') quoted = false;
        else { if (c === "\n") line++; field += c; }
      } else if (c === '"') {
        quoted = true;
      } else if (c === ",") {
        rec.push(field); field = "";
      } else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        rec.push(field); out.push({ line: start, fields: rec });
        field = ""; rec = []; line++; start = line;
      } else {
        field += c;
      }
    }
    if (field !== "" || rec.length) { rec.push(field); out.push({ line: start, fields: rec }); }
    return out.filter(function (x) { return x.fields.some(function (f) { return f.trim() !== ""; }); });
  }

  /** Class indices of a label string in the dataset's notation (class names too). */
  function parseLabels(text) {
    const parts = String(text).split(DATA.sep === " " ? /\s+/ : DATA.sep).map(function (t) { return t.trim(); })
      .filter(function (t) { return t !== ""; });
    const out = [];
    for (let i = 0; i < parts.length; i++) {
      let k = DATA.tokens.indexOf(parts[i]);
      if (k < 0) k = DATA.classes.indexOf(parts[i]);
      if (k < 0) return { error: "unknown label " + JSON.stringify(parts[i]) };
      if (out.indexOf(k) < 0) out.push(k);
    }
    return { labels: out.sort(function (a, b) { return a - b; }) };
  }

  /** Load a decisions CSV (an export of this run) into the page; every row is checked as
   * ``labelaudit clean --decisions`` checks it, and the rows that fail are named. */
  function importDecisions(name, text) {
    const recs = parseCsv(text.replace(/^\uFEFF/, ""));
    const header = recs.length ? recs[0].fields.map(function (h) { return h.trim().toLowerCase(); }) : [];
    const iId = header.indexOf("id"), iDec = header.indexOf("decision"), iLab = header.indexOf("labels");
    if (iId < 0 || iDec < 0) {
      say(name + ": not a decisions file (expected columns id,decision,labels)");
      return 0;
    }
    const problems = [];
    let loaded = 0;
    recs.slice(1).forEach(function (x) {
      const id = (x.fields[iId] || "").trim();
      const r = ROW_OF.get(id);
      const d = (x.fields[iDec] || "").trim().toLowerCase();
      // keep and accept may leave the labels cell empty (docs/cleaning.md), as clean reads it
      const blank = iLab < x.fields.length && (x.fields[iLab] || "").trim() === "";
      const hasLabels = iLab >= 0 && iLab < x.fields.length && !(blank && (d === "keep" || d === "accept"));
      if (r === undefined) { problems.push("line " + x.line + ": unknown image id"); return; }
      const row = ROWS[r];
      const parsed = hasLabels ? parseLabels(x.fields[iLab]) : { labels: null };
      if (parsed.error) { problems.push("line " + x.line + ": " + parsed.error); return; }
      const rec = { d: d, labels: parsed.labels || [] };
      let why = refusal(row, rec);
      if (!why && parsed.labels) {
        const want = d === "accept" ? row.suggested : d === "keep" ? row.given : d === "reject" ? [] : parsed.labels;
        if (!sameSet(want, parsed.labels)) why = d + " with other labels than it applies";
      }
      if (!why && d === "edit" && !parsed.labels) why = "edit without labels";
      if (why) { problems.push("line " + x.line + ": " + why); return; }
      decisions.set(row.id, normalise(rec));
      loaded++;
    });
    saveDecisions();
    updateDecided();
    applyFilters();
    if (state.detail >= 0) fillDecision(state.detail);
    say("loaded " + loaded + " decision" + (loaded === 1 ? "" : "s") + " from " + name +
      (problems.length ? "; skipped " + problems.length + " (" + problems.slice(0, 3).join("; ") +
        (problems.length > 3 ? "; ..." : "") + ")" : ""));
    return loaded;
  }

  function chooseImport() {
    const input = $("import-file");
    const file = input.files && input.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = function () { importDecisions(file.name, String(reader.result)); input.value = ""; };
    reader.onerror = function () { say(file.name + ": cannot be read"); input.value = ""; };
    reader.readAsText(file);
  }

  // -------------------------------------------------------------------- table

  const state = {
    view: [], page: 0, pageSize: 50, sortKey: "rank", sortDir: 1, selected: -1, detail: -1,
  };

  function columns() {
    const cols = [
      { key: "rank", label: "#", sort: true, num: true },
      { key: "thumb", label: "" },
      { key: "id", label: "id", sort: true },
      { key: "given", label: "given" },
      { key: "sugg", label: "suggested" },
    ];
    DATA.scores.forEach(function (s, i) {
      cols.push({ key: "s" + i, label: s.label, sort: true, num: true, title: s.method ? "detector: " + s.method : "" });
    });
    cols.push({ key: "cons", label: "consensus", sort: true, num: true });
    cols.push({ key: "flags", label: "flagged by", sort: true });
    cols.push({ key: "evidence", label: "evidence", title: "the detectors (quality: its issue types) that put the row at its place in the default order; z in robust sigmas beyond the bulk" });
    cols.push({ key: "decision", label: "decision" });
    return cols;
  }

  function sortValue(r, key) {
    const row = ROWS[r];
    if (key === "rank") return r;
    if (key === "id") return row.id;
    if (key === "cons") return row.consensus;
    if (key === "flags") return row.n_flags;
    if (key[0] === "s") {
      const v = row.scores[Number(key.slice(1))];
      return v === null ? null : v;
    }
    return r;
  }

  function buildHead() {
    const tr = $("issue-head");
    columns().forEach(function (c) {
      const th = el("th", (c.num ? "num " : "") + (c.sort ? "sortable" : ""), c.label);
      if (c.title) th.title = c.title;
      if (c.sort) {
        th.dataset.key = c.key;
        th.tabIndex = 0;
        th.addEventListener("click", function () { sortBy(c.key); });
        th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(c.key); });
      }
      tr.appendChild(th);
    });
  }

  function sortBy(key) {
    if (state.sortKey === key) state.sortDir = -state.sortDir;
    else { state.sortKey = key; state.sortDir = key === "rank" || key === "id" ? 1 : -1; }
    applyFilters();
  }

  function readFilters() {
    const v = $("f-value").value;
    return {
      id: $("f-id").value.trim().toLowerCase(),
      method: $("f-method").value,
      cls: $("f-class").value,
      score: $("f-score").value,
      op: $("f-op").value,
      value: v === "" ? null : Number(v),
      changed: $("f-changed").checked,
      decision: $("f-decision").value,
    };
  }

  function matches(r, f) {
    const row = ROWS[r];
    if (f.id && row.id.toLowerCase().indexOf(f.id) < 0) return false;
    if (f.method === "@any" && !row.detectors) return false;
    if (f.method === "@none" && row.detectors) return false;
    if (f.method === "@consensus" && !row.consensus_flag) return false;
    if (f.method && f.method[0] !== "@" && !((row.detectors >> Number(f.method)) & 1)) return false;
    if (f.cls !== "") {
      const k = Number(f.cls);
      if (row.given.indexOf(k) < 0 && row.suggested.indexOf(k) < 0) return false;
    }
    if (f.score !== "" && f.value !== null && !isNaN(f.value)) {
      const s = f.score === "@consensus" ? row.consensus : row.scores[Number(f.score)];
      if (s === null || s === undefined) return false;
      if (f.op === "ge" ? s < f.value : s > f.value) return false;
    }
    if (f.changed && sameSet(row.given, row.suggested)) return false;
    if (f.decision) {
      const rec = decisions.get(row.id);
      if ((rec ? rec.d : "none") !== f.decision) return false;
    }
    return true;
  }

  function applyFilters() {
    const f = readFilters();
    const view = [];
    for (let r = 0; r < ROWS.length; r++) if (matches(r, f)) view.push(r);
    const key = state.sortKey, dir = state.sortDir;
    if (key !== "rank" || dir !== 1) {
      view.sort(function (a, b) {
        const x = sortValue(a, key), y = sortValue(b, key);
        if (x === y) return a - b;
        if (x === null) return 1;  // missing scores last
        if (y === null) return -1;
        return (x < y ? -1 : 1) * dir;
      });
    }
    state.view = view;
    state.page = 0;
    document.querySelectorAll("#issue-head th[data-key]").forEach(function (th) {
      if (th.dataset.key === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    renderPage();
  }

  function pageCount() { return Math.max(1, Math.ceil(state.view.length / state.pageSize)); }

  function chips(parent, list, cls) {
    list.forEach(function (text) { parent.appendChild(el("span", "chip" + (cls ? " " + cls : ""), text)); });
  }

  function buildRow(r) {
    const row = ROWS[r];
    const tr = document.createElement("tr");
    tr.dataset.row = String(r);
    tr.tabIndex = -1;
    tr.appendChild(el("td", "num", r + 1));
    const tdThumb = el("td", "thumb");
    if (row.thumb >= 0) {
      const img = el("img", "thumb");
      img.src = DATA.thumbs[row.thumb];
      img.alt = "";
      img.width = 56;
      img.height = 56;
      tdThumb.appendChild(img);
    } else {
      tdThumb.appendChild(el("div", "nothumb"));
    }
    tr.appendChild(tdThumb);
    const tdId = el("td", "id", row.id);
    if (row.unreliable) {  // findings on a class with fewer images than folds
      const mark = el("span", "unreliable", " (unreliable)");
      mark.title = "unreliable classes: " + row.unreliable;
      tdId.appendChild(mark);
    }
    tr.appendChild(tdId);
    const tdGiven = el("td", "labels");
    chips(tdGiven, names(row.given));
    tr.appendChild(tdGiven);
    tr.appendChild(suggestionCell(row));
    row.scores.forEach(function (v) { tr.appendChild(el("td", "num", fmt(v))); });
    tr.appendChild(el("td", "num", fmt(row.consensus)));
    const tdFlags = el("td");
    chips(tdFlags, methodsOf(row), "m");
    tr.appendChild(tdFlags);
    tr.appendChild(el("td", "evidence", row.evidence || ""));
    const tdDec = el("td", "decision");
    DECISION_BUTTONS.forEach(function (b) {
      const btn = el("button", b.d, b.text);
      btn.type = "button";
      btn.title = b.title;
      btn.setAttribute("aria-label", b.d);
      if (b.d === "accept" && !hasSuggestion(row)) {
        btn.disabled = true;
        btn.title = "no suggestion to accept";
      }
      btn.addEventListener("click", function (e) { e.stopPropagation(); select(r); toggle(r, b.d); });
      tdDec.appendChild(btn);
    });
    tdDec.appendChild(el("span", "edited muted"));
    tr.appendChild(tdDec);
    tr.addEventListener("click", function () { select(r); openDetail(r); });
    styleRow(tr, r);
    return tr;
  }

  /* The suggested column: one chip per trusted label change, "+Mitochondria (0.91)" /
   * "-Nucleoplasm (0.86)" (the class's out-of-fold precision at that probability),
   * then the flagged labels without a suggestion ("doubtful, no suggestion"). */
  function changeText(c) {
    return c[1] + DATA.classes[c[0]] + (c[2] === null ? "" : " (" + c[2].toFixed(2) + ")");
  }

  /* A doubtful label: "+Nucleoplasm? (p=0.99)", the direction the evidence points and the
   * model's out-of-fold probability of the class. */
  function doubtText(c) {
    return c[1] + DATA.classes[c[0]] + "?" + (c[2] === null ? "" : " (p=" + c[2].toFixed(2) + ")");
  }

  function suggestionCell(row) {
    const td = el("td", "labels");
    const changed = row.changed || [];
    const doubtful = row.doubtful || [];
    changed.forEach(function (c) {
      const chip = el("span", "chip " + (c[1] === "+" ? "add" : "del"), changeText(c));
      chip.title = (c[1] === "+" ? "suggested: add " : "suggested: remove ") + DATA.classes[c[0]];
      td.appendChild(chip);
    });
    if (!changed.length && !sameSet(row.given, row.suggested)) {
      // a run from before per-label suggestions: show the set difference
      row.suggested.forEach(function (k) {
        if (row.given.indexOf(k) < 0) td.appendChild(el("span", "chip add", "+" + DATA.classes[k]));
      });
      row.given.forEach(function (k) {
        if (row.suggested.indexOf(k) < 0) td.appendChild(el("span", "chip del", "-" + DATA.classes[k]));
      });
    }
    if (doubtful.length) {
      const box = el("span", "doubtful");
      box.title = "flagged, but not trusted enough to suggest: which way the evidence points";
      doubtful.forEach(function (c) {
        const chip = el("span", "chip doubt " + (c[1] === "+" ? "add" : "del"), doubtText(c));
        chip.title = (c[1] === "+" ? "doubtful: maybe missing, " : "doubtful: maybe wrong, ") + DATA.classes[c[0]];
        box.appendChild(chip);
      });
      box.appendChild(el("span", "muted", " doubtful, no suggestion"));
      td.appendChild(box);
    }
    if (!td.childNodes.length) td.appendChild(el("span", "muted", "unchanged"));
    return td;
  }

  /* The list's decision buttons (edit is the class picker of the detail view). */
  const DECISION_BUTTONS = [
    { d: "keep", text: "=", title: "keep: the given labels are right (g)" },
    { d: "accept", text: "\u2713", title: "accept the suggested labels: the given ones with the suggested changes (a)" },
    { d: "reject", text: "\u2717", title: "reject: leave the image out of the cleaned dataset (r)" },
  ];

  function styleRow(tr, r) {
    const row = ROWS[r];
    const rec = decisions.get(row.id);
    const d = rec ? rec.d : "";
    KINDS.forEach(function (k) { tr.classList.toggle(DONE[k], d === k); });
    tr.classList.toggle("selected", state.selected === r);
    DECISION_BUTTONS.forEach(function (b) {
      tr.querySelector("td.decision button." + b.d).classList.toggle("on", d === b.d);
    });
    const edited = tr.querySelector("td.decision .edited");
    edited.textContent = d === "edit" ? "edited: " + (names(rec.labels).join(", ") || "(none)") : "";
  }

  function rowElement(r) {
    const body = $("issue-body");
    return body && r >= 0 ? body.querySelector('tr[data-row="' + r + '"]') : null;
  }

  function refreshRow(r) {
    const tr = rowElement(r);
    if (tr) styleRow(tr, r);
  }

  function renderPage() {
    const body = $("issue-body");
    const start = state.page * state.pageSize;
    const frag = document.createDocumentFragment();
    state.view.slice(start, start + state.pageSize).forEach(function (r) { frag.appendChild(buildRow(r)); });
    body.replaceChildren(frag);
    $("count").textContent = state.view.length + " of " + ROWS.length + " images";
    $("page").textContent = "page " + (state.page + 1) + " / " + pageCount();
  }

  function select(r, scroll) {
    const old = state.selected;
    state.selected = r;
    if (old >= 0) refreshRow(old);
    const tr = rowElement(r);
    if (tr) {
      styleRow(tr, r);
      if (scroll) tr.scrollIntoView({ block: "nearest" });
    }
  }

  /** Move the selection by ``step`` rows of the filtered view, turning pages as needed. */
  function move(step) {
    if (!state.view.length) return;
    let pos = state.view.indexOf(state.selected);
    pos = pos < 0 ? 0 : Math.min(state.view.length - 1, Math.max(0, pos + step));
    const page = Math.floor(pos / state.pageSize);
    if (page !== state.page) { state.page = page; renderPage(); }
    select(state.view[pos], true);
    if (state.detail >= 0) openDetail(state.view[pos]);
  }

  // ------------------------------------------------------------------- detail

  let tileToken = 0;
  /** The least height of a given or suggested class's bar (probability units). */
  const MIN_BAR = 0.02;

  function fillDecision(r) {
    const row = ROWS[r];
    const rec = decisions.get(row.id);
    const d = rec ? rec.d : "";
    $("detail-decision").textContent = rec
      ? DONE[d] + (d === "reject" ? ": left out of the cleaned dataset" : ": " + (names(labelsOf(row, rec)).join(", ") || "(no label)"))
      : "undecided";
    KINDS.forEach(function (k) { $("detail-" + k).classList.toggle("on", d === k); });
    $("detail-accept").disabled = !hasSuggestion(row);
    $("detail-accept").title = hasSuggestion(row) ? "apply the suggested labels (a)" : "no suggestion to accept";
    fillPicker(r);
  }

  /* The class picker: a row per class with the given, suggested and decided labels side by
   * side; the decided column's buttons toggle a class (mouse, Space/Enter, arrow keys move). */
  function buildPicker() {
    const body = $("picker-body");
    DATA.classes.forEach(function (name, k) {
      const tr = document.createElement("tr");
      tr.appendChild(el("td", "cls", name));
      tr.appendChild(el("td", "given"));
      tr.appendChild(el("td", "sugg"));
      const td = el("td", "mine");
      const btn = el("button", "pick");
      btn.type = "button";
      btn.dataset.k = String(k);
      btn.setAttribute("aria-label", name);
      btn.addEventListener("click", function () {
        if (state.detail >= 0) toggleClass(state.detail, k);
      });
      btn.addEventListener("keydown", function (e) {
        const step = e.key === "ArrowDown" ? 1 : e.key === "ArrowUp" ? -1 : 0;
        if (!step) return;
        const all = body.querySelectorAll("button.pick");
        all[Math.min(all.length - 1, Math.max(0, k + step))].focus();
        e.preventDefault();
        e.stopPropagation();
      });
      td.appendChild(btn);
      tr.appendChild(td);
      if (EXCLUSIVE.indexOf(k) >= 0) tr.title = name + " stands alone: it cannot be combined with another class";
      body.appendChild(tr);
    });
  }

  function fillPicker(r) {
    const row = ROWS[r];
    const rec = decisions.get(row.id);
    const mine = labelsOf(row, rec);
    const doubted = new Map((row.doubtful || []).map(function (c) { return [c[0], c[1]]; }));
    $("picker-body").querySelectorAll("tr").forEach(function (tr, k) {
      const g = row.given.indexOf(k) >= 0, s = row.suggested.indexOf(k) >= 0, m = mine.indexOf(k) >= 0;
      const doubt = doubted.get(k);  // "+" or "-": flagged, no suggestion: shown with a "?"
      tr.children[1].textContent = g ? "\u2713" : "";
      tr.children[2].textContent = s ? (g ? "\u2713" : "+") : (g ? "\u2212" : "");
      if (doubt && s === g) tr.children[2].textContent = (doubt === "+" ? "+" : "\u2212") + "?";
      tr.children[2].className = "sugg" + (s && !g ? " add" : !s && g ? " del" : "") + (doubt && s === g ? " doubt" : "");
      const btn = tr.querySelector("button.pick");
      btn.textContent = m ? "\u2713" : "";
      btn.setAttribute("aria-pressed", m ? "true" : "false");
      tr.classList.toggle("on", m);
      tr.classList.toggle("differs", m !== g);
    });
    $("picker-head-mine").textContent = rec ? DONE[rec.d] : "decided";
  }

  function fact(dl, term, value) {
    dl.appendChild(el("dt", "", term));
    dl.appendChild(el("dd", "", value));
  }

  function openDetail(r) {
    const row = ROWS[r];
    state.detail = r;
    select(r);
    const box = $("detail");
    const wasHidden = box.hidden;
    box.hidden = false;
    if (wasHidden) box.querySelector(".detail-box").focus({ preventScroll: true });
    $("detail-title").textContent = row.id;
    const dl = $("detail-facts");
    dl.replaceChildren();
    fact(dl, "rank", (r + 1) + " of " + ROWS.length);
    fact(dl, "given", (names(row.given).join(", ") || "(none)") + "   [" + tokens(row.given) + "]");
    fact(dl, "suggested", (names(row.suggested).join(", ") || "(none)") + "   [" + tokens(row.suggested) + "]");
    if ((row.changed || []).length) fact(dl, "changes", row.changed.map(changeText).join(", "));
    else if (row.changes) fact(dl, "changes", row.changes);
    if ((row.doubtful || []).length) fact(dl, "doubtful, no suggestion", row.doubtful.map(doubtText).join(", "));
    if (row.unreliable) fact(dl, "unreliable", row.unreliable + " (fewer images than folds)");
    fact(dl, "flagged by", methodsOf(row).join(", ") || "no detector");
    fact(dl, "evidence", row.evidence || "none beyond the bulk of the scores");
    DATA.scores.forEach(function (s, i) { fact(dl, s.label, fmt(row.scores[i])); });
    fact(dl, "consensus", fmt(row.consensus) + (row.consensus_flag ? " (consensus flag)" : ""));
    if (row.duplicate) fact(dl, "duplicate group", row.duplicate);
    fillDecision(r);
    drawImages(row);
    drawProbs(r);
  }

  function closeDetail() {
    $("detail").hidden = true;
    state.detail = -1;
    const tr = rowElement(state.selected);
    if (tr) tr.focus({ preventScroll: true });
  }

  function drawImages(row) {
    const token = ++tileToken;
    const comp = $("detail-composite");
    const fallback = $("detail-fallback");
    const none = $("detail-noimage");
    const chans = $("detail-channels");
    chans.replaceChildren();
    comp.hidden = fallback.hidden = none.hidden = true;
    if (row.detail < 0) {
      if (row.thumb >= 0) {
        fallback.src = DATA.thumbs[row.thumb];
        fallback.hidden = false;
      } else {
        none.textContent = "No image embedded for this row: only the images ranked highest are embedded.";
        none.hidden = false;
      }
      return;
    }
    const img = new Image();
    img.onload = function () {
      if (token !== tileToken) return;  // another row was opened meanwhile
      const n = Math.max(1, DATA.channels.length);
      const w = Math.floor(img.naturalWidth / n), h = img.naturalHeight;
      const off = document.createElement("canvas");
      off.width = img.naturalWidth;
      off.height = h;
      const octx = off.getContext("2d");
      octx.drawImage(img, 0, 0);
      const src = octx.getImageData(0, 0, off.width, h).data;
      const rgb = new Float32Array(w * h * 3);
      DATA.channels.forEach(function (name, c) {
        const cw = { red: [1, 0, 0], green: [0, 1, 0], blue: [0, 0, 1], yellow: [0.5, 0.5, 0], gray: [1, 1, 1] }[name] ||
          [[1, 0, 0], [0, 1, 0], [0, 0, 1]][c % 3];
        const cv = el("canvas");
        cv.width = w;
        cv.height = h;
        const cctx = cv.getContext("2d");
        const out = cctx.createImageData(w, h);
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const v = src[(y * off.width + c * w + x) * 4];
            const o = (y * w + x) * 4, p = (y * w + x) * 3;
            out.data[o] = out.data[o + 1] = out.data[o + 2] = v;
            out.data[o + 3] = 255;
            rgb[p] += cw[0] * v; rgb[p + 1] += cw[1] * v; rgb[p + 2] += cw[2] * v;
          }
        }
        cctx.putImageData(out, 0, 0);
        const fig = el("figure");
        fig.appendChild(cv);
        fig.appendChild(el("figcaption", "", (DATA.stains || [])[c] || "channel " + (c + 1)));
        chans.appendChild(fig);
      });
      comp.width = w;
      comp.height = h;
      const cctx = comp.getContext("2d");
      const out = cctx.createImageData(w, h);
      for (let i = 0, j = 0; i < w * h; i++, j += 4) {
        out.data[j] = Math.min(255, rgb[i * 3]);
        out.data[j + 1] = Math.min(255, rgb[i * 3 + 1]);
        out.data[j + 2] = Math.min(255, rgb[i * 3 + 2]);
        out.data[j + 3] = 255;
      }
      cctx.putImageData(out, 0, 0);
      comp.hidden = false;
    };
    img.src = DATA.details[row.detail];
  }

  function drawProbs(r) {
    const div = $("detail-probs");
    const row = ROWS[r];
    if (!DATA.probs || !DATA.probs[r]) {
      if (div.classList.contains("js-plotly-plot")) Plotly.purge(div);
      div.replaceChildren(el("p", "missing", "No out-of-fold probabilities in this run."));
      return;
    }
    const p = DATA.probs[r].map(function (v) { return v / 1000; });
    const x = DATA.classes.map(esc);
    const given = DATA.classes.map(function (_, k) { return row.given.indexOf(k) >= 0; });
    const sugg = DATA.classes.map(function (_, k) { return row.suggested.indexOf(k) >= 0; });
    // A given or suggested class near p = 0 still shows a sliver of a bar (its colour
    // and outline say it is given / to change); the hover text has the true value.
    const shown = p.map(function (v, k) { return given[k] || sugg[k] ? Math.max(v, MIN_BAR) : v; });
    const traces = [{
      type: "bar", x: x, y: shown, name: "probability",
      marker: {
        color: given.map(function (g) { return g ? "#1f6feb" : "#b8c4d6"; }),
        line: {
          width: 2,
          color: given.map(function (g, k) {
            return g === sugg[k] ? "rgba(0,0,0,0)" : (sugg[k] ? "#1a7f37" : "#c2281d");
          }),
        },
      },
      customdata: given.map(function (g, k) {
        return [p[k].toFixed(3), (g ? "given" : "not given") + (g !== sugg[k] ? (sugg[k] ? ", suggested: add" : ", suggested: remove") : "")];
      }),
      hovertemplate: "%{x}<br>p = %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
    }];
    const layout = {
      // two lines: the narrow detail pane cut the one-line title off
      template: TEMPLATE, height: 372, margin: { l: 40, r: 10, t: 52, b: 10 },
      title: { text: "Predicted probability<br>blue = given label; outline: green = add, red = remove", font: { size: 12 } },
      yaxis: { range: [0, 1], title: { text: "out-of-fold probability" } },
      xaxis: { type: "category", tickangle: -45, automargin: true },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: DATA.threshold, y1: DATA.threshold, line: { dash: "dot", color: "#555" } }],
      showlegend: false,
    };
    Plotly.react(div, traces, layout, CONFIG);
  }

  // ----------------------------------------------------------------- keyboard

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
    if (typing) {
      if (e.key === "Escape") t.blur();
      return;
    }
    const open = state.detail >= 0;
    if (e.key === "Enter" && t && (t.tagName === "BUTTON" || t.tagName === "A" || t.tagName === "TH")) {
      return;  // let the focused control act
    }
    const sel = state.selected;
    switch (e.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "a": case "g": case "r":
        if (sel >= 0 && decide(sel, { d: { a: "accept", g: "keep", r: "reject" }[e.key] })) move(1);
        break;
      case "e":
        if (sel < 0) break;
        if (!open) openDetail(sel);
        $("picker-body").querySelector("button.pick").focus();
        break;
      case "u": if (sel >= 0) decide(sel, null); break;
      case "Enter": case "o": if (state.selected >= 0 && !open) openDetail(state.selected); else return; break;
      case "Escape": if (open) closeDetail(); else return; break;
      case "/": $("f-id").focus(); break;
      default: return;
    }
    e.preventDefault();
  }

  // --------------------------------------------------------------------- init

  function fillOptions(select, items) {
    items.forEach(function (item) {
      const o = el("option", "", item[1]);
      o.value = item[0];
      select.appendChild(o);
    });
  }

  function initTable() {
    if (!$("issue-table")) return;
    loadDecisions();
    fillOptions($("f-method"), DATA.methods.map(function (m, b) { return [String(b), m]; }));
    fillOptions($("f-class"), DATA.classes.map(function (c, k) { return [String(k), c]; }));
    fillOptions($("f-score"), DATA.scores.map(function (s, i) { return [String(i), s.label]; }));
    buildHead();
    ["f-id", "f-value"].forEach(function (id) { $(id).addEventListener("input", applyFilters); });
    ["f-method", "f-class", "f-score", "f-op", "f-changed", "f-decision"].forEach(function (id) {
      $(id).addEventListener("change", applyFilters);
    });
    $("page-size").addEventListener("change", function () {
      state.pageSize = Number($("page-size").value);
      state.page = 0;
      renderPage();
    });
    $("prev-page").addEventListener("click", function () {
      if (state.page > 0) { state.page--; renderPage(); }
    });
    $("next-page").addEventListener("click", function () {
      if (state.page < pageCount() - 1) { state.page++; renderPage(); }
    });
    $("export").addEventListener("click", exportDecisions);
    $("import").addEventListener("click", function () { $("import-file").click(); });
    $("import-file").addEventListener("change", chooseImport);
    buildPicker();
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-prev").addEventListener("click", function () { move(-1); });
    $("detail-next").addEventListener("click", function () { move(1); });
    ["keep", "accept", "reject"].forEach(function (d) {
      // as the keys g / a / r: a decision moves on; pressing the decision taken undoes it
      $("detail-" + d).addEventListener("click", function () {
        if (state.detail < 0) return;
        const rec = decisions.get(ROWS[state.detail].id);
        const undo = rec && rec.d === d;
        if (toggle(state.detail, d) && !undo) move(1);
      });
    });
    $("detail-edit").addEventListener("click", function () {
      $("picker-body").querySelector("button.pick").focus();
    });
    $("detail-undo").addEventListener("click", function () { if (state.detail >= 0) decide(state.detail, null); });
    $("detail").addEventListener("click", function (e) { if (e.target === $("detail")) closeDetail(); });
    document.addEventListener("keydown", onKey);
    updateDecided();
    applyFilters();
  }

  initTable();
  drawPlots();
  window.labelaudit = {
    decisionsCsv: decisionsCsv, importDecisions: importDecisions, openDetail: openDetail, state: state,
  };
})();
