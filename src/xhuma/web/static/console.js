// Xhuma operator console. The token lives in sessionStorage and travels only in the Authorization header.
"use strict";
(function () {
  const KEY = "xhuma-admin-token";
  const PAGE = 25;
  let offset = 0;
  let total = 0;
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
    $("page-info").textContent = total ? (offset + 1) + "–" + (offset + page.items.length) + " of " + total : "no events";
    $("prev").disabled = offset === 0;
    $("next").disabled = page.next_offset === null;
  }

  async function refresh() {
    try {
      await Promise.all([loadStatus(), loadCounters(), loadAudit()]);
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
  $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); loadAudit().catch((e) => say(e.message, true)); });
  $("next").addEventListener("click", () => { offset += PAGE; loadAudit().catch((e) => say(e.message, true)); });
  if (token()) { refresh(); } else { say("Enter the admin bearer token to connect."); }
  setInterval(() => { if (token() && !$("main").hidden) { loadStatus().then(loadCounters).catch(() => {}); } }, 15000);
})();
