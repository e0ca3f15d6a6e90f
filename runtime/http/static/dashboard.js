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

  // -- confirmation ----------------------------------------------------------------------------

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

  // -- what other scripts use (static/instance.js: the instance page) ----------------------------------

  window.tenantflow = {
    FINISHED: FINISHED,
    CONTROL_ALLOWED: CONTROL_ALLOWED,
    getKey: getKey,
    signOut: signOut,
    announce: announce,
    show: show,
    problemText: problemText,
    api: api,
    jsonField: jsonField,
    fieldError: fieldError,
    fragmentUrl: fragmentUrl,
    loadRegion: loadRegion,
    schedule: schedule,
    confirmAction: confirmAction,
    pages: {}, // page name (body[data-page]) -> its start function, called once signed in
  };

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
    const start = window.tenantflow.pages[page];
    if (start) start();
    refreshAll();
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refreshAll();
    });
  });
})();
