// tenantflow dashboard: the instance page. Uses what static/dashboard.js puts in window.tenantflow.
//
// - The regions (now-line, summary, timeline, activity) are server-rendered fragments. The page follows the
//   API's watch stream (fetch with the Bearer header: EventSource cannot send it) and fetches only what
//   changed: the now-line on every change, the summary and activity on a status change, and the timeline's
//   rows from the first one an entry event touches (`.../rows?from=`).
// - The timeline is compact: one row per step or per run of calls of one name ("think ×2,000"); a group's
//   members, a step's detail and rows left out of a long timeline are fetched when asked for.
// - Times are shown in the viewer's zone (UTC on hover); ids, JSON and curl have copy buttons.
"use strict";

(function () {
  const tf = window.tenantflow;
  if (!tf) return;

  // -- formatting (as dashboard_views.fmt_duration) ----------------------------------------------------

  function two(big, small, bigUnit, smallUnit) {
    return small === 0 ? big + " " + bigUnit : big + " " + bigUnit + " " + small + " " + smallUnit;
  }

  function fmtDuration(ms) {
    if (ms === null || !Number.isFinite(ms)) return "—";
    if (ms < 0) return "−" + fmtDuration(-ms);
    if (ms < 0.9995) return Math.round(ms * 1000) + " µs";
    if (ms < 99.95) return ms.toFixed(1) + " ms";
    if (ms < 999.5) return Math.round(ms) + " ms";
    if (ms < 59995) return (ms / 1000).toFixed(2) + " s";
    const seconds = Math.round(ms / 1000);
    if (seconds < 3600) return two(Math.floor(seconds / 60), seconds % 60, "min", "s");
    const minutes = Math.round(ms / 60000);
    if (minutes < 48 * 60) return two(Math.floor(minutes / 60), minutes % 60, "h", "min");
    const hours = Math.round(ms / 3600000);
    return two(Math.floor(hours / 24), hours % 24, "d", "h");
  }

  function relative(epoch) {
    const delta = epoch - Date.now() / 1000;
    if (Math.abs(delta) < 0.5) return "now";
    const text = fmtDuration(Math.abs(delta) * 1000);
    return delta > 0 ? "in " + text : text + " ago";
  }

  const localFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZoneName: "short",
  });

  // <time datetime="...Z"> as the viewer's local time; the UTC time stays on hover.
  function localTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]:not([data-local])")) {
      const moment = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) continue;
      el.dataset.local = "true";
      el.title = "UTC: " + el.getAttribute("datetime");
      el.textContent = localFormat.format(moment);
    }
  }

  function tickRelative() {
    for (const el of document.querySelectorAll(".rel[data-until]")) {
      el.textContent = "(" + relative(Number(el.dataset.until)) + ")";
    }
  }

  // -- copy buttons ------------------------------------------------------------------------------------------

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(() => fallbackCopy(text));
    }
    return fallbackCopy(text);
  }

  function fallbackCopy(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "copy-buffer";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copyButton(label, read) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button subtle copy";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy " + label);
    button.addEventListener("click", () => {
      copyText(read()).then(
        () => {
          button.textContent = "Copied";
          tf.announce("Copied " + label);
        },
        () => (button.textContent = "Copy failed"),
      );
      window.setTimeout(() => (button.textContent = "Copy"), 1500);
    });
    return button;
  }

  function addCopyButtons(root) {
    for (const pre of root.querySelectorAll("pre.code.json, pre.code.curl, pre.code.trace")) {
      if (pre.parentElement.classList.contains("copy-wrap")) continue;
      const wrap = document.createElement("div");
      wrap.className = "copy-wrap";
      pre.replaceWith(wrap);
      wrap.appendChild(pre);
      const what = pre.classList.contains("curl") ? "curl command" : pre.classList.contains("json") ? "JSON" : "error";
      wrap.appendChild(copyButton(what, () => pre.innerText));
    }
    for (const el of root.querySelectorAll("[data-copy]:not([data-copy-ready])")) {
      el.dataset.copyReady = "true";
      el.after(copyButton(el.dataset.copy, () => el.textContent.trim()));
    }
  }

  function decorate(root) {
    localTimes(root);
    addCopyButtons(root);
  }

  // -- the timeline's scale -------------------------------------------------------------------------------
  //
  // Bars are on a time axis with breaks: a stretch where nothing ran (no step attempt; sleeps, event waits
  // and retry back-offs are idle time) longer than max(1 s, a quarter of the time something ran) is cut to a
  // fixed width and labelled with its length. The steps before a day-long sleep then keep the width they
  // would have without it, where a linear axis would make them slivers; the order and the real durations
  // between breaks stay true, which an ordinal layout would give up.

  function merge(spans, join) {
    spans.sort((a, b) => a[0] - b[0]);
    const out = [];
    for (const [b, e] of spans) {
      if (out.length && b <= out[out.length - 1][1] + join) out[out.length - 1][1] = Math.max(out[out.length - 1][1], e);
      else out.push([b, e]);
    }
    return out;
  }

  function makeAxis(t0, t1, busySpans) {
    const busy = merge(
      busySpans.map(([b, e]) => [Math.max(t0, b), Math.min(t1, Math.max(b, e))]).filter(([b, e]) => e >= b),
      0.25,
    );
    const ran = busy.reduce((sum, [b, e]) => sum + (e - b), 0);
    const threshold = Math.max(1, ran / 4);
    const cuts = [];
    let cursor = t0;
    for (const [b, e] of [...busy, [t1, t1]]) {
      if (b - cursor > threshold) cuts.push([cursor, b]);
      cursor = Math.max(cursor, e);
    }
    const cutTotal = cuts.reduce((sum, [b, e]) => sum + (e - b), 0);
    const breakWidth = cuts.length ? Math.min(6, 40 / cuts.length) : 0;
    const scale = (100 - breakWidth * cuts.length) / Math.max(t1 - t0 - cutTotal, 1e-3);
    function x(t) {
      let pos = 0;
      let prev = t0;
      for (const [b, e] of cuts) {
        if (t <= b) return pos + (t - prev) * scale;
        pos += (b - prev) * scale;
        if (t < e) return pos + ((t - b) / (e - b)) * breakWidth;
        pos += breakWidth;
        prev = e;
      }
      return Math.min(100, pos + (t - prev) * scale);
    }
    return { x: x, cuts: cuts, breakWidth: breakWidth, t0: t0, t1: t1 };
  }

  function spansOf(row, now) {
    const begin = Number(row.dataset.b);
    const end = row.dataset.e === "" ? now : Number(row.dataset.e);
    const numbers = (row.dataset.busy || "").split(" ").filter(Boolean).map(Number);
    const busy = [];
    for (let i = 0; i + 1 < numbers.length; i += 2) busy.push([numbers[i], numbers[i + 1]]);
    return { begin: begin, end: Math.max(begin, end), busy: busy };
  }

  function layout() {
    const gantt = document.getElementById("gantt");
    const list = document.getElementById("timeline");
    if (!gantt || !list) return;
    const rows = Array.from(list.querySelectorAll("li.row"));
    if (!rows.length) return;
    const now = Date.now() / 1000;
    const spans = rows.map((row) => spansOf(row, now));
    let t0 = Infinity;
    let t1 = -Infinity;
    const busy = [];
    for (const s of spans) {
      t0 = Math.min(t0, s.begin);
      t1 = Math.max(t1, s.end);
      busy.push(...s.busy);
    }
    if (gantt.dataset.live === "true") t1 = Math.max(t1, now);
    t1 = Math.max(t1, t0 + 1e-3);
    const axis = makeAxis(t0, t1, busy);
    rows.forEach((row, i) => {
      const rect = row.querySelector(":scope > svg.gbar > rect");
      if (!rect) return;
      const x0 = axis.x(spans[i].begin);
      const width = Math.max(axis.x(spans[i].end) - x0, 0.35);
      rect.setAttribute("x", Math.min(x0, 99.65).toFixed(2) + "%");
      rect.setAttribute("width", Math.min(width, 100 - Math.min(x0, 99.65)).toFixed(2) + "%");
    });
    drawAxis(axis, gantt.dataset.live === "true" ? now : null);
  }

  // The breaks (a band with its length) and the now mark, over the bars' column.
  function drawAxis(axis, now) {
    const svg = document.getElementById("gantt-axis");
    if (!svg) return;
    const SVG = svg.namespaceURI;
    const parts = [];
    for (const [b, e] of axis.cuts) {
      const x = axis.x(b);
      const band = document.createElementNS(SVG, "rect");
      band.setAttribute("class", "break");
      band.setAttribute("x", x.toFixed(2) + "%");
      band.setAttribute("width", axis.breakWidth.toFixed(2) + "%");
      band.setAttribute("y", "0");
      band.setAttribute("height", "100%");
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("class", "break-label");
      label.setAttribute("x", (x + axis.breakWidth / 2).toFixed(2) + "%");
      label.setAttribute("y", "11");
      label.setAttribute("text-anchor", "middle");
      label.textContent = fmtDuration((e - b) * 1000);
      parts.push(band, label);
    }
    if (now !== null) {
      const line = document.createElementNS(SVG, "line");
      const x = axis.x(now).toFixed(2) + "%";
      line.setAttribute("class", "now-mark");
      line.setAttribute("x1", x);
      line.setAttribute("x2", x);
      line.setAttribute("y1", "0");
      line.setAttribute("y2", "100%");
      parts.push(line);
    }
    svg.replaceChildren(...parts);
  }

  // -- fetching fragments -----------------------------------------------------------------------------------

  async function fragment(region, part, params) {
    const url = tf.fragmentUrl(region).replace(/\/timeline(\?|$)/, "/" + part + "$1");
    const query = new URLSearchParams(params).toString();
    const response = await fetch(url + (url.includes("?") ? "&" : "?") + query, {
      headers: { Authorization: "Bearer " + tf.getKey(), Accept: "text/html" },
      cache: "no-store",
    });
    if (response.status === 401) {
      tf.signOut("Your API key was not accepted; sign in again.");
      throw new Error("unauthorized");
    }
    if (!response.ok) throw new Error(await tf.problemText(response));
    return response.text();
  }

  function parseRows(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return Array.from(template.content.children).filter((el) => el.matches("li.row"));
  }

  // -- opening rows ------------------------------------------------------------------------------------------

  async function openRow(timeline, row) {
    const button = row.querySelector(":scope > .row-name");
    if (row.classList.contains("gap")) {
      button.disabled = true;
      try {
        const rows = parseRows(await fragment(timeline, "rows", { from: row.dataset.first, to: row.dataset.last }));
        row.replaceWith(...rows);
        for (const r of rows) decorate(r);
        layout();
      } catch (e) {
        button.disabled = false;
      }
      return;
    }
    const open = button.getAttribute("aria-expanded") === "true";
    const shown = row.querySelector(":scope > .row-more");
    if (open) {
      button.setAttribute("aria-expanded", "false");
      if (shown) shown.remove();
      layout();
      return;
    }
    button.setAttribute("aria-expanded", "true");
    const box = document.createElement("div");
    box.className = "row-more";
    box.setAttribute("aria-busy", "true");
    box.innerHTML = '<p class="loading">Loading…</p>';
    row.appendChild(box);
    try {
      if (Number(row.dataset.count) > 1) {
        const members = document.createElement("ol");
        members.className = "gantt-rows members";
        members.append(
          ...parseRows(await fragment(timeline, "rows", { from: row.dataset.first, to: row.dataset.last, flat: "1" })),
        );
        box.replaceChildren(members);
      } else {
        box.innerHTML = await fragment(timeline, "step", { position: row.dataset.first });
      }
    } catch (e) {
      const p = document.createElement("p");
      p.className = "notice error";
      p.textContent = "Could not load it: " + e.message;
      box.replaceChildren(p);
    }
    box.setAttribute("aria-busy", "false");
    decorate(box);
    layout();
  }

  // -- live updates from the API's watch stream --------------------------------------------------------------

  // Server-sent events from a fetch response's body.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).replace(/\r$/, "");
        buffer = buffer.slice(cut + 1);
        if (line === "") {
          if (event.data.length) onEvent(event);
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue; // a heartbeat
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.type = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
    }
  }

  function liveInstance(base, now, summary, timeline, activity) {
    const regions = [now, summary, timeline, activity];
    let lastId = null;
    let finished = false;
    let failures = 0;
    let connecting = false;
    let unwatchable = false;
    let firstStatus = true;
    let shownStatus = null;
    const pending = new Set();
    let flushTimer = null;

    function streaming(on) {
      document.body.dataset.live = on ? "stream" : "poll";
      for (const region of regions) {
        if (on) {
          region.dataset.streaming = "true";
          window.clearTimeout(region._timer);
        } else if (region.dataset.streaming) {
          delete region.dataset.streaming;
          tf.schedule(region, Number(region.dataset.live) || 1000);
        }
      }
    }

    async function connect() {
      if (connecting || unwatchable) return;
      connecting = true;
      finished = false;
      firstStatus = true;
      const headers = { Authorization: "Bearer " + tf.getKey(), Accept: "text/event-stream" };
      let url = base + "/watch";
      const list = document.getElementById("timeline");
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      else if (list && list.dataset.after) url += "?after=" + encodeURIComponent(list.dataset.after);
      const state = summary.querySelector("[data-live-state]");
      shownStatus = state ? state.dataset.status : null;
      let response = null;
      try {
        response = await fetch(url, { headers: headers, cache: "no-store" });
      } catch (e) {
        response = null;
      }
      if (response && response.status === 401) {
        connecting = false;
        tf.signOut("Your API key was not accepted; sign in again.");
        return;
      }
      if (response && [403, 404, 422].includes(response.status)) {
        connecting = false; // not this key's to watch (an operator viewing another tenant): polling it is
        unwatchable = true;
        return;
      }
      if (response && response.ok) {
        streaming(true);
        try {
          await readEvents(response, onEvent);
        } catch (e) {
          /* the connection broke */
        }
      }
      connecting = false;
      streaming(false);
      if (finished) {
        lastId = null;
        failures = 0;
        return; // ended by the server after the final status; the last loads are on their way
      }
      failures += 1;
      window.setTimeout(connect, Math.min(30000, 1000 * 2 ** Math.min(failures - 1, 5)));
    }

    function onEvent(event) {
      failures = 0;
      if (event.id !== null) lastId = event.id;
      let data;
      try {
        data = JSON.parse(event.data.join("\n"));
      } catch (e) {
        return;
      }
      if (event.type === "status") {
        finished = tf.FINISHED.includes(data.status);
        // A stream's first status is the one just rendered, unless it has moved on meanwhile.
        if (!(firstStatus && data.status === shownStatus)) {
          tf.loadRegion(summary);
          tf.loadRegion(activity);
          tf.loadRegion(now);
        }
        firstStatus = false;
        shownStatus = data.status;
        if (finished) window.setTimeout(() => tf.loadRegion(timeline), 150);
      } else if (event.type === "entry") {
        const list = document.getElementById("timeline");
        const last = list && list.lastElementChild;
        if (last && last.dataset.last === String(data.position) && last.dataset.updated === String(data.updated_at)) {
          return; // the page has it as it is (a watch sends the last entry again when it starts)
        }
        pending.add(Number(data.position));
        if (!flushTimer) flushTimer = window.setTimeout(flush, 100);
      } else if (event.type === "reset") {
        pending.clear();
        tf.loadRegion(timeline);
        tf.loadRegion(now);
      }
    }

    // The rows from the first one an entry touched to the end, fetched and put in place of those shown. Names
    // never change, so a row's first position stays a row boundary: the rows before it are as they were.
    async function flush() {
      flushTimer = null;
      const positions = Array.from(pending);
      pending.clear();
      if (!positions.length) return;
      tf.loadRegion(now);
      const list = document.getElementById("timeline");
      if (!list) {
        tf.loadRegion(timeline);
        return;
      }
      const first = Math.min(...positions);
      const rows = Array.from(list.children);
      let from = rows.find((li) => Number(li.dataset.first) <= first && first <= Number(li.dataset.last));
      if (!from && rows.length && first > Number(rows[rows.length - 1].dataset.last)) from = rows[rows.length - 1];
      const start = from ? Number(from.dataset.first) : 0;
      let html;
      try {
        html = await fragment(timeline, "rows", { from: String(start) });
      } catch (e) {
        tf.loadRegion(timeline);
        return;
      }
      placeRows(list, from, parseRows(html));
    }

    function placeRows(list, from, fresh) {
      const reopen = new Set();
      const stale = [];
      for (let li = from || null; li; li = li.nextElementSibling) {
        stale.push(li);
        const button = li.querySelector(":scope > .row-name");
        if (button && button.getAttribute("aria-expanded") === "true") reopen.add(li.dataset.first);
      }
      for (const li of stale) li.remove();
      list.append(...fresh);
      document.getElementById("timeline-empty").hidden = list.children.length > 0;
      document.getElementById("timeline-hint").hidden = list.children.length === 0;
      for (const li of fresh) {
        decorate(li);
        if (reopen.has(li.dataset.first)) openRow(timeline, li);
      }
      layout();
    }

    // The timeline loaded with the instance going (at first, or again after a restart): follow it from there.
    document.addEventListener("tf:loaded", (event) => {
      if (event.detail.region !== timeline || !event.detail.state) return;
      if (event.detail.state.dataset.liveState !== "false" && !connecting) connect();
    });
  }

  // -- the event form: filled with the awaited type, warned when another one is typed -------------------------

  function eventForm(base, controls) {
    const form = document.getElementById("event-form");
    const typeField = form.elements.namedItem("type");
    const payloadField = form.elements.namedItem("payload");
    const warning = document.getElementById("event-type-warning");
    const curl = document.querySelector("#event-curl code");
    const status = document.getElementById("action-status");
    let awaits = "";
    let live = true;

    function warn() {
      const typed = typeField.value.trim();
      let text = "";
      if (typed && live && awaits && typed !== awaits) {
        text = "The instance waits for '" + awaits + "'; an event of another type is buffered until a wait for it.";
      } else if (typed && live && !awaits) {
        text = "The instance is not waiting for an event now; this one is buffered until a wait for its type.";
      }
      tf.show(warning, text, text ? "warning" : null);
    }

    function quote(text) {
      return "'" + text.replace(/'/g, "'\\''") + "'";
    }

    function updateCurl() {
      let payload = null;
      try {
        payload = payloadField.value.trim() ? JSON.parse(payloadField.value) : null;
      } catch (e) {
        payload = "<payload: not valid JSON yet>";
      }
      const body = JSON.stringify({ type: typeField.value.trim(), payload: payload });
      curl.textContent =
        "curl -X POST " +
        quote(location.origin + base + "/events") +
        ' \\\n  -H "Authorization: Bearer $TENANTFLOW_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d ' +
        quote(body);
    }

    document.addEventListener("tf:loaded", (event) => {
      const state = event.detail.state;
      if (event.detail.region.id !== "now-region" || !state) return;
      const before = awaits;
      awaits = state.dataset.awaits || "";
      live = state.dataset.liveState !== "false";
      // Fill the type in while the field holds nothing the viewer typed.
      if (awaits && (typeField.value === "" || typeField.value === before)) typeField.value = awaits;
      warn();
      updateCurl();
    });
    typeField.addEventListener("input", () => {
      warn();
      updateCurl();
    });
    payloadField.addEventListener("input", updateCurl);

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const typeError = document.getElementById("event-type-error");
      const type = typeField.value.trim();
      tf.fieldError(typeField, typeError, type ? "" : "Give the event a type, e.g. approved.");
      const payload = tf.jsonField(payloadField, document.getElementById("event-payload-error"));
      if (!type) {
        typeField.focus();
        return;
      }
      if (!payload.ok) {
        payloadField.focus();
        return;
      }
      try {
        const sent = await tf.api("POST", base + "/events", { type: type, payload: payload.value });
        if (awaits && type !== awaits) {
          tf.show(status, "Event #" + sent.seq + " (" + type + ") buffered: the instance waits for '" + awaits + "'.", "warning");
        } else if (!awaits) {
          tf.show(status, "Event #" + sent.seq + " (" + type + ") buffered until a wait for it.", "warning");
        } else {
          tf.show(status, "Event #" + sent.seq + " (" + type + ") delivered.", "ok");
        }
      } catch (e) {
        tf.show(status, "Could not send the event: " + e.message, "error");
      }
      controls.dispatchEvent(new CustomEvent("tf:reload"));
    });
    updateCurl();
  }

  // -- the page ---------------------------------------------------------------------------------------------

  function instancePage() {
    const controls = document.getElementById("controls");
    const nowRegion = document.getElementById("now-region");
    const region = document.getElementById("instance-region");
    const timeline = document.getElementById("timeline-region");
    const activity = document.getElementById("activity-region");
    const reload = () => {
      for (const r of [nowRegion, region, timeline, activity]) tf.loadRegion(r);
    };
    const base =
      "/v1/workflows/" +
      encodeURIComponent(controls.dataset.workflow) +
      "/instances/" +
      encodeURIComponent(controls.dataset.instance);
    const status = document.getElementById("action-status");
    let lastStatus = null;

    decorate(document.querySelector("main"));
    document.addEventListener("tf:loaded", (event) => {
      decorate(event.detail.region);
      if (event.detail.region === timeline) layout();
    });
    document.addEventListener("tf:loaded", (event) => {
      const state = event.detail.state;
      if (event.detail.region !== region || !state) return;
      const readonly = state.dataset.readonly === "true";
      controls.hidden = readonly;
      const current = state.dataset.status;
      for (const button of controls.querySelectorAll("[data-action]")) {
        const allowed = tf.CONTROL_ALLOWED[button.dataset.action].includes(current);
        button.disabled = !allowed;
        button.title = allowed ? "" : "Not possible while the instance is " + current;
      }
      const eventButton = controls.querySelector("#event-form button[type=submit]");
      eventButton.disabled = tf.FINISHED.includes(current);
      if (lastStatus !== null && lastStatus !== current) tf.announce("Instance is now " + current);
      lastStatus = current;
    });
    document.addEventListener("tf:error", (event) => {
      if (event.detail.region !== region) return;
      controls.hidden = true;
      timeline.hidden = true;
      activity.hidden = true;
      nowRegion.hidden = true;
    });
    controls.addEventListener("tf:reload", reload);
    liveInstance(base, nowRegion, region, timeline, activity);
    eventForm(base, controls);
    window.setInterval(() => {
      tickRelative();
      const gantt = document.getElementById("gantt");
      if (gantt && gantt.dataset.live === "true" && !document.hidden) layout();
    }, 1000);

    for (const button of controls.querySelectorAll("[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        const label = button.textContent.trim();
        if (button.dataset.confirm && !(await tf.confirmAction(button.dataset.confirm, label))) {
          tf.show(status, label + " cancelled.", null);
          return;
        }
        try {
          const instance = await tf.api("POST", base + "/" + action);
          tf.show(status, label + ": the instance is now " + instance.status + ".", "ok");
        } catch (e) {
          tf.show(status, label + " failed: " + e.message, "error");
        }
        reload();
      });
    }

    timeline.addEventListener("click", async (event) => {
      const target = event.target instanceof Element ? event.target : null;
      if (!target) return;
      const fork = target.closest("button[data-fork]");
      if (fork) {
        // The call is named by its step name and its count among the calls of that name (the server counted).
        const detail = fork.closest(".step-detail");
        fork.disabled = true;
        try {
          const from = { name: detail.dataset.step, count: Number(detail.dataset.count) };
          const forked = await tf.api("POST", base + "/fork", { from: from });
          tf.show(status, "Forked as " + forked.id + ".", "ok");
          location.assign(
            "/workflows/" +
              encodeURIComponent(controls.dataset.workflow) +
              "/instances/" +
              encodeURIComponent(forked.id),
          );
        } catch (e) {
          tf.show(status, "Could not fork: " + e.message, "error");
          fork.disabled = false;
        }
        return;
      }
      const button = target.closest("button.row-name");
      if (button) openRow(timeline, button.closest("li.row"));
    });
    window.addEventListener("resize", layout);
  }

  tf.pages.instance = instancePage;
})();
