// tenantflow dashboard: instance lists (the instances page and a workflow's page).
// The list is a server-rendered fragment (status tabs with counts, the page, the pager), fetched again for each
// change of filter and put in place without reloading the page; the address follows (history.replaceState), so
// a reload or going back shows the same list. Selected instances, or every instance the filter matches, can be
// paused, resumed, terminated or restarted through the API's bulk calls, after a confirmation naming the count.
"use strict";

(function () {
  const KEY = "tenantflow.apiKey";
  const LIVE_MS = 2000;
  const MAX_BULK = 1000;
  const LABELS = { pause: "Pause", resume: "Resume", terminate: "Terminate", restart: "Restart" };
  const DONE = { pause: "paused", resume: "resumed", terminate: "terminated", restart: "restarted" };
  const region = document.getElementById("instances-region");
  if (!region) return;
  const form = document.getElementById("list-filters");
  const bar = document.getElementById("selection-bar");
  const selectionText = document.getElementById("selection-text");
  const matchingButton = document.getElementById("select-matching");
  const bulkStatus = document.getElementById("bulk-status");
  const selected = new Map(); // "workflow/id" -> [workflow, id]
  let allMatching = false;
  let timer = null;
  let loading = null;
  let lastHtml = null;
  let busy = false;

  function getKey() {
    try {
      return sessionStorage.getItem(KEY);
    } catch (e) {
      return null;
    }
  }

  function toLogin(message) {
    sessionStorage.removeItem(KEY);
    location.assign(
      "/login?next=" + encodeURIComponent(location.pathname + location.search) + "&reason=" + encodeURIComponent(message),
    );
  }

  function say(text, kind) {
    bulkStatus.textContent = text;
    bulkStatus.hidden = !text;
    bulkStatus.classList.remove("error", "ok");
    if (kind) bulkStatus.classList.add(kind);
  }

  function list() {
    return region.querySelector(".instance-list");
  }

  function count(n) {
    return Number(n).toLocaleString("en-US");
  }

  // -- the address is the list's state --------------------------------------------------------

  function params() {
    return new URLSearchParams(location.search);
  }

  function go(next, keepSelection) {
    for (const [name, value] of Array.from(next.entries())) if (!value) next.delete(name);
    const query = next.toString();
    history.replaceState(null, "", region.dataset.pagePath + (query ? "?" + query : ""));
    if (!keepSelection) clearSelection();
    load();
  }

  function localInput(epoch) {
    const at = new Date(Number(epoch) * 1000);
    if (isNaN(at.getTime())) return "";
    return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  }

  function epochOf(value) {
    if (!value) return "";
    const at = new Date(value).getTime(); // a datetime-local value is local time
    return isNaN(at) ? "" : String(Math.floor(at / 1000));
  }

  function fillForm() {
    const here = params();
    for (const input of form.querySelectorAll("input[data-param]")) {
      const epoch = here.get(input.dataset.param);
      input.value = epoch ? localInput(epoch) : "";
    }
  }

  function applyForm() {
    const next = params();
    next.delete("after");
    next.delete("before");
    for (const input of form.querySelectorAll("input[name]")) {
      if (input.type === "hidden" && input.name.startsWith("created_")) continue;
      if (input.name === "tenant" || input.name === "status") continue;
      next.set(input.name, input.value.trim());
    }
    for (const input of form.querySelectorAll("input[data-param]")) next.set(input.dataset.param, epochOf(input.value));
    go(next, false);
  }

  // -- the fragment ------------------------------------------------------------------------------

  function schedule(ms) {
    window.clearTimeout(timer);
    timer = window.setTimeout(load, ms);
  }

  async function load() {
    window.clearTimeout(timer);
    if (loading) loading.abort();
    const controller = new AbortController();
    loading = controller;
    const query = params().toString();
    let response;
    let html;
    try {
      response = await fetch(region.dataset.list + (query ? "?" + query : ""), {
        headers: { Authorization: "Bearer " + getKey(), Accept: "text/html" },
        cache: "no-store",
        signal: controller.signal,
      });
      html = await response.text();
    } catch (e) {
      if (!controller.signal.aborted) schedule(5000);
      return;
    }
    if (loading !== controller) return;
    loading = null;
    if (response.status === 401) {
      toLogin("Your API key was not accepted; sign in again.");
      return;
    }
    region.setAttribute("aria-busy", "false");
    if (!response.ok) {
      let text = response.status + " " + response.statusText;
      try {
        text = JSON.parse(html).detail || text;
      } catch (e) {
        /* not JSON */
      }
      const box = document.createElement("p");
      box.className = "notice error";
      box.setAttribute("role", "alert");
      box.textContent = text;
      region.replaceChildren(box);
      lastHtml = null;
      updateBar();
      return;
    }
    if (html !== lastHtml) {
      region.innerHTML = html;
      lastHtml = html;
      restoreSelection();
    }
    updateBar();
    if (!document.hidden) schedule(LIVE_MS);
  }

  // -- selection ---------------------------------------------------------------------------------

  function boxes() {
    return Array.from(region.querySelectorAll("input.pick-one"));
  }

  function clearSelection() {
    selected.clear();
    allMatching = false;
    for (const box of boxes()) box.checked = false;
    updateBar();
  }

  function restoreSelection() {
    for (const box of boxes()) box.checked = allMatching || selected.has(box.dataset.workflow + "/" + box.dataset.id);
  }

  function updateBar() {
    const current = list();
    const all = boxes();
    const page = region.querySelector("#pick-page");
    const onPage = all.filter((box) => box.checked).length;
    if (page) {
      page.checked = all.length > 0 && onPage === all.length;
      page.indeterminate = onPage > 0 && onPage < all.length;
    }
    if (!current || current.dataset.readonly === "true") {
      bar.hidden = true;
      return;
    }
    const total = Number(current.dataset.total);
    bar.hidden = !allMatching && selected.size === 0;
    if (allMatching) {
      selectionText.textContent = "All " + current.dataset.totalText + " matching instances are selected.";
    } else {
      selectionText.textContent = count(selected.size) + " selected.";
    }
    const more = !allMatching && all.length > 0 && onPage === all.length && total > all.length;
    matchingButton.hidden = !more;
    matchingButton.textContent = "Select all " + current.dataset.totalText + " matching";
    for (const button of bar.querySelectorAll("[data-bulk]")) button.disabled = busy;
  }

  region.addEventListener("change", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement)) return;
    if (box.id === "pick-page") {
      allMatching = false;
      for (const one of boxes()) {
        one.checked = box.checked;
        const key = one.dataset.workflow + "/" + one.dataset.id;
        if (box.checked) selected.set(key, [one.dataset.workflow, one.dataset.id]);
        else selected.delete(key);
      }
    } else if (box.classList.contains("pick-one")) {
      const key = box.dataset.workflow + "/" + box.dataset.id;
      if (allMatching) {
        // Leaving "all matching": what stays selected is this page's boxes as they are now.
        allMatching = false;
        selected.clear();
        for (const one of boxes()) if (one.checked) selected.set(one.dataset.workflow + "/" + one.dataset.id, [one.dataset.workflow, one.dataset.id]);
      } else if (box.checked) selected.set(key, [box.dataset.workflow, box.dataset.id]);
      else selected.delete(key);
    }
    updateBar();
  });

  matchingButton.addEventListener("click", () => {
    allMatching = true;
    restoreSelection();
    updateBar();
  });
  document.getElementById("clear-selection").addEventListener("click", clearSelection);

  // -- bulk actions ------------------------------------------------------------------------------

  function confirmDialog(text, label) {
    const dialog = document.getElementById("confirm");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(window.confirm(text));
    document.getElementById("confirm-title").textContent = label + "?";
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = label;
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          document.getElementById("confirm-title").textContent = "Are you sure?";
          resolve(dialog.returnValue === "confirm");
        },
        { once: true },
      );
    });
  }

  function describe(action, current) {
    const label = LABELS[action];
    if (!allMatching) {
      return label + " " + count(selected.size) + " selected instance" + (selected.size === 1 ? "" : "s") + "?";
    }
    const given = JSON.parse(current.dataset.filter);
    const status = current.dataset.filterStatus;
    const one = current.dataset.totalText === "1";
    let text = label + " " + current.dataset.totalText + " " + (status ? status + " " : "") + "instance" + (one ? "" : "s");
    text += given.workflow ? " of '" + given.workflow + "'" : " across all workflows";
    if (given.filter.id_prefix) text += " whose id starts with '" + given.filter.id_prefix + "'";
    if (given.filter.created_after !== undefined || given.filter.created_before !== undefined) {
      text += " created in the chosen time range";
    }
    return text + "?";
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { Authorization: "Bearer " + getKey(), Accept: "application/json", "Content-Type": "application/json" },
      cache: "no-store",
      body: JSON.stringify(body),
    });
    if (response.status === 401) {
      toLogin("Your API key was not accepted; sign in again.");
      throw new Error("unauthorized");
    }
    const answer = await response.json().catch(() => null);
    if (!response.ok) throw new Error((answer && answer.detail) || response.status + " " + response.statusText);
    return answer;
  }

  async function bulk(action) {
    const current = list();
    if (!current || busy) return;
    const label = LABELS[action];
    if (!(await confirmDialog(describe(action, current), label))) {
      say(label + " cancelled.", null);
      return;
    }
    busy = true;
    updateBar();
    const tally = { done: 0, skipped: 0, reasons: new Map() };
    const note = (answer) => {
      tally.done += answer.done;
      tally.skipped += answer.skipped;
      for (const result of answer.results) {
        if (result.outcome === "skipped") tally.reasons.set(result.reason, (tally.reasons.get(result.reason) || 0) + 1);
      }
      say(label + ": " + count(tally.done) + " " + DONE[action] + ", " + count(tally.skipped) + " skipped…", null);
    };
    try {
      if (allMatching) {
        const given = JSON.parse(current.dataset.filter);
        const path = region.dataset.workflow
          ? "/v1/workflows/" + encodeURIComponent(region.dataset.workflow) + "/instances/bulk"
          : "/v1/instances/bulk";
        const filter = Object.assign({}, given.filter);
        if (!region.dataset.workflow && given.workflow) filter.workflow = given.workflow;
        let after = null;
        do {
          const body = { action: action, filter: filter };
          if (after) body.after = after;
          const answer = await post(path, body);
          note(answer);
          after = answer.next_after;
        } while (after);
      } else {
        const all = Array.from(selected.values());
        for (let start = 0; start < all.length; start += MAX_BULK) {
          const instances = all.slice(start, start + MAX_BULK).map(([workflow, id]) => ({ workflow: workflow, id: id }));
          note(await post("/v1/instances/bulk", { action: action, instances: instances }));
        }
      }
      let text = label + ": " + count(tally.done) + " " + DONE[action] + ", " + count(tally.skipped) + " skipped.";
      if (tally.reasons.size) {
        const [reason, times] = Array.from(tally.reasons.entries()).sort((a, b) => b[1] - a[1])[0];
        text += " (" + count(times) + ": " + reason + (tally.reasons.size > 1 ? "; and other reasons" : "") + ")";
      }
      say(text, "ok");
      clearSelection();
    } catch (e) {
      say(label + " stopped: " + e.message + " (" + count(tally.done) + " " + DONE[action] + " before that)", "error");
    } finally {
      busy = false;
      updateBar();
      load();
    }
  }

  for (const button of bar.querySelectorAll("[data-bulk]")) {
    button.addEventListener("click", () => bulk(button.dataset.bulk));
  }

  // -- navigation within the list ------------------------------------------------------------------

  region.addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest("a[data-tab], a[data-page]") : null;
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    const url = new URL(link.href, location.href);
    go(new URLSearchParams(url.search), link.hasAttribute("data-page"));
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    applyForm();
  });
  for (const input of form.querySelectorAll("input[data-param], #workflow-filter")) {
    input.addEventListener("change", applyForm);
  }
  let typing = null;
  const idField = document.getElementById("id-filter");
  idField.addEventListener("input", () => {
    window.clearTimeout(typing);
    if (idField.value && !idField.checkValidity()) return;
    typing = window.setTimeout(applyForm, 300);
  });
  document.getElementById("clear-filters").addEventListener("click", () => {
    const next = new URLSearchParams();
    const tenant = params().get("tenant");
    if (tenant) next.set("tenant", tenant);
    form.reset();
    for (const input of form.querySelectorAll("input:not([type=hidden])")) input.value = "";
    go(next, false);
    fillForm();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) load();
  });

  // -- start, once the sign-in script has the key (it may ask another tab for it first) ---------------

  document.addEventListener("DOMContentLoaded", () => {
    fillForm();
    let tries = 0;
    const start = () => {
      if (getKey()) load();
      else if (tries++ < 40) window.setTimeout(start, 100);
    };
    start();
  });
})();
