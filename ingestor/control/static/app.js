// The connector page: plain JS over the control API (same origin). The tenant token stays in this
// tab's sessionStorage; keys and secrets are sent once and never shown back (only their hints).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { tenant: null, token: null, mode: "test", lastKeyTest: null, timer: null };

function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : "never"; }

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${state.token}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || `request failed (${res.status})`);
    err.status = res.status; err.data = data;
    throw err;
  }
  return data;
}

const tenantPath = () => `/api/tenants/${encodeURIComponent(state.tenant)}`;
const connectionPath = () => `${tenantPath()}/connections/${state.mode}`;

function show(el, visible) { el.hidden = !visible; }
function setError(id, message) { $(id).textContent = message || ""; }

// ---- sign in -------------------------------------------------------------------------------
function readLoginFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("tenant") && params.get("token")) {
    sessionStorage.setItem("tenant", params.get("tenant"));
    sessionStorage.setItem("token", params.get("token"));
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar at once
  }
}

async function signIn(tenant, token) {
  state.tenant = tenant; state.token = token;
  try {
    const t = await api("GET", tenantPath());
    sessionStorage.setItem("tenant", tenant); sessionStorage.setItem("token", token);
    $("tenant-name").textContent = t.name;
    show($("login"), false); show($("app"), true);
    await refresh();
    state.timer = setInterval(refresh, 2000);
  } catch (err) {
    setError("login-error", err.status === 401 || err.status === 404 ? "That tenant id and token do not match." : err.message);
    show($("login"), true); show($("app"), false);
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setError("login-error", "");
  signIn($("tenant-id").value.trim(), $("tenant-token").value.trim());
});
$("sign-out").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });
$("mode").addEventListener("change", () => { state.mode = $("mode").value; state.lastKeyTest = null; renderVerdict(null); refresh(); });

// ---- key: test, connect, rotate ------------------------------------------------------------
$("key-show").addEventListener("click", () => {
  const input = $("key"), showing = input.type === "text";
  input.type = showing ? "password" : "text";
  $("key-show").textContent = showing ? "Show" : "Hide";
  $("key-show").setAttribute("aria-pressed", String(!showing));
});

function renderVerdict(result) {
  const box = $("verdict"), list = $("verdict-list");
  list.innerHTML = "";
  if (!result) { show(box, false); return; }
  $("verdict-summary").textContent = result.summary;
  for (const [resource, v] of Object.entries(result.resources || {})) {
    const li = document.createElement("li");
    li.className = v.verdict === "ok" ? "ok" : "bad";
    li.dataset.resource = resource;
    li.textContent = `${resource.replace("_", " ")}: ${v.message}`;
    if (v.fix) { const fix = document.createElement("span"); fix.className = "fix"; fix.textContent = v.fix; li.appendChild(fix); }
    list.appendChild(li);
  }
  show(box, true);
}

$("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  setError("key-error", ""); renderVerdict(null); $("connect").disabled = true; $("rotate").disabled = true;
  const key = $("key").value.trim();
  if (!key) { setError("key-error", "Paste your restricted key first."); return; }
  $("test-key").disabled = true;
  try {
    const result = await api("POST", `${tenantPath()}/key-tests`, { key });
    state.lastKeyTest = result;
    if (!result.key.accepted) { setError("key-error", result.key.message); return; }
    renderVerdict(result);
    if (result.key.mode !== state.mode) { $("mode").value = result.key.mode; state.mode = result.key.mode; }
    $("connect").disabled = !result.green; $("rotate").disabled = !result.green;
  } catch (err) {
    setError("key-error", err.message);
  } finally { $("test-key").disabled = false; }
});

async function storeKey(method, path) {
  setError("key-error", "");
  try {
    await api(method, path, { key: $("key").value.trim() });
    $("key").value = ""; $("connect").disabled = true; $("rotate").disabled = true;
    renderVerdict(null);
    await refresh();
  } catch (err) {
    setError("key-error", err.message);
    if (err.data && err.data.key_test) renderVerdict(err.data.key_test);
  }
}
$("connect").addEventListener("click", () => storeKey("POST", `${tenantPath()}/connections`));
$("rotate").addEventListener("click", () => storeKey("PUT", `${connectionPath()}/key`));

