// tenantflow dashboard: fills server-rendered fragments and calls the /v1 API with the tenant's key.
// The key lives in sessionStorage (this tab only) and is sent as "Authorization: Bearer <key>".
"use strict";

(function () {
  const KEY = "tenantflow.apiKey";
  const FINISHED = ["errored", "terminated", "complete"];
  const CONTROL_ALLOWED = {
    pause: ["queued", "running", "waiting"],
    resume: ["paused", "waiting_for_pause"],
    terminate: ["queued", "running", "waiting", "waiting_for_pause", "paused"],
    restart: ["queued", "running", "waiting", "waiting_for_pause", "paused", "errored", "terminated", "complete"],
  };
  const page = document.body.dataset.page;

  function getKey() {
    try {
      return sessionStorage.getItem(KEY);
    } catch (e) {
      return null;
    }
  }

  // Tabs of this origin share the key while one of them is open (a new tab asks the others),
  // so it never needs a cookie or localStorage; signing out in one tab signs out all of them.
  const channel = "BroadcastChannel" in window ? new BroadcastChannel("tenantflow-auth") : null;
  if (channel) {
    channel.addEventListener("message", (event) => {
      const data = event.data || {};
      if (data.want && getKey()) channel.postMessage({ key: getKey() });
      if (data.signOut && getKey()) {
        sessionStorage.removeItem(KEY);
        if (page !== "login") signOut("Signed out in another tab.");
      }
    });
  }

  function askOtherTabs() {
    if (!channel) return Promise.resolve(null);
    return new Promise((resolve) => {
      const done = (key) => {
        channel.removeEventListener("message", onMessage);
        resolve(key);
      };
      const onMessage = (event) => {
        if (event.data && typeof event.data.key === "string") done(event.data.key);
      };
      channel.addEventListener("message", onMessage);
      channel.postMessage({ want: true });
      window.setTimeout(() => done(null), 400);
    });
  }

  function signOut(message, everywhere) {
    sessionStorage.removeItem(KEY);
    if (everywhere && channel) channel.postMessage({ signOut: true });
    const next = location.pathname + location.search;
    let url = "/login?next=" + encodeURIComponent(next);
    if (message) url += "&reason=" + encodeURIComponent(message);
    location.assign(url);
  }

  function announce(text) {
    const el = document.getElementById("announcer");
    if (el) {
      el.textContent = "";
      window.setTimeout(() => (el.textContent = text), 50);
    }
  }

  function show(el, text, kind) {
    if (!el) return;
    el.textContent = text;
    el.hidden = !text;
    el.classList.remove("error", "ok");
    if (kind) el.classList.add(kind);
  }

  // A problem+json body's detail, or the status line.
  async function problemText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") {
        return body.detail + (body.line ? " (line " + body.line + ")" : "");
      }
    } catch (e) {
      /* not JSON */
    }
    return response.status + " " + response.statusText;
  }

  // One call to the API with the tenant's key, like any HTTP client.
  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + getKey(), Accept: "application/json" };
    const init = { method: method, headers: headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      signOut("Your API key was not accepted; sign in again.");
      throw new Error("unauthorized");
    }
    if (!response.ok) throw new Error(await problemText(response));
    return response.status === 204 ? null : response.json();
  }

  // Parse a JSON text field; empty means null. Sets the field's error message.
  function jsonField(field, errorEl) {
    const text = field.value.trim();
    if (!text) {
      fieldError(field, errorEl, "");
      return { ok: true, value: null };
    }
    try {
      const value = JSON.parse(text);
      fieldError(field, errorEl, "");
      return { ok: true, value: value };
    } catch (e) {
      fieldError(field, errorEl, "Not valid JSON: " + e.message);
      return { ok: false };
    }
  }

  function fieldError(field, errorEl, text) {
    if (text) field.setAttribute("aria-invalid", "true");
    else field.removeAttribute("aria-invalid");
    show(errorEl, text, text ? "error" : null);
  }

  // -- fragments -----------------------------------------------------------------

  function fragmentUrl(region) {
    const keep = (region.dataset.keep || "").split(/\s+/).filter(Boolean);
    const here = new URLSearchParams(location.search);
    const params = new URLSearchParams();
    for (const name of keep) {
      const value = here.get(name);
      if (value) params.set(name, value);
    }
    const query = params.toString();
    return region.dataset.fragment + (query ? "?" + query : "");
  }

  async function loadRegion(region) {
    window.clearTimeout(region._timer);
    let response;
    try {
      response = await fetch(fragmentUrl(region), {
        headers: { Authorization: "Bearer " + getKey(), Accept: "text/html" },
        cache: "no-store",
      });
    } catch (e) {
      region.dataset.offline = "true";
      schedule(region, 5000);
      return;
    }
    delete region.dataset.offline;
    if (response.status === 401) {
      signOut("Your API key was not accepted; sign in again.");
      return;
    }
    region.setAttribute("aria-busy", "false");
    if (!response.ok) {
      const text = await problemText(response);
      const box = document.createElement("p");
      box.className = "notice error";
      box.setAttribute("role", "alert");
      box.textContent = text;
      region.replaceChildren(box);
      region._html = null;
      document.dispatchEvent(new CustomEvent("tf:error", { detail: { region: region, status: response.status } }));
      return;
    }
    const html = await response.text();
    if (html !== region._html) {
      swap(region, html);
      region._html = html;
    }
    const state = region.querySelector("[data-live-state]");
    document.dispatchEvent(new CustomEvent("tf:loaded", { detail: { region: region, state: state } }));
    if (region.dataset.live && region.dataset.streaming !== "true") {
      const active = !state || state.dataset.liveState !== "false";
      schedule(region, active ? Number(region.dataset.live) : 10000);
    }
  }

  function schedule(region, ms) {
    window.clearTimeout(region._timer);
    region._timer = window.setTimeout(() => loadRegion(region), ms);
  }

  // Replace a region's content, keeping open <details> open and the focused element focused.
  function swap(region, html) {
    const open = new Set(Array.from(region.querySelectorAll("details[open][id]"), (d) => d.id));
    const focused = document.activeElement && region.contains(document.activeElement) ? document.activeElement : null;
    const focusKey = focused && (focused.id || focused.getAttribute("href"));
    region.innerHTML = html;
    for (const id of open) {
      const d = document.getElementById(id);
      if (d && region.contains(d)) d.open = true;
    }
    if (focusKey) {
      const again = Array.from(region.querySelectorAll("[id],[href]")).find(
        (el) => el.id === focusKey || el.getAttribute("href") === focusKey,
      );
      if (again) again.focus({ preventScroll: true });
    }
  }

  function refreshAll() {
    for (const region of document.querySelectorAll("[data-fragment]")) loadRegion(region);
  }

  // -- who is signed in --------------------------------------------------------------

  async function whoAmI() {
    const who = document.getElementById("who");
    if (!who) return;
    try {
      const me = await api("GET", "/ui/me");
      document.getElementById("who-name").textContent = me.name;
      document.getElementById("who-operator").hidden = !me.operator;
      who.hidden = false;
    } catch (e) {
      /* signOut already ran for 401 */
    }
  }

  // Where to go after sign-in: a path on this origin, else "/" (the server checked it too).
  // Browsers read "\\" as "/" and drop tabs and newlines, so "/\\evil.example" would leave the origin.
  function sameOriginPath(next) {
    if (typeof next !== "string" || !next.startsWith("/") || next.startsWith("//")) return "/";
    if (/[\\\u0000-\u001f\u007f-\u009f]/.test(next) || next.startsWith("/login")) return "/";
    let url;
    try {
      url = new URL(next, location.origin);
    } catch (e) {
      return "/";
    }
    if (url.origin !== location.origin) return "/";
    return url.pathname + url.search + url.hash;
  }

  // -- sign-in page -----------------------------------------------------------------

  function loginPage() {
    const form = document.getElementById("login-form");
    const input = document.getElementById("api-key");
    const error = document.getElementById("login-error");
    const params = new URLSearchParams(location.search);
    if (params.get("reason")) show(document.getElementById("login-message"), params.get("reason"), "error");
    input.focus();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        fieldError(input, error, "Paste an API key.");
        return;
      }
      const response = await fetch("/ui/me", { headers: { Authorization: "Bearer " + key }, cache: "no-store" });
      if (!response.ok) {
        fieldError(input, error, response.status === 401 ? "That API key is not known." : await problemText(response));
        input.focus();
        return;
      }
      sessionStorage.setItem(KEY, key);
      location.assign(sameOriginPath(form.dataset.next || "/"));
    });
  }

  // -- workflow page: start an instance ---------------------------------------------------

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || form.getAttribute("id") !== "start-form") return;
    event.preventDefault();
    const idField = form.elements.namedItem("id");
    const idError = document.getElementById("start-id-error");
    const params = jsonField(form.elements.namedItem("params"), document.getElementById("start-params-error"));
    const id = idField.value.trim();
    const idOk = !id || (/^[a-zA-Z0-9_][a-zA-Z0-9_-]*$/.test(id) && id.length <= 64);
    fieldError(idField, idError, idOk ? "" : "Use up to 64 letters, digits, '_' or '-', not starting with '-'.");
    if (!params.ok || !idOk) return;
    const status = document.getElementById("start-status");
    const body = { params: params.value };
    if (id) body.id = id;
    const workflow = form.dataset.workflow;
    try {
      const created = await api("POST", "/v1/workflows/" + encodeURIComponent(workflow) + "/instances", body);
      show(status, "Started " + created.id + ".", "ok");
      location.assign(
        "/workflows/" + encodeURIComponent(workflow) + "/instances/" + encodeURIComponent(created.id),
      );
    } catch (e) {
      show(status, "Could not start: " + e.message, "error");
    }
  });

  // -- instance page: controls and events ----------------------------------------------------

  function confirmAction(text, label) {
    const dialog = document.getElementById("confirm");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(text));
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = label;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    });
  }

  // -- instance page: live updates from the API's watch stream ---------------------------------

  // Server-sent events from a fetch response's body (EventSource cannot send the Authorization header).
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

  // Follow the instance: the summary and activity are fetched again when its status changes, and only the
  // step cards an entry event names are fetched and put in place. While the stream is down, the regions are
  // polled as before, and it is tried again with a growing pause.
  function liveInstance(base, summary, timeline, activity) {
    const regions = [summary, timeline, activity];
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
          schedule(region, Number(region.dataset.live) || 1000);
        }
      }
    }

    async function connect() {
      if (connecting || unwatchable) return;
      connecting = true;
      finished = false;
      firstStatus = true;
      const headers = { Authorization: "Bearer " + getKey(), Accept: "text/event-stream" };
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
        signOut("Your API key was not accepted; sign in again.");
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
        finished = FINISHED.includes(data.status);
        // A stream's first status is the one just rendered, unless it has moved on meanwhile.
        if (firstStatus && data.status === shownStatus) {
          firstStatus = false;
        } else {
          loadRegion(summary);
          loadRegion(activity);
        }
        firstStatus = false;
        shownStatus = data.status;
        if (finished) window.setTimeout(() => loadRegion(timeline), 150);
      } else if (event.type === "entry") {
        const shown = document.getElementById("step-" + data.position);
        if (shown && shown.dataset.updated === String(data.updated_at)) return; // the page has it as it is
        pending.add(Number(data.position));
        if (!flushTimer) flushTimer = window.setTimeout(flush, 100);
      } else if (event.type === "reset") {
        pending.clear();
        loadRegion(timeline);
      }
    }

    async function flush() {
      flushTimer = null;
      const positions = Array.from(pending);
      pending.clear();
      if (!positions.length) return;
      // The step before the first named one too: its end (or a sleep's "slept") shows once the next begins.
      const from = Math.max(0, Math.min(...positions) - 1);
      const to = Math.max(...positions);
      const url = fragmentUrl(timeline).replace(/\/timeline(\?|$)/, "/steps$1");
      const sep = url.includes("?") ? "&" : "?";
      let response;
      try {
        response = await fetch(url + sep + "from=" + from + "&to=" + to, {
          headers: { Authorization: "Bearer " + getKey(), Accept: "text/html" },
          cache: "no-store",
        });
      } catch (e) {
        loadRegion(timeline);
        return;
      }
      if (!response.ok) {
        loadRegion(timeline);
        return;
      }
      placeSteps(await response.text());
    }

    function placeSteps(html) {
      const list = document.getElementById("timeline");
      if (!list) {
        loadRegion(timeline);
        return;
      }
      const template = document.createElement("template");
      template.innerHTML = html;
      for (const item of Array.from(template.content.querySelectorAll("li.step"))) {
        const old = document.getElementById(item.id);
        if (old) {
          for (const details of old.querySelectorAll("details[open][id]")) {
            const again = item.querySelector("#" + CSS.escape(details.id));
            if (again) again.open = true;
          }
          old.replaceWith(item);
          continue;
        }
        const position = Number(item.dataset.position);
        const next = Array.from(list.children).find((li) => Number(li.dataset.position) > position);
        list.insertBefore(item, next || null);
      }
      const any = list.children.length > 0;
      document.getElementById("timeline-empty").hidden = any;
      document.getElementById("timeline-hint").hidden = !any;
      rescale(list);
    }

    // Bars span the whole timeline: as it grows, every bar is drawn again to the new scale.
    function rescale(list) {
      const t0 = Number(list.dataset.t0);
      const now = Date.now() / 1000;
      let t1 = Number(list.dataset.t1);
      const items = Array.from(list.children);
      const spans = items.map((li) => {
        const begin = Number(li.dataset.begin);
        const stop = li.dataset.stop === "" ? now : Number(li.dataset.stop);
        t1 = Math.max(t1, begin, stop);
        return [begin, stop];
      });
      const span = Math.max(t1 - t0, 1e-3);
      items.forEach((li, index) => {
        const [begin, stop] = spans[index];
        const x = Math.round(Math.max(0, Math.min(1, (begin - t0) / span)) * 10000) / 10;
        let width = Math.round(Math.max(0.004, Math.min(1, (stop - begin) / span)) * 10000) / 10;
        width = Math.min(width, 1000 - x) || 4;
        const fill = li.querySelector("svg.bar rect.fill");
        if (fill) {
          fill.setAttribute("x", String(x));
          fill.setAttribute("width", String(width));
        }
      });
      list.dataset.t1 = String(t1);
    }

    // The timeline loaded with the instance going (at first, or again after a restart): follow it from there.
    document.addEventListener("tf:loaded", (event) => {
      if (event.detail.region !== timeline || !event.detail.state) return;
      if (event.detail.state.dataset.liveState !== "false" && !connecting) connect();
    });
  }

  function instancePage() {
    const controls = document.getElementById("controls");
    const region = document.getElementById("instance-region");
    const timeline = document.getElementById("timeline-region");
    const activity = document.getElementById("activity-region");
    const reload = () => {
      loadRegion(region);
      loadRegion(timeline);
      loadRegion(activity);
    };
    const base =
      "/v1/workflows/" +
      encodeURIComponent(controls.dataset.workflow) +
      "/instances/" +
      encodeURIComponent(controls.dataset.instance);
    const status = document.getElementById("action-status");
    let lastStatus = null;

    document.addEventListener("tf:loaded", (event) => {
      const state = event.detail.state;
      if (event.detail.region !== region || !state) return;
      const readonly = state.dataset.readonly === "true";
      controls.hidden = readonly;
      const current = state.dataset.status;
      for (const button of controls.querySelectorAll("[data-action]")) {
        const allowed = CONTROL_ALLOWED[button.dataset.action].includes(current);
        button.disabled = !allowed;
        button.title = allowed ? "" : "Not possible while the instance is " + current;
      }
      const eventButton = controls.querySelector("#event-form button[type=submit]");
      eventButton.disabled = FINISHED.includes(current);
      if (lastStatus !== null && lastStatus !== current) announce("Instance is now " + current);
      lastStatus = current;
    });
    document.addEventListener("tf:error", (event) => {
      if (event.detail.region !== region) return;
      controls.hidden = true;
      timeline.hidden = true;
      activity.hidden = true;
    });
    liveInstance(base, region, timeline, activity);

    for (const button of controls.querySelectorAll("[data-action]")) {
      button.addEventListener("click", async () => {
        const action = button.dataset.action;
        const label = button.textContent.trim();
        if (button.dataset.confirm && !(await confirmAction(button.dataset.confirm, label))) {
          show(status, label + " cancelled.", null);
          return;
        }
        try {
          const instance = await api("POST", base + "/" + action);
          show(status, label + ": the instance is now " + instance.status + ".", "ok");
        } catch (e) {
          show(status, label + " failed: " + e.message, "error");
        }
        reload();
      });
    }

    // Fork from a step card: its name, and its count among the calls of that name up to it (the timeline
    // holds the journal from its start, in position order).
    timeline.addEventListener("click", async (event) => {
      const button = event.target instanceof Element ? event.target.closest("button[data-fork]") : null;
      if (!button) return;
      const item = button.closest("li.step");
      const name = item.dataset.step;
      const position = Number(item.dataset.position);
      const count = Array.from(document.querySelectorAll("#timeline > li.step")).filter(
        (li) => li.dataset.step === name && Number(li.dataset.position) <= position,
      ).length;
      button.disabled = true;
      try {
        const forked = await api("POST", base + "/fork", { from: { name: name, count: count } });
        show(status, "Forked as " + forked.id + ".", "ok");
        location.assign(
          "/workflows/" + encodeURIComponent(controls.dataset.workflow) + "/instances/" + encodeURIComponent(forked.id),
        );
      } catch (e) {
        show(status, "Could not fork: " + e.message, "error");
        button.disabled = false;
      }
    });

    const form = document.getElementById("event-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const typeField = form.elements.namedItem("type");
      const typeError = document.getElementById("event-type-error");
      const type = typeField.value.trim();
      fieldError(typeField, typeError, type ? "" : "Give the event a type, e.g. approved.");
      const payload = jsonField(form.elements.namedItem("payload"), document.getElementById("event-payload-error"));
      if (!type) {
        typeField.focus();
        return;
      }
      if (!payload.ok) {
        form.elements.namedItem("payload").focus();
        return;
      }
      try {
        const sent = await api("POST", base + "/events", { type: type, payload: payload.value });
        show(status, "Event #" + sent.seq + " (" + type + ") delivered.", "ok");
      } catch (e) {
        show(status, "Could not send the event: " + e.message, "error");
      }
      reload();
    });
  }

  // -- start ------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", async () => {
    if (page === "login") {
      loginPage();
      return;
    }
    if (!getKey()) {
      const shared = await askOtherTabs();
      if (!shared) {
        signOut("");
        return;
      }
      sessionStorage.setItem(KEY, shared);
    }
    const out = document.getElementById("sign-out");
    if (out) out.addEventListener("click", () => signOut("Signed out.", true));
    whoAmI();
    if (page === "instance") instancePage();
    refreshAll();
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refreshAll();
    });
  });
})();
