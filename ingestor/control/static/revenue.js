// The Revenue page: one call to the read API (`/api/tenants/{t}/revenue`) drawn with ECharts, served by the
// web process from the project's own npm install. Every chart has its numbers as a table (for screen
// readers and checking) and a CSV download. Same sign-in as the connector page (this tab's sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
// `currency` is the one shown; `reporting` is set when every currency is shown converted into it (the operator's
// exchange rates), `native` the tenant's own currencies (from the last load without conversion).
const page = { tenant: null, token: null, mode: "test", currency: null, reporting: null, native: [], data: null, charts: {} };

async function getJson(path, method = "GET", payload = undefined) {
  const init = { method, headers: { "Authorization": `Bearer ${page.token}` } };
  if (payload !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(payload); }
  const res = await fetch(path, init);
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error((body && body.error && body.error.message) || `request failed (${res.status})`);
    err.status = res.status;
    throw err;
  }
  return body;
}

// ---- money and numbers: amounts are integer minor units; `decimals` says how many the currency has ----
function money(minor, currency) {
  if (minor === null || minor === undefined) return "—";
  const digits = page.data.decimals[currency] ?? 2;
  return new Intl.NumberFormat("en-US", { style: "currency", currency: currency.toUpperCase(),
    minimumFractionDigits: digits, maximumFractionDigits: digits }).format(Number(minor) / 10 ** digits);
}
// An amount that could not be converted (no exchange rate) is drawn as a gap, never as 0.
const major = (minor, currency) => (minor === null || minor === undefined ? null : Number(minor) / 10 ** (page.data.decimals[currency] ?? 2));
const percent = (ratio) => (ratio === null || ratio === undefined ? "—" : `${(Number(ratio) * 100).toFixed(1)}%`);
const ofCurrency = (rows) => rows.filter((r) => r.currency === page.currency);