// ---- webhook -------------------------------------------------------------------------------
$("copy-url").addEventListener("click", async () => {
  const input = $("webhook-url");
  try { await navigator.clipboard.writeText(input.value); }
  catch (_) { input.select(); document.execCommand("copy"); }
  $("copy-note").textContent = "Copied.";
});

// Whoever holds the URL can spend this connection's share of the receiver: the tenant can replace it.
$("new-url").addEventListener("click", async () => {
  if (!confirm("Replace the webhook URL? The current one stops working at once: paste the new one into Stripe's endpoint.")) return;
  setError("new-url-error", "");
  try {
    await api("POST", `${connectionPath()}/webhook-url`);
    await refresh();
    $("copy-note").textContent = "New URL: paste it into the endpoint in Stripe now.";
  } catch (err) { setError("new-url-error", err.message); }
});

$("secret-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  setError("secret-error", "");
  try {
    await api("PUT", `${connectionPath()}/webhook-secret`, { secret: $("secret").value.trim() });
    $("secret").value = "";
    await refresh();
  } catch (err) { setError("secret-error", err.message); }
});

// ---- import --------------------------------------------------------------------------------
$("start-import").addEventListener("click", async () => {
  setError("import-error", "");
  try { await api("POST", `${connectionPath()}/import`, {}); await refresh(); }
  catch (err) { setError("import-error", err.message); }
});

