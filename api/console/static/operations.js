// Operations: every action here is one of the API's own routes (/admin/..., /v1/items,
// /v1/users, /health/ready) or the console's read-only /console/api/pipeline.

import { $, call, el, fill, fixed, guarded, notice, when } from "./api.js";


function button(label, action, attributes = {}) {
  return el("button", { type: "button", class: "small", ...attributes, onclick: () => guarded(action) }, label);
}

// ---- models and canaries ----

async function loadModels() {
  const listing = await call("GET", "/admin/models");
  $("#serving").textContent = listing.serving || "none";
  $("#serving").dataset.version = listing.serving || "";
  const metric = (v, side, name) => fixed(v.metrics?.[side]?.[name]);
  fill($("#models tbody"), [...listing.versions].reverse().map((v) => [
    v.version === listing.serving ? el("b", {}, `${v.version} (serving)`) : v.version,
    when(v.created_at), v.rows, fixed(v.auc), metric(v, "candidate", "ndcg_at_10"),
    metric(v, "production", "ndcg_at_10"), metric(v, "popularity", "ndcg_at_10"),
    el("span", {},
      button("promote", () => promote(v.version), { dataset: { promote: v.version } }),
      button("canary", () => canary(v.version), { dataset: { canary: v.version } })),
  ]), "no model yet: swipeloop train");
  const canaries = await call("GET", "/admin/models/canaries");
  fill($("#canaries tbody"), [...canaries].reverse().map((c) => [
    c.version, c.production, `${c.share} %`, when(c.started_at), c.state, c.reason,
  ]));
}

async function promote(version) {
  const done = await call("POST", `/admin/models/${encodeURIComponent(version)}/promote`, { query: { reason: "console" } });
  notice(`serving ${done.serving}`);
  await loadModels();
}

async function canary(version) {
  const started = await call("POST", `/admin/models/${encodeURIComponent(version)}/canary`, {
    query: { share: $("#canary-share").value, reason: "console" },
  });
  notice(`canary ${started.version} on ${started.share} % of users`);
  await loadModels();
}

$("#rollback").addEventListener("click", () => guarded(async () => {
  const done = await call("POST", "/admin/models/rollback", { query: { reason: "console" } });
  notice(`rolled back: serving ${done.serving}`);
  await loadModels();
}));
$("#judge-canary").addEventListener("click", () => guarded(async () => {
  const verdict = await call("POST", "/admin/models/canary/judge");
  notice(`canary: ${JSON.stringify(verdict)}`);
  await loadModels();
}));

// ---- experiments ----

async function loadExperiments() {
  const experiments = await call("GET", "/admin/experiments");
  fill($("#experiments tbody"), experiments.map((x) => [
    x.name, x.arms.map((a) => `${a.policy}:${a.share}`).join(", "), when(x.started_at),
    when(x.stopped_at), x.stopped_at ? "" : button("stop", () => stopExperiment(x.name)),
  ]));
}

async function stopExperiment(name) {
  await call("POST", `/admin/experiments/${encodeURIComponent(name)}/stop`);
  notice(`stopped ${name}`);
  await loadExperiments();
}

$("#start-experiment").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const started = await call("POST", "/admin/experiments", {
      body: { name: $("#experiment-name").value.trim(), arms: $("#experiment-arms").value.trim() },
    });
    notice(`started ${started.name}`);
    await loadExperiments();
  });
});

// ---- pipeline ----

async function loadPipeline() {
  const ready = await call("GET", "/health/ready", { accept: [503] });
  fill($("#readiness tbody"), [
    ...Object.entries(ready.checks).map(([check, ok]) => [check, el("span", { class: ok ? "ok" : "bad" }, ok ? "ok" : "not ready")]),
    ...(ready.catalog_items === undefined ? [] : [["catalog items", ready.catalog_items]]),
  ]);
  const pipeline = await call("GET", "/console/api/pipeline");
  $("#measured-by").textContent = pipeline.measured_by;
  $("#measured-by").dataset.by = pipeline.measured_by;
  $("#measured-problem").textContent = pipeline.problem ? ` — ${pipeline.problem}` : "";
  fill($("#lag tbody"), pipeline.lag.map((l) => [l.step, l.topic, l.partitions, l.messages]),
    pipeline.problem ? "not known" : pipeline.measured_by === "this process"
      ? "no flow runs in this process (set SWIPELOOP_PROMETHEUS_URL, or swipeloop flows status)"
      : "no flow reported lag");
  fill($("#freshness tbody"), pipeline.freshness.map((f) => [
    f.what.replace("swipeloop_", ""), f.arrivals, fixed(f.mean_s), f.p50_s ?? "—", f.p99_s ?? "—",
  ]));
  $("#dead-letters").replaceChildren(result(pipeline.dead_letters, "no dead letters"));
  fill($("#runs tbody"), pipeline.runs.map((r) => [
    when(r.run_at), r.version, r.promoted ? "yes" : "no", r.reason, r.rows, fixed(r.ndcg_at_10),
    fixed(r.production_ndcg_at_10), fixed(r.auc), r.skew_sampled,
    r.skew_mismatch_rate === null ? "—" : `${(100 * r.skew_mismatch_rate).toFixed(1)} %`,
  ]), "no training run yet");
}

