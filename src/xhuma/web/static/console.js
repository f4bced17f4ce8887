// Xhuma operator console. The token lives in sessionStorage and travels only in the Authorization header.
"use strict";
(function () {
  const KEY = "xhuma-admin-token";
  const PAGE = 25;
  let offset = 0;
  let total = 0;
  let reasons = {};  // code -> sentence (/api/reasons)
  let shownEvent = null;
  const $ = (id) => document.getElementById(id);

  function token() { return sessionStorage.getItem(KEY) || ""; }

  async function api(path, body) {
    const init = { headers: { Authorization: "Bearer " + token() }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401 || response.status === 403) {
      const detail = (await response.json().catch(() => ({}))).detail || "not authorised";
      throw new Error("Not authorised: " + detail);
    }
    if (!response.ok) { throw new Error(path + " answered " + response.status); }
    return response.json();
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }

  function fill(tbodyParent, rows) {
    const tbody = tbodyParent.querySelector("tbody");
    tbody.replaceChildren();
    rows.forEach((values) => {
      const tr = document.createElement("tr");
      values.forEach((v) => cell(tr, Array.isArray(v) ? v[0] : v, Array.isArray(v) ? v[1] : null));
      tbody.appendChild(tr);
    });
  }

  function definitions(dl, pairs) {
    dl.replaceChildren();
    pairs.forEach(([term, value]) => {
      const dt = document.createElement("dt"); dt.textContent = term;
      const dd = document.createElement("dd"); dd.textContent = String(value);
      dl.append(dt, dd);
    });
  }

  function say(text, isError) {
    $("message").textContent = text;
    $("message").className = isError ? "error" : "";
  }

  async function loadStatus() {
    const s = await api("/api/status");
    definitions($("status"), [
      ["Status", s.ready ? "ready" : "NOT READY"], ["Profile", s.profile], ["Version", s.version],
      ["Uptime", Math.round(s.uptime_seconds / 60) + " min"], ["Cache", s.checks.cache.backend],
      ["Audit store", s.checks.audit.backend], ["ATNA export", s.atna.enabled ? "on (" + s.atna.pending + " queued)" : "off"],
      ["Client auth", s.security.client_auth ? "on" : "off"], ["SAML", s.security.saml_verify],
      ["Rate limit", s.security.rate_limit_per_minute ? s.security.rate_limit_per_minute + "/min" : "off"],
    ]);
    $("status-card").className = "card " + (s.ready ? "ok" : "bad");
    fill($("checks"), Object.entries(s.checks).map(([name, c]) => [name, [c.ok ? "ok" : "failing", c.ok ? "ok" : "bad"], c.reason || c.backend || ""]));
    // One row per service (worst state, endpoints per state), then one per endpoint whose breaker is not closed.
    const breakers = Object.entries(s.breakers).map(([svc, st]) => {
      const c = s.breaker_counts[svc] || {};
      return [svc, [st, st === "closed" ? "ok" : "bad"], `${c.open || 0} open, ${c["half-open"] || 0} half-open, ${c.closed || 0} closed`];
    });
    const endpoints = s.breaker_endpoints.map((b) => ["  " + b.service + " " + b.endpoint, [b.state, "bad"],
      `${b.failures} failures, ${b.refused} refused, open ${Math.round(b.open_for_seconds || 0)} s`]);
    fill($("breakers"), breakers.length ? breakers.concat(endpoints) : [["(no upstream calls yet)", "", ""]]);
  }

  async function loadCounters() {
    const m = await api("/api/metrics/summary");
    const rows = Object.entries(m.requests).sort().map(([tx, o]) => [tx, o.success || 0, o["no-match"] || 0, o.denied || 0, [o.error || 0, o.error ? "bad" : null]]);
    fill($("requests"), rows.length ? rows : [["(no requests yet)", "", "", "", ""]]);
    definitions($("counters"), [
      ["Cache hit ratio", m.cache.hit_ratio === null ? "n/a" : Math.round(m.cache.hit_ratio * 100) + "%"],
      ["In flight", m.in_flight], ["Audit events", m.audit_events], ["Audit failures", m.audit_failures],
      ["Upstream errors", m.upstream_errors.reduce((a, e) => a + e.count, 0)], ["Rate limited", m.rate_limited],
      ["Refused clients", m.client_auth_failures],
    ]);
  }

  function filters() {
    const body = { limit: PAGE, offset: offset };
    if ($("f-transaction").value) { body.transaction = [$("f-transaction").value]; }
    if ($("f-outcome").value) { body.outcome = [$("f-outcome").value]; }
    if ($("f-since").value) { body.since = new Date($("f-since").value).toISOString(); }
    if ($("f-until").value) { body.until = new Date($("f-until").value).toISOString(); }
    const nhs = $("f-nhs").value.replace(/\s/g, "");
    if (nhs) { body.nhs_number = nhs; }
    [["f-message", "message_id"], ["f-document", "document_unique_id"], ["f-error", "error_code"]].forEach(([id, name]) => {
      const value = $(id).value.trim();
      if (value) { body[name] = value; }
    });
    return body;
  }

  async function loadAudit() {
    const page = await api("/api/audit/search", filters());
    total = page.total;
    fill($("audit"), page.items.map((e) => [
      (e.occurred_at || "").replace("T", " ").slice(0, 19), e.transaction,
      [e.outcome, e.outcome === "error" || e.outcome === "denied" ? "bad" : null], e.error_code || e.reason,
      [e.user_name, e.user_role].filter(Boolean).join(" · "), e.organization,
      [e.client_cert_subject, e.client_address].filter(Boolean).join(" @ "),
      [e.patient_pseudonym ? e.patient_pseudonym.slice(0, 16) + "…" : "", "mono"],
      [e.document_unique_id, "mono"], [e.message_id || e.trace_id, "mono"],
    ]));
    // Each row opens the event with every field (click, or Enter when focused).
    $("audit").querySelectorAll("tbody tr").forEach((tr, index) => {
      tr.tabIndex = 0;
      tr.addEventListener("click", () => openEvent(page.items[index]));
      tr.addEventListener("keydown", (event) => { if (event.key === "Enter") { openEvent(page.items[index]); } });
    });
    $("page-info").textContent = total ? (offset + 1) + "–" + (offset + page.items.length) + " of " + total : "no events";
    $("prev").disabled = offset === 0;
    $("next").disabled = page.next_offset === null;
  }

  // The failure reason in words: the error code's sentence, then the reason's when it says more.
  function inWords(e) {
    const said = [e.error_code, e.reason].filter((code, i, all) => code && reasons[code] && all.indexOf(code) === i)
      .map((code) => code + ": " + reasons[code]);
    return said.join(" ");
  }

  function shown(value) {
    if (value === null || value === undefined || value === "") { return null; }
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function openEvent(e) {
    shownEvent = e;
    $("event-card").hidden = false;
    $("event-title").textContent = [e.transaction, e.outcome, (e.occurred_at || "").replace("T", " ").slice(0, 19)].join(" · ");
    const words = inWords(e);
    $("event-reason").textContent = words || (e.outcome === "success" ? "Completed." : "");
    definitions($("event"), Object.keys(e).map((key) => [key, shown(e[key])]).filter(([, value]) => value !== null));
    $("open-exchange").disabled = !(e.trace_id || e.request_id);
    $("open-document").disabled = !e.document_unique_id;
    $("event-card").scrollIntoView({ block: "start" });
  }

  async function openExchange(e) {
    const id = e.trace_id || e.request_id;
    const x = await api("/api/exchanges/" + encodeURIComponent(id) + "?around=" + encodeURIComponent(e.occurred_at));
    $("exchange-card").hidden = false;
    $("exchange-title").textContent = x.total + " events" + (x.trace_ids.length ? " · trace " + x.trace_ids.join(", ") : "");
    const box = $("exchange");
    box.replaceChildren();
    x.requests.forEach((group) => {
      const h = document.createElement("h3");
      h.textContent = "Request " + group.request_id;
      const wrap = document.createElement("div");
      wrap.className = "table-scroll";
      const table = document.createElement("table");
      table.className = "exchange";
      const head = document.createElement("thead");
      const hr = document.createElement("tr");
      ["Time (UTC)", "Transaction", "Outcome", "Took", "Reason", "Spine trace / Ssp", "Message / document"].forEach((t) => {
        const th = document.createElement("th"); th.textContent = t; hr.appendChild(th);
      });
      head.appendChild(hr);
      table.append(head, document.createElement("tbody"));
      wrap.appendChild(table);
      box.append(h, wrap);
      fill(table, group.events.map((ev) => [
        (ev.occurred_at || "").replace("T", " ").slice(11, 23), ev.transaction,
        [ev.outcome, ev.outcome === "error" || ev.outcome === "denied" ? "bad" : null],
        ev.duration_ms === null || ev.duration_ms === undefined ? "" : Math.round(ev.duration_ms) + " ms",
        inWords(ev) || ev.error_code || "", [[ev.spine_trace_id, ev.ssp_from && ev.ssp_to ? ev.ssp_from + " → " + ev.ssp_to : null,
          ev.ssp_interaction_id].filter(Boolean).join(" · "), "mono"],
        [[ev.message_id, ev.document_unique_id].filter(Boolean).join(" · "), "mono"],
      ]));
    });
    $("exchange-card").scrollIntoView({ block: "start" });
  }

  // "not mapped" and "narrative only" first: what the EHR did not receive as coded entries.
  const OUTCOME_ORDER = { "not-mapped": 0, narrative: 1, entry: 2, supporting: 3 };
  const OUTCOME_WORDS = { "not-mapped": "not mapped", narrative: "narrative only", entry: "coded entry", supporting: "supporting" };

  async function openDocument(uniqueId) {
    const path = "/api/documents/" + encodeURIComponent(uniqueId);
    const response = await fetch(path + "/rendered", { headers: { Authorization: "Bearer " + token() }, cache: "no-store", credentials: "omit" });
    if (!response.ok) { throw new Error("the document answered " + response.status + ": " + ((await response.json().catch(() => ({}))).detail || "")); }
    // Parsed, not executed: the rendering has no script, and the page's CSP would refuse one anyway.
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const article = page.querySelector("article.cda");
    $("document-rendered").replaceChildren(article ? document.importNode(article, true) : document.createTextNode("(empty rendering)"));
    const report = await api(path + "/report");
    const items = (report.resources || []).slice().sort((a, b) =>
      (OUTCOME_ORDER[a.outcome] ?? 9) - (OUTCOME_ORDER[b.outcome] ?? 9) || String(a.resource).localeCompare(String(b.resource)));
    const tally = {};
    items.forEach((r) => { tally[r.outcome] = (tally[r.outcome] || 0) + 1; });
    definitions($("report-summary"), [
      ["Not mapped", tally["not-mapped"] || 0], ["Narrative only", tally.narrative || 0],
      ["Coded entries", tally.entry || 0], ["Supporting", tally.supporting || 0], ["Warnings", (report.warnings || []).length],
    ]);
    fill($("report"), items.map((r) => [
      [OUTCOME_WORDS[r.outcome] || r.outcome, r.outcome === "not-mapped" ? "bad" : r.outcome === "narrative" ? "warn" : null],
      [r.resource, "mono"], r.section || "", r.reason || r.template || "",
    ]).concat((report.warnings || []).map((w) => [["warning", "warn"], [w.resource || "", "mono"], w.section || "", w.code + ": " + w.message])));
    $("document-title").textContent = uniqueId;
    $("document-card").hidden = false;
    $("document-card").scrollIntoView({ block: "start" });
  }

  async function loadUpstreams() {
    const response = await fetch("/health/upstreams", { cache: "no-store", credentials: "omit" });
    if (!response.ok) { return; }
    const health = await response.json();
    const ms = (l) => [l.p50, l.p95, l.p99].map((v) => (v === null ? "–" : v)).join(" / ");
    const last = (e) => (e ? e.code + " at " + e.at.replace("T", " ").slice(0, 19) : "");
    const rows = [];
    Object.values(health.services).forEach((s) => {
      rows.push([s.service, s.calls, [s.error_rate === null ? "–" : Math.round(s.error_rate * 100) + "%", s.errors ? "bad" : null],
        ms(s.latency_ms), last(s.last_error), [s.breaker, s.breaker === "closed" ? "ok" : "bad"]]);
      s.endpoints.slice(0, 5).forEach((p) => rows.push([["  " + p.endpoint, "mono"], p.calls,
        [p.error_rate === null ? "–" : Math.round(p.error_rate * 100) + "%", p.errors ? "bad" : null], ms(p.latency_ms),
        last(p.last_error), [p.breaker || "closed", (p.breaker || "closed") === "closed" ? "ok" : "bad"]]));
    });
    fill($("upstreams"), rows.length ? rows : [["(no upstream calls yet)", "", "", "", "", ""]]);
  }

  async function refresh() {
    try {
      reasons = await api("/api/reasons");
      await Promise.all([loadStatus(), loadCounters(), loadAudit(), loadUpstreams()]);
      say("Connected. Updated " + new Date().toLocaleTimeString() + ".");
      $("main").hidden = false;
      $("logout").hidden = false;
    } catch (error) {
      say(error.message, true);
      if (String(error.message).startsWith("Not authorised")) { $("main").hidden = true; }
    }
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) { sessionStorage.setItem(KEY, value); }
    $("token").value = "";
    offset = 0;
    refresh();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("main").hidden = true; $("logout").hidden = true;
    say("Token forgotten.");
  });
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); offset = 0; loadAudit().catch((e) => say(e.message, true)); });
  $("open-exchange").addEventListener("click", () => { if (shownEvent) { openExchange(shownEvent).catch((e) => say(e.message, true)); } });
  $("open-document").addEventListener("click", () => {
    if (shownEvent && shownEvent.document_unique_id) { openDocument(shownEvent.document_unique_id).catch((e) => say(e.message, true)); }
  });
  $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadAudit().catch((e) => say(e.message, true)); });
  $("next").addEventListener("click", () => { offset += PAGE; loadAudit().catch((e) => say(e.message, true)); });
  if (token()) { refresh(); } else { say("Enter the admin bearer token to connect."); }
  setInterval(() => { if (token() && !$("main").hidden) { loadStatus().then(loadCounters).then(loadUpstreams).catch(() => {}); } }, 15000);
})();