// ---- each series: its rows for the chosen currency, table columns, and its chart --------------------
const SERIES = {
  mrr: {
    rows: () => ofCurrency(page.data.mrr),
    columns: [["month", "Month", (r) => r.month.slice(0, 7)], ["mrr", "MRR", (r) => money(r.mrr, r.currency)],
              ["subscribers", "Subscribers", (r) => r.subscribers]],
    chart: (rows) => ({
      legend: {}, tooltip: { trigger: "axis", renderMode: "richText" },
      xAxis: { type: "category", data: rows.map((r) => r.month.slice(0, 7)) },
      yAxis: [{ type: "value", name: `MRR (${page.currency.toUpperCase()})` }, { type: "value", name: "Subscribers" }],
      series: [{ name: "MRR", type: "bar", data: rows.map((r) => major(r.mrr, r.currency)) },
               { name: "Subscribers", type: "line", yAxisIndex: 1, data: rows.map((r) => r.subscribers) }],
    }),
    describe: (rows) => rows.length ? `MRR went from ${money(rows[0].mrr, page.currency)} in ${rows[0].month.slice(0, 7)} to ` +
      `${money(rows[rows.length - 1].mrr, page.currency)} in ${rows[rows.length - 1].month.slice(0, 7)}.` : "No MRR yet.",
  },
  movements: {
    rows: () => ofCurrency(page.data.movements).filter((r) => r.month === $("movement-month").value),
    get columns() { return [["month", "Month", (r) => r.month.slice(0, 7)], ["opening_mrr", "Opening", (r) => money(r.opening_mrr, r.currency)],
              ["new_mrr", "New", (r) => money(r.new_mrr, r.currency)], ["expansion_mrr", "Expansion", (r) => money(r.expansion_mrr, r.currency)],
              ["reactivation_mrr", "Reactivation", (r) => money(r.reactivation_mrr, r.currency)],
              ["contraction_mrr", "Contraction", (r) => money(r.contraction_mrr, r.currency)],
              ["churned_mrr", "Churn", (r) => money(r.churned_mrr, r.currency)],
              ...(page.reporting ? [["fx_effect", "FX effect", (r) => money(r.fx_effect, r.currency)]] : []),
              ["closing_mrr", "Closing", (r) => money(r.closing_mrr, r.currency)]]; },
    chart: (rows) => waterfall(rows[0]),
    describe: (rows) => rows.length && rows[0].closing_mrr === null ? `${rows[0].month.slice(0, 7)} is not converted: no exchange rate for ${
      rows[0].missing_rates.join(", ").toUpperCase()}.` : rows.length ? `In ${rows[0].month.slice(0, 7)} MRR went from ${money(rows[0].opening_mrr, page.currency)} to ` +
      `${money(rows[0].closing_mrr, page.currency)}: new ${money(rows[0].new_mrr, page.currency)}, churn ${money(rows[0].churned_mrr, page.currency)}` +
      (page.reporting ? `, exchange rates ${money(rows[0].fx_effect, page.currency)}.` : ".") : "No movements.",
  },
  retention: {
    rows: () => ofCurrency(page.data.retention),
    columns: [["month", "Month", (r) => r.month.slice(0, 7)], ["mrr_churn_rate", "MRR churn", (r) => percent(r.mrr_churn_rate)],
              ["subscriber_churn_rate", "Subscriber churn", (r) => percent(r.subscriber_churn_rate)],
              ["gross_mrr_retention", "Gross MRR retention", (r) => percent(r.gross_mrr_retention)],
              ["net_mrr_retention", "Net MRR retention", (r) => percent(r.net_mrr_retention)]],
    chart: (rows) => ({
      legend: {}, tooltip: { trigger: "axis", renderMode: "richText" },
      xAxis: { type: "category", data: rows.map((r) => r.month.slice(0, 7)) },
      yAxis: { type: "value", name: "%" },
      series: [["mrr_churn_rate", "MRR churn"], ["subscriber_churn_rate", "Subscriber churn"],
               ["gross_mrr_retention", "Gross MRR retention"], ["net_mrr_retention", "Net MRR retention"]].map(([key, name]) => ({
        name, type: "line", connectNulls: false,
        data: rows.map((r) => (r[key] === null ? null : Number((Number(r[key]) * 100).toFixed(2)))) })),
    }),
    describe: (rows) => rows.length ? `Net MRR retention last month: ${percent(rows[rows.length - 1].net_mrr_retention)}, ` +
      `MRR churn ${percent(rows[rows.length - 1].mrr_churn_rate)}.` : "No churn figures yet.",
  },
  daily: {
    rows: () => ofCurrency(page.data.daily),
    columns: [["day", "Day", (r) => r.day], ["gross", "Gross", (r) => money(r.gross, r.currency)],
              ["refunded", "Refunded", (r) => money(r.refunded, r.currency)], ["net", "Net", (r) => money(r.net, r.currency)]],
    chart: (rows) => ({
      tooltip: { trigger: "axis", renderMode: "richText" },
      xAxis: { type: "category", data: rows.map((r) => r.day) },
      yAxis: { type: "value", name: page.currency.toUpperCase() },
      series: [{ name: "Net revenue", type: "bar", data: rows.map((r) => major(r.net, r.currency)) }],
    }),
    describe: (rows) => rows.some((r) => r.net === null)
      ? `Net revenue over ${rows.length} days with revenue; ${rows.filter((r) => r.net === null).length} of them not converted (no exchange rate), so no total.`
      : `Net revenue over ${rows.length} days with revenue: ${money(rows.reduce((sum, r) => sum + Number(r.net), 0), page.currency)}.`,
  },
  cohorts: {
    rows: () => page.data.cohorts,
    columns: [["cohort", "Cohort", (r) => r.cohort.slice(0, 7)], ["months_since", "Months since", (r) => r.months_since],
              ["customers", "Customers", (r) => r.customers], ["retained", "Still paying", (r) => r.retained],
              ["logo_retention", "Share", (r) => percent(r.logo_retention)]],
    chart: (rows) => {
      const cohorts = [...new Set(rows.map((r) => r.cohort.slice(0, 7)))];
      const months = [...new Set(rows.map((r) => r.months_since))].sort((a, b) => a - b);
      return {
        tooltip: { renderMode: "richText" },
        xAxis: { type: "category", name: "Months since", data: months }, yAxis: { type: "category", data: cohorts },
        visualMap: { min: 0, max: 100, calculable: false, orient: "horizontal", left: "center", bottom: 0 },
        grid: { bottom: 60 },
        series: [{ type: "heatmap", label: { show: true },
                   data: rows.map((r) => [months.indexOf(r.months_since), cohorts.indexOf(r.cohort.slice(0, 7)),
                                          Math.round(Number(r.logo_retention) * 100)]) }],
      };
    },
    describe: (rows) => `${new Set(rows.map((r) => r.cohort)).size} monthly cohorts; each cell is the share still paying.`,
  },
};