function renderImport(imp) {
  const box = $("import-progress");
  if (!imp || imp.state === "none") { show(box, false); return; }
  show(box, true);
  const pct = Math.round((imp.covered || 0) * 100);
  $("overall-bar").value = imp.state === "done" ? 100 : pct;
  $("overall-text").textContent = `${imp.state === "done" ? 100 : pct}% — ${imp.objects_published} objects`;
  const bars = $("resource-bars");
  bars.innerHTML = "";
  for (const [resource, r] of Object.entries(imp.resources || {})) {
    const id = `bar-${resource}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    const p = r.done ? 100 : Math.round(r.covered * 100);
    label.textContent = `${resource.replace("_", " ")}: ${p}% (${r.objects_published})`;
    const bar = document.createElement("progress");
    bar.id = id; bar.max = 100; bar.value = p;
    bars.append(label, bar);
  }
  $("import-state").textContent = imp.state === "paused" ? `Paused: ${imp.paused_reason}${readAlone(imp)}` :
    imp.state === "done" ? "Import complete." : `Importing…${importSpeed(imp)}${readAlone(imp)}`;
}

// Pages read one at a time (slower): a page of this account stopped the process reading it.
function readAlone(imp) {
  if (!imp.read_alone_since) return "";
  const since = new Date(imp.read_alone_since).toLocaleString();
  return ` — one page at a time since ${since}, as a page of this account stopped our reader`;
}

function importSpeed(imp) {
  const parts = [];
  if (imp.objects_per_s != null) parts.push(`${Math.round(imp.objects_per_s).toLocaleString()} objects/s`);
  if (imp.eta_s != null) parts.push(`about ${duration(imp.eta_s)} left`);
  return parts.length ? ` ${parts.join(", ")}` : "";
}

function duration(seconds) {
  if (seconds < 90) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ---- check against Stripe --------------------------------------------------------------------
$("start-reconcile").addEventListener("click", async () => {
  setError("reconcile-error", "");
  try { await api("POST", `${connectionPath()}/reconcile`, {}); await refresh(); }
  catch (err) { setError("reconcile-error", err.message); }
});

function renderReconcile(check) {
  const box = $("reconcile-result");
  const latest = check && check.latest;
  show(box, !!latest || !!(check && check.running));
  if (!check) return;
  $("reconcile-summary").textContent = check.running ? "Checking against Stripe…" : !latest ? "" :
    latest.matches ? `Matches Stripe (checked ${fmtTime(latest.finished_at)}).`
                   : `Differs from Stripe (checked ${fmtTime(latest.finished_at)}): see below.`;
  const rows = $("reconcile-rows");
  rows.innerHTML = "";
  if (!latest) return;
  const add = (what, stripe, ours, differs) => {
    const tr = document.createElement("tr");
    for (const text of [what, stripe, ours, differs]) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); }
    rows.appendChild(tr);
  };
  const order = ["customers", "charges", "subscriptions", "invoices", "payment_intents"];
  for (const name of order.filter((n) => latest.resources[n])) {
    const r = latest.resources[name];
    const ids = [...r.missing_here.map((id) => `missing here: ${id}`), ...r.only_here.map((id) => `only here: ${id}`)];
    const shown = ids.slice(0, 3).join(", ") + (ids.length > 3 ? `, … (${ids.length} listed by the API)` : "");
    add(name.replace("_", " "), r.stripe, r.ours, r.matches ? "—" : shown);
  }
  for (const [currency, m] of Object.entries(latest.charges_by_currency)) {
    add(`captured of succeeded charges, ${currency.toUpperCase()} (minor units)`, m.stripe.succeeded, m.ours.succeeded,
        m.stripe.succeeded === m.ours.succeeded ? "—" : String(m.stripe.succeeded - m.ours.succeeded));
    add(`refunded, ${currency.toUpperCase()} (minor units)`, m.stripe.refunded, m.ours.refunded,
        m.stripe.refunded === m.ours.refunded ? "—" : String(m.stripe.refunded - m.ours.refunded));
  }
}

// ---- disconnect ----------------------------------------------------------------------------
$("disconnect").addEventListener("click", async () => {
  const purge = $("purge").checked;
  if (!confirm(purge ? "Disconnect and delete the imported revenue data?" : "Disconnect this Stripe account?")) return;
  setError("disconnect-error", "");
  try { await api("DELETE", `${connectionPath()}?purge=${purge}`); await refresh(); }
  catch (err) { setError("disconnect-error", err.message); }
});

// ---- the connection's view -----------------------------------------------------------------
function statusClass(status) {
  if (status === "connected") return "good";
  if (["key_invalid", "permission_missing", "disconnected"].includes(status)) return "bad";
  return "warn";
}

async function refresh() {
  let c = null;
  try { c = await api("GET", connectionPath()); }
  catch (err) { if (err.status !== 404) { setError("key-error", err.message); return; } }
  const connected = c && c.status !== "disconnected";
  show($("health"), !!c); show($("webhook-section"), connected); show($("import-section"), connected); show($("danger"), connected);
  show($("reconcile-section"), connected);
  show($("rotate"), connected); show($("connect"), !connected);
  if (!c) return;
  $("status-badge").className = `badge ${statusClass(c.status)}`;
  $("status-title").textContent = c.status_title;
  $("status-meaning").textContent = c.status_meaning;
  $("status-reason").textContent = c.status_reason || "";
  $("key-hint").textContent = c.key ? c.key.hint : "none stored";
  $("last-webhook").textContent = fmtTime(c.webhook.last_webhook_at);
  show($("over-share-term"), !!c.webhook.over_share_at); show($("over-share"), !!c.webhook.over_share_at);
  $("over-share-at").textContent = fmtTime(c.webhook.over_share_at);
  $("last-poll").textContent = fmtTime(c.last_poll_at);
  const problem = c.last_error || (["key_invalid", "permission_missing", "rate_limited"].includes(c.status) ? { message: c.status_reason || c.status_meaning, docs: c.docs } : null);
  show($("last-error"), !!problem);
  if (problem) {
    $("last-error-text").textContent = `${problem.message || ""}${problem.at ? ` (${fmtTime(problem.at)})` : ""}`;
    $("recovery-steps").innerHTML = "";
    for (const step of c.recovery_steps || []) { const li = document.createElement("li"); li.textContent = step; $("recovery-steps").appendChild(li); }
    $("docs-link").href = `/docs/operating#${c.status}`;
  }
  $("webhook-url").value = c.webhook.url;
  $("event-count").textContent = c.webhook.event_types.length;
  if (!$("event-types").children.length) {
    for (const t of c.webhook.event_types) { const li = document.createElement("li"); li.textContent = t; $("event-types").appendChild(li); }
  }
  $("secret-hints").textContent = c.webhook.secret_hints.length ? `Stored: ${c.webhook.secret_hints.join(", ")}` : "No signing secret stored yet.";
  const q = $("quick-test");
  if (c.webhook.test_delivery_received_at) { q.className = "received"; q.textContent = `Test delivery received at ${fmtTime(c.webhook.test_delivery_received_at)}.`; }
  else { q.className = "waiting"; q.textContent = "Waiting for a test delivery…"; }
  renderImport(c.import);
  renderReconcile(c.reconcile);
}

readLoginFromHash();
if (sessionStorage.getItem("tenant") && sessionStorage.getItem("token")) {
  signIn(sessionStorage.getItem("tenant"), sessionStorage.getItem("token"));
}
