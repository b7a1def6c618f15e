// coirl_ros operator dashboard: live status over server-sent events, controls, SVG curves.
// No libraries and nothing loaded from elsewhere (robot lab networks are often offline).
// The token comes from the page URL (?token=...) and goes out in the Authorization header only.
"use strict";
(() => {
  const TOKEN = new URLSearchParams(location.search).get("token") || "";
  const PERIOD_MS = Number(document.body.dataset.periodMs) || 1000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MAX_ROWS = 300;
  const $ = (id) => document.getElementById(id);
  const state = { status: null, episodes: null, losses: null, lastEvent: 0, holdRequested: false, holdPending: null };

  // ---- HTTP ------------------------------------------------------------------------------------
  function headers(json) {
    const h = { Authorization: "Bearer " + TOKEN };
    if (json) h["Content-Type"] = "application/json";
    return h;
  }

  async function getJSON(path) {
    const r = await fetch(path, { headers: headers(false), cache: "no-store" });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  }

  function setMessage(text, kind) {
    const el = $("message");
    el.textContent = text;
    el.className = kind || "";
  }

  async function command(path, body, label, button) {
    setMessage(label + " …", "pending");
    if (button) button.disabled = true;
    try {
      const r = await fetch(path, { method: "POST", headers: headers(true), body: JSON.stringify(body || {}) });
      const reply = await r.json().catch(() => ({}));
      if (!r.ok) {
        setMessage(label + " failed: " + (reply.detail || "HTTP " + r.status), "error");
        return null;
      }
      const text = reply.message !== undefined ? reply.message : describeLabel(reply);
      setMessage(label + ": " + text, "ok");
      refreshNow();
      return reply;
    } catch (err) {
      setMessage(label + " failed: " + err, "error");
      return null;
    } finally {
      if (button) button.disabled = false;
    }
  }

  function describeLabel(row) {
    if (row && row.index !== undefined) return "episode " + row.index + " is now " + labelText(row.success);
    return "done";
  }

  async function refreshNow() {
    try {
      const [status, episodes] = await Promise.all([getJSON("/api/status"), getJSON("/api/episodes")]);
      renderStatus(status);
      renderEpisodes(episodes);
    } catch (err) {
      /* the event stream reports connection problems */
    }
  }

  // ---- server-sent events over fetch (EventSource cannot send the Authorization header) --------
  async function stream() {
    for (;;) {
      try {
        const r = await fetch("/api/events", { headers: headers(false), cache: "no-store" });
        if (r.status === 401 || r.status === 403) {
          setConnection(false, "token rejected: open the URL dashboard_node printed");
          await sleep(5000);
          continue;
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = (buffer + value).replace(/\r\n/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            handleEvent(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (err) {
        /* reconnect below */
      }
      setConnection(false, "disconnected, retrying");
      await sleep(2000);
    }
  }

  function handleEvent(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    const payload = JSON.parse(data.join("\n"));
    state.lastEvent = Date.now();
    setConnection(true, "live");
    if (event === "status") renderStatus(payload);
    else if (event === "episodes") renderEpisodes(payload);
    else if (event === "losses") renderLosses(payload);
  }

  function setConnection(ok, text) {
    const el = $("connection");
    el.textContent = text;
    el.className = "badge " + (ok ? "on" : "off");
  }

  // A page that stopped updating must not look live.
  setInterval(() => {
    if (state.lastEvent && Date.now() - state.lastEvent > 3 * PERIOD_MS + 2000) {
      setConnection(false, "no updates for " + Math.round((Date.now() - state.lastEvent) / 1000) + " s");
    }
  }, 1000);

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- formatting --------------------------------------------------------------------------------
  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value) && digits === undefined) return value.toLocaleString("en-US");
    const d = digits === undefined ? 3 : digits;
    const a = Math.abs(value);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return value.toExponential(2);
    return value.toFixed(d);
  }

  function labelText(success) {
    return success === true ? "success" : success === false ? "failure" : "unlabelled";
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    return seconds < 1 ? "now" : Math.round(seconds) + " s ago";
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fillList(dl, entries) {
    dl.replaceChildren();
    for (const [key, value] of entries) {
      dl.append(el("dt", {}, key), el("dd", {}, value));
    }
  }

  // ---- status panels -----------------------------------------------------------------------------
  function renderStatus(s) {
    state.status = s;
    const body = $("nodes").tBodies[0];
    body.replaceChildren();
    for (const n of s.nodes) {
      const tr = el("tr", { "data-node": n.name, "data-alive": String(n.alive) });
      const dot = el("span", { class: "dot " + (n.alive ? "alive" : n.seen ? "dead" : "") });
      const cell = el("td");
      cell.append(dot);
      tr.append(cell, el("td", {}, n.name), el("td", {}, n.detail), el("td", {}, n.via === "diagnostics" ? age(n.age_s) : n.via));
      body.append(tr);
    }

    const c = s.control;
    // Until the policy's next diagnostics report confirms a hold/release, show what was asked for.
    const pending = state.holdPending && Date.now() < state.holdPending.until ? state.holdPending.value : null;
    if (c && pending !== null && c.operator_hold === pending) state.holdPending = null;
    const holding = pending !== null ? pending : c ? c.operator_hold : state.holdRequested;
    if (!c) {
      fillList($("control"), [["policy_node", "no diagnostics yet"]]);
    } else {
      const lat = c.tick_latency_ms || {};
      fillList($("control"), [
        ["state", c.hold_reason ? "holding: " + c.hold_reason : "acting"],
        ["control rate", fmt(c.rate_hz, 1) + " Hz (target " + fmt(c.target_rate_hz, 1) + ")"],
        ["tick latency", "p50 " + fmt(lat.p50, 2) + " / p99 " + fmt(lat.p99, 2) + " / max " + fmt(lat.max, 2) + " ms"],
        ["missed ticks", fmt(c.missed_ticks)],
        ["policy version", c.active_version ? "v" + c.active_version : "base only (no residual weights)"],
        ["episode", c.episode_active ? "active" : "none"],
        ["commands sent", fmt(c.commands_sent)],
      ]);
    }
    if (s.weights) {
      const w = s.weights;
      $("control").append(el("dt", {}, "last weights"),
        el("dd", {}, (w.accepted ? "accepted" : "rejected") + (w.version !== null ? " v" + w.version : "") +
          (!w.accepted && w.reason ? ": " + w.reason : "")));
    }
    const hold = $("btn-hold");
    hold.textContent = holding ? "RELEASE HOLD" : "HOLD";
    hold.classList.toggle("held", Boolean(holding));
    hold.dataset.holding = String(Boolean(holding));
    const hs = $("hold-state");
    hs.textContent = holding ? "EMERGENCY HOLD" : "";
    hs.className = "badge" + (holding ? " held" : "");

    const l = s.learner;
    if (!l) {
      fillList($("learner"), [["learner_node", "no metrics yet"]]);
    } else {
      const entries = [
        ["status", (l.status || "–") + (l.paused ? " (paused)" : "") + (l.phase ? ", phase " + l.phase : "")],
        ["method", l.method || "–"],
        ["updates", fmt(l.updates) + (l.updates_per_s !== null ? " (" + fmt(l.updates_per_s, 1) + "/s)" : "")],
        ["env steps", fmt(l.env_steps)],
        ["published version", l.version ? "v" + l.version : "–"],
      ];
      if (l.error) entries.push(["error", l.error]);
      // The losses here; every other training metric the learner reports is charted below.
      for (const [k, v] of Object.entries(l.losses || {})) if (k.startsWith("losses/")) entries.push([k, fmt(v)]);
      fillList($("learner"), entries);
    }
    $("btn-learner-pause").textContent = l && l.paused ? "Resume learner" : "Pause learner";

    const r = s.recording;
    const rec = $("recording");
    if (r.active) {
      rec.textContent = "recording episode " + fmt(r.index);
      rec.className = "badge rec";
    } else {
      rec.className = "badge";
      rec.textContent = r.last_event
        ? "idle (episode " + fmt(r.index) + " " + (r.last_event === "stop" ? "saved, " + labelText(r.success) : "discarded") + ")"
        : "recorder: no events yet";
    }
  }

  // ---- charts (plain SVG) -----------------------------------------------------------------------
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ticks(lo, hi, count) {
    const span = hi - lo;
    const step0 = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // series: [{points: [[x, y], ...], line: bool, dots: [{x, y, cls, title}]}]
  function chart(svg, series, opts) {
    const [, , W, H] = svg.getAttribute("viewBox").split(" ").map(Number);
    const m = { l: 52, r: 12, t: 10, b: 34 };
    svg.replaceChildren();
    const xs = [], ys = [];
    for (const s of series) for (const [x, y] of s.points) { xs.push(x); ys.push(y); }
    svg.dataset.points = String(xs.length);
    if (!xs.length) {
      svg.append(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, opts.empty || "no data yet"));
      return;
    }
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    let y0 = opts.yMin !== undefined ? opts.yMin : Math.min(...ys);
    let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
    if (y0 === y1) { y0 -= 1; y1 += 1; }
    if (opts.yMin === undefined) { const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad; }
    const px = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const py = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    for (const t of ticks(y0, y1, 4)) {
      svg.append(svgEl("line", { x1: m.l, x2: W - m.r, y1: py(t), y2: py(t), class: "grid" }));
      svg.append(svgEl("text", { x: m.l - 6, y: py(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t, opts.yDigits)));
    }
    for (const t of ticks(x0, x1, 6)) {
      svg.append(svgEl("text", { x: px(t), y: H - m.b + 15, "text-anchor": "middle", class: "tick" }, fmt(t, 0)));
    }
    svg.append(svgEl("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }));
    svg.append(svgEl("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }));
    if (opts.xLabel) svg.append(svgEl("text", { x: W - m.r, y: H - 4, "text-anchor": "end", class: "axis-label" }, opts.xLabel));
    for (const s of series) {
      if (s.line && s.points.length) {
        const d = s.points.map(([x, y], i) => (i ? "L" : "M") + px(x).toFixed(1) + " " + py(y).toFixed(1)).join(" ");
        svg.append(svgEl("path", { d, class: "series", "data-points": String(s.points.length) }));
      }
      for (const dot of s.dots || []) {
        const c = svgEl("circle", { cx: px(dot.x).toFixed(1), cy: py(dot.y).toFixed(1), r: 3.5, class: dot.cls });
        c.append(svgEl("title", {}, dot.title));
        svg.append(c);
      }
    }
  }

  function renderCurve(list) {
    const pts = list.curve || [];
    const rate = pts.map((p) => [p.env_steps, p.success_rate]);
    const dots = pts.map((p) => ({
      x: p.env_steps, y: p.success_rate, cls: p.success ? "ok" : "fail",
      title: "episode " + p.index + ": " + labelText(p.success) + ", rolling rate " + fmt(p.success_rate, 2) + " over " + p.window,
    }));
    chart($("success-curve"), [{ points: rate, line: true, dots }], {
      yMin: 0, yMax: 1, yDigits: 1, xLabel: "environment steps",
      empty: "no labelled " + (list.curve_sources || []).join("/") + " episodes yet",
    });
    const last = pts[pts.length - 1];
    $("success-note").textContent = last
      ? "rolling success " + fmt(last.success_rate, 2) + " over the last " + last.window + " labelled episodes (" +
        (list.curve_sources || []).join(", ") + "), " + fmt(last.env_steps) + " environment steps"
      : "";
  }

  function renderLosses(curves) {
    state.losses = curves;
    const box = $("loss-curves");
    if (!curves.series.length) {
      box.replaceChildren(el("p", { class: "note" }, "no learner losses yet"));
      return;
    }
    box.replaceChildren();
    const losses = (s) => (s.key.startsWith("losses/") ? 0 : 1);  // losses first, then other metrics
    const ordered = [...curves.series].sort((a, b) => losses(a) - losses(b) || a.key.localeCompare(b.key));
    for (const s of ordered) {
      const wrap = el("div", { class: "loss", "data-key": s.key });
      const last = s.points[s.points.length - 1];
      wrap.append(el("h3", {}, s.key + "  " + fmt(last ? last[1] : null)));
      const svg = svgEl("svg", { viewBox: "0 0 360 160", role: "img", "aria-label": s.key });
      wrap.append(svg);
      box.append(wrap);
      chart(svg, [{ points: s.points, line: true }], { xLabel: "updates" });
    }
  }

  // ---- episodes --------------------------------------------------------------------------------
  function renderEpisodes(list) {
    state.episodes = list;
    renderCurve(list);
    const taskSelect = $("filter-task");
    const chosen = taskSelect.value;
    const tasks = [...new Set(list.episodes.map((e) => e.task))].sort();
    taskSelect.replaceChildren(el("option", { value: "" }, "all"), ...tasks.map((t) => el("option", { value: t }, t)));
    taskSelect.value = tasks.includes(chosen) ? chosen : "";
    renderRows();
    const notes = [];
    if (!list.available) notes.push(list.message || "no episode store yet");
    if (list.problems.length) notes.push(list.problems.length + " unreadable episode(s): " + list.problems.join("; "));
    notes.push("store: " + list.store);
    $("store-note").textContent = notes.join(" · ");
  }

  function renderRows() {
    const list = state.episodes;
    if (!list) return;
    const task = $("filter-task").value, source = $("filter-source").value, label = $("filter-label").value;
    const wanted = { true: true, false: false, none: null }[label];
    const rows = list.episodes.filter((e) =>
      (!task || e.task === task) && (!source || e.source === source) && (label === "" || e.success === wanted));
    const body = $("episodes").tBodies[0];
    body.replaceChildren();
    for (const e of rows.slice(-MAX_ROWS).reverse()) {
      const tr = el("tr", { "data-index": String(e.index) });
      const lab = el("td", { class: e.success === true ? "label-ok" : e.success === false ? "label-fail" : "" },
        e.success === true ? "✓ success" : e.success === false ? "✗ failure" : "–");
      const when = new Date(e.created_at * 1000);
      const actions = el("td");
      const ok = el("button", { type: "button", title: "label success", "data-action": "success" }, "✓");
      const bad = el("button", { type: "button", title: "label failure", "data-action": "failure" }, "✗");
      ok.addEventListener("click", () => command("/api/episodes/label", { index: e.index, success: true }, "label episode " + e.index, ok));
      bad.addEventListener("click", () => command("/api/episodes/label", { index: e.index, success: false }, "label episode " + e.index, bad));
      actions.append(ok, bad);
      tr.append(
        el("td", { class: "num" }, String(e.index)), el("td", {}, e.task), el("td", {}, e.source),
        el("td", { class: "num" }, fmt(e.length)), lab,
        el("td", {}, e.policy_version ? "v" + e.policy_version : "–"),
        el("td", {}, e.created_at ? when.toLocaleString() : "–"), actions);
      body.append(tr);
    }
    const shown = Math.min(rows.length, MAX_ROWS);
    $("episode-count").textContent = shown + " of " + list.episodes.length + " episodes" +
      (rows.length > MAX_ROWS ? " (newest " + MAX_ROWS + " shown)" : "");
  }

  // ---- controls ----------------------------------------------------------------------------------
  function bind(id, handler) {
    const button = $(id);
    button.addEventListener("click", () => handler(button));
  }
  bind("btn-start", (b) => command("/api/episode/start", {}, "start episode", b));
  bind("btn-stop-success", (b) => command("/api/episode/stop", { success: true }, "stop episode (success)", b));
  bind("btn-stop-failure", (b) => command("/api/episode/stop", { success: false }, "stop episode (failure)", b));
  bind("btn-discard", (b) => command("/api/episode/discard", {}, "discard episode", b));
  bind("btn-label-success", (b) => command("/api/episodes/label", { index: null, success: true }, "mark last episode", b));
  bind("btn-label-failure", (b) => command("/api/episodes/label", { index: null, success: false }, "mark last episode", b));
  bind("btn-reset-sim", (b) => command("/api/sim/reset", {}, "reset sim", b));
  bind("btn-learner-pause", (b) => {
    const paused = Boolean(state.status && state.status.learner && state.status.learner.paused);
    return command("/api/learner/pause", { paused: !paused }, paused ? "resume learner" : "pause learner", b);
  });
  // The hold is never disabled while a request is in flight: pressing it again must always be possible.
  $("btn-hold").addEventListener("click", async () => {
    const holding = $("btn-hold").dataset.holding === "true";
    const reply = await command("/api/policy/hold", { hold: !holding }, holding ? "release hold" : "HOLD");
    if (reply) {
      state.holdRequested = !holding;
      state.holdPending = { value: !holding, until: Date.now() + 3 * PERIOD_MS + 2000 };
      if (state.status) renderStatus(state.status);
    }
  });
  for (const id of ["filter-task", "filter-source", "filter-label"]) $(id).addEventListener("change", renderRows);

  if (!TOKEN) setMessage("no token in the page URL: open the URL dashboard_node printed (…/?token=…)", "error");
  refreshNow();
  getJSON("/api/curves").then((c) => renderLosses(c.losses)).catch(() => {});
  stream();
})();