function waterfall(row) {
  if (!row || row.closing_mrr === null) return { series: [] };  // not converted: nothing to draw
  const steps = [["Opening", Number(row.opening_mrr)], ["New", Number(row.new_mrr)], ["Expansion", Number(row.expansion_mrr)],
                 ["Reactivation", Number(row.reactivation_mrr)], ["Contraction", Number(row.contraction_mrr)],
                 ["Churn", Number(row.churned_mrr)], ...("fx_effect" in row ? [["FX effect", Number(row.fx_effect)]] : []),
                 ["Closing", Number(row.closing_mrr)]];
  const base = [], up = [], down = [];
  let level = 0;
  steps.forEach(([name, value], i) => {
    if (i === 0 || i === steps.length - 1) { base.push(0); up.push(major(value, row.currency)); down.push(0); level = value; return; }
    const from = value >= 0 ? level : level + value;
    base.push(major(from, row.currency)); up.push(value >= 0 ? major(value, row.currency) : 0);
    down.push(value < 0 ? major(-value, row.currency) : 0); level += value;
  });
  return {
    tooltip: { trigger: "axis", renderMode: "richText" },
    xAxis: { type: "category", data: steps.map(([name]) => name), axisLabel: { interval: 0, rotate: 35 } },
    yAxis: { type: "value", name: row.currency.toUpperCase() },
    series: [{ type: "bar", stack: "w", silent: true, itemStyle: { color: "transparent" }, data: base },
             { name: "Up", type: "bar", stack: "w", itemStyle: { color: "#0a7d38" }, data: up },
             { name: "Down", type: "bar", stack: "w", itemStyle: { color: "#b3261e" }, data: down }],
  };
}

function renderTable(name, rows) {
  const table = $(`table-${name}`);
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const [, label] of SERIES[name].columns) { const th = document.createElement("th"); th.scope = "col"; th.textContent = label; head.appendChild(th); }
  const body = table.createTBody();
  for (const r of rows) { const tr = body.insertRow(); for (const [, , cell] of SERIES[name].columns) tr.insertCell().textContent = String(cell(r)); }
}

function render() {
  const d = page.data;
  $("empty").hidden = d.currencies.length > 0;
  if (document.activeElement !== $("time-zone")) $("time-zone").value = d.time_zone;
  const gaps = d.mrr.filter((r) => r.missing_rates && r.missing_rates.length);
  $("fx-missing").hidden = !gaps.length;
  $("fx-missing").textContent = gaps.length ? `Not converted (no exchange rate loaded): ${gaps.map((r) =>
    `${r.month.slice(0, 7)} (${r.missing_rates.join(", ").toUpperCase()})`).join(", ")}. Those months show — .` : "";
  const kpi = d.kpis.find((r) => r.currency === page.currency);
  const facts = kpi && kpi.mrr === null ? [["MRR", `— (no exchange rate for ${kpi.missing_rates.join(", ").toUpperCase()})`]] : kpi ? [["MRR", money(kpi.mrr, kpi.currency)], ["ARR", money(kpi.arr, kpi.currency)], ["Subscribers", kpi.subscribers],
                       ["ARPA", money(kpi.arpa, kpi.currency)], ["Net MRR retention", percent(kpi.net_mrr_retention)],
                       ["Quick ratio", kpi.quick_ratio === null ? "— (no MRR lost)" : Number(kpi.quick_ratio).toFixed(2)],
                       ["LTV", kpi.ltv === null ? "— (no MRR lost)" : money(kpi.ltv, kpi.currency)]] : [];
  $("kpi-list").replaceChildren(...facts.flatMap(([k, v]) => { const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v); return [dt, dd]; }));
  for (const name of Object.keys(SERIES)) {
    const rows = SERIES[name].rows();
    renderTable(name, rows);
    const box = $(`chart-${name}`);
    box.setAttribute("aria-label", SERIES[name].describe(rows));
    if (window.echarts) {
      page.charts[name] = page.charts[name] || window.echarts.init(box, null, { renderer: "canvas" });
      page.charts[name].setOption({ animation: false, aria: { enabled: true }, ...SERIES[name].chart(rows) }, true);
    } else {
      box.textContent = "The chart library is not installed (run ./dev); the numbers are in the table below.";
    }
  }
}

function csv(name) {
  const cols = SERIES[name].columns;
  const quote = (v) => { const s = String(v ?? ""); return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s; };
  // Raw values (minor units, ratios), the currency in its own column: a spreadsheet gets exact numbers.
  const keys = cols.map(([key]) => key);
  const rows = SERIES[name].rows();
  // Converted rows carry the currencies that had no rate: an empty amount there is unknown, not 0.
  const header = [...keys, ...(rows.length && "currency" in rows[0] ? ["currency"] : []),
                  ...(rows.some((r) => "missing_rates" in r) ? ["missing_rates"] : [])];
  const cell = (r, k) => (k === "missing_rates" ? (r[k] || []).join(" ") : r[k]);
  const lines = [header.join(","), ...rows.map((r) => header.map((k) => quote(cell(r, k))).join(","))];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  link.download = `${name}-${page.mode}-${page.currency || "all"}.csv`;
  document.body.appendChild(link); link.click(); link.remove();
}