$("#refresh-pipeline").addEventListener("click", () => guarded(loadPipeline));

// ---- items and users ----

$("#search-items").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const items = await call("GET", "/console/api/items/search", { query: { q: $("#item-query").value.trim() } });
    fill($("#items tbody"), items.map((it) => [
      it.item_id, it.creator_id, it.tags.join(", "), `${(it.duration_ms / 1000).toFixed(1)} s`,
      when(it.created_at),
      it.deleted ? "taken down" : button("take down", () => takeDown(it.item_id), { dataset: { takeDown: it.item_id } }),
    ]), "no such item");
  });
});

async function takeDown(itemId) {
  if (!window.confirm(`Take ${itemId} down? Every feed drops it.`)) return;
  await call("DELETE", `/v1/items/${encodeURIComponent(itemId)}`);
  notice(`${itemId} taken down`);
}

$("#erase-user").addEventListener("submit", (event) => {
  event.preventDefault();
  guarded(async () => {
    const userId = $("#erase-user-id").value.trim();
    if (!window.confirm(`Erase ${userId}? Their events, impressions, features and vector go for good.`)) return;
    const erased = await call("DELETE", `/v1/users/${encodeURIComponent(userId)}`);
    $("#erased").replaceChildren(el("span", { dataset: { erased: erased.user_id, rows: erased.rows_deleted } },
      `erased ${erased.user_id}: ${erased.rows_deleted} rows deleted at ${when(erased.erased_at)}`));
  });
});

// ---- named analyses ----

function result({ columns, rows }, empty = "no rows") {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  const text = (value) => (value === null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value));
  return el("table", { class: "rows" },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((value) => el("td", {}, text(value)))))));
}

// A bar chart of a numeric column against the first column, where there is one to draw.
function chart({ columns, rows }) {
  const numeric = columns.map((_, k) => k).filter((k) => k > 0 && rows.length > 1 && rows.every((r) => typeof r[k] === "number"));
  if (!numeric.length) return null;
  const picker = el("select", {}, numeric.map((k) => el("option", { value: k }, columns[k])));
  const box = el("div", { class: "chart" });
  const draw = () => {
    const k = Number(picker.value);
    const values = rows.map((r) => r[k]);
    const top = Math.max(...values.map(Math.abs), 1e-9);
    const width = 36;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("width", rows.length * width);
    svg.setAttribute("height", 140);
    rows.forEach((row, i) => {
      const height = (110 * Math.abs(values[i])) / top;
      const bar = document.createElementNS(svg.namespaceURI, "rect");
      Object.entries({ x: i * width + 4, y: 115 - height, width: width - 8, height, class: "bar-fill" }).forEach(([a, v]) => bar.setAttribute(a, v));
      const title = document.createElementNS(svg.namespaceURI, "title");
      title.textContent = `${row[0]}: ${values[i]}`;
      bar.append(title);
      const label = document.createElementNS(svg.namespaceURI, "text");
      Object.entries({ x: i * width + 4, y: 132, class: "axis" }).forEach(([a, v]) => label.setAttribute(a, v));
      label.textContent = String(row[0]).slice(-5);
      svg.append(bar, label);
    });
    box.replaceChildren(svg);
  };
  picker.addEventListener("change", draw);
  draw();
  return el("div", {}, el("label", {}, "chart ", picker), box);
}

for (const form of document.querySelectorAll("form.analysis")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(async () => {
      const query = Object.fromEntries(new FormData(form).entries());
      const answer = await call("GET", `/admin/sql/${form.dataset.name}`, { query });
      $(".result", form).replaceChildren(...[chart(answer), result(answer)].filter(Boolean));
    });
  });
}

guarded(async () => {
  await Promise.all([loadModels(), loadExperiments()]);
  await loadPipeline();
});