async function load() {
  $("load-error").textContent = "";
  try {
    const reporting = page.reporting ? `&reporting=${encodeURIComponent(page.reporting)}` : "";
    page.data = await getJson(`/api/tenants/${encodeURIComponent(page.tenant)}/revenue?mode=${page.mode}${reporting}`);
  } catch (err) { $("load-error").textContent = err.message; return; }
  if (!page.reporting) page.native = page.data.currencies;
  // The tenant's own currencies, then "All in X" for each currency the operator loaded exchange rates to.
  const select = $("currency");
  select.replaceChildren(...page.native.map((c) => new Option(c.toUpperCase(), c)),
                         ...page.data.reporting_currencies.map((c) => new Option(`All in ${c.toUpperCase()}`, `all:${c}`)));
  const keep = page.reporting ? page.reporting : page.data.currencies.includes(page.currency) ? page.currency : page.data.currencies[0] || null;
  page.currency = keep; if (keep) select.value = page.reporting ? `all:${keep}` : keep;
  const months = [...new Set(page.data.movements.map((r) => r.month))];
  $("movement-month").replaceChildren(...months.map((m) => new Option(m.slice(0, 7), m)));
  // Start at the latest month in which MRR moved at all (the current month may not have moved yet).
  const moved = ofCurrency(page.data.movements).filter((r) => Number(r.opening_mrr) !== Number(r.closing_mrr) || Number(r.new_mrr) !== 0);
  if (months.length) $("movement-month").value = moved.length ? moved[moved.length - 1].month : months[months.length - 1];
  render();
  try {
    const c = await getJson(`/api/tenants/${encodeURIComponent(page.tenant)}/connections/${page.mode}`);
    const latest = c.reconcile && c.reconcile.latest;
    $("reconcile-status").textContent = !latest ? "No check against Stripe yet (run one on the connection page)." :
      latest.matches ? `Matched Stripe when last checked (${new Date(latest.finished_at || latest.checked_at).toLocaleString()}).` :
      "The last check against Stripe found differences: see the connection page.";
  } catch (_) { $("reconcile-status").textContent = "No connection in this mode."; }
}

async function signIn(tenant, token) {
  page.tenant = tenant; page.token = token;
  try {
    const t = await getJson(`/api/tenants/${encodeURIComponent(tenant)}`);
    sessionStorage.setItem("tenant", tenant); sessionStorage.setItem("token", token);
    $("tenant-name").textContent = t.name;
    $("login").hidden = true; $("app").hidden = false;
    await load();
  } catch (err) {
    $("login-error").textContent = err.status === 401 || err.status === 404 ? "That tenant id and token do not match." : err.message;
  }
}

$("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("tenant-id").value.trim(), $("tenant-token").value.trim()); });
$("sign-out").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });
$("mode").addEventListener("change", () => { page.mode = $("mode").value; load(); });
$("currency").addEventListener("change", () => {
  const value = $("currency").value;
  const reporting = value.startsWith("all:") ? value.slice(4) : null;
  const reload = reporting !== page.reporting;
  page.reporting = reporting; page.currency = reporting || value;
  if (reload) load(); else render();
});
$("movement-month").addEventListener("change", render);
// The tenant's time zone: the days and months of every figure (the server checks the name; the list is the browser's).
if (Intl.supportedValuesOf) $("time-zones").replaceChildren(...Intl.supportedValuesOf("timeZone").map((z) => new Option(z)));
$("save-time-zone").addEventListener("click", async () => {
  const zone = $("time-zone").value.trim();
  $("time-zone-status").textContent = "";
  try {
    await getJson(`/api/tenants/${encodeURIComponent(page.tenant)}/time-zone`, "PUT", { time_zone: zone });
    $("time-zone-status").textContent = `Days and months are now ${zone}'s.`;
    await load();
  } catch (err) { $("time-zone-status").textContent = err.message; }
});
document.querySelectorAll("button.csv").forEach((b) => b.addEventListener("click", () => csv(b.dataset.series)));
window.addEventListener("resize", () => Object.values(page.charts).forEach((c) => c.resize()));
if (sessionStorage.getItem("tenant") && sessionStorage.getItem("token")) signIn(sessionStorage.getItem("tenant"), sessionStorage.getItem("token"));
