// One run: status and timing, config, summary, a grid of metric charts (search box; charts are
// drawn as they scroll into view), system metrics, histograms and alerts. A running run's page
// refreshes itself every few seconds.
import { get } from "../lib/api.js";
import { MetricChart, PALETTE, settings, settingsBar, unitOf } from "../lib/chart.js";
import { clear, errorBox, fmtAgo, fmtDuration, fmtShortTime, fmtValue, h, statusBadge } from "../lib/dom.js";
import { alertsTable } from "./alerts.js";
import { histogramPanel } from "./histograms.js";

// A running run's state is read every second (one small request); its charts only when it moved
// on (a new event or step), and one round at a time: a new point shows about a second after it
// reaches ClickHouse (bench/ui.py measures it) without reloading charts that did not change.
const REFRESH_MS = 1000;
const FIRST_CHARTS = 48;

function flatten(doc, prefix = "", out = []) {
  for (const [k, v] of Object.entries(doc || {})) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, name, out);
    else out.push([name, v]);
  }
  return out;
}

function kvTable(doc) {
  const rows = flatten(doc);
  if (!rows.length) return h("div", { class: "hint" }, "empty");
  return h("table", { class: "data kv" }, h("tbody", {}, rows.map(([k, v]) =>
    h("tr", {}, h("td", { title: k }, k), h("td", { class: "wrap", title: JSON.stringify(v) }, fmtValue(v))))));
}

export async function render(root, { run_id }, query) {
  // ?project= says which project the id is of (ids may repeat across projects).
  let run = await get(`/api/runs/${encodeURIComponent(run_id)}`, { project: query.get("project") });
  const project = run.project;
  const charts = [];
  const timers = [];
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting || e.target.__chart) continue;
      observer.unobserve(e.target);
      charts.push(metricChart(e.target, run_id, project, e.target.dataset.metric));
    }
  }, { rootMargin: "300px" });

  const head = h("div");
  const cards = h("div", { class: "cards" });
  const tabsBar = h("div", { class: "tabs" });
  const body = h("div");
  root.append(head, cards, tabsBar, body);

  function drawHead() {
    clear(head,
      h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / ",
        h("a", { href: `#/p/${encodeURIComponent(run.project)}` }, run.project), " / "),
      h("div", { class: "page-head" }, h("h1", {}, run.name || run.id), statusBadge(run.status),
        h("span", { class: "mono sub" }, run.id),
        h("span", { class: "spacer", style: "flex:1" }),
        h("button", { onclick: compareWith, title: "pick the runs to compare with in the runs table" }, "Compare with…")));
    const card = (label, value, title) => h("div", { class: "panel card" }, h("div", { class: "label" }, label), h("div", { class: "value", title: title || "" }, value === "" || value === null || value === undefined ? "—" : value));
    const end = run.status === "running" ? null : (run.finished_at || run.last_event_at);
    clear(cards,
      card("Started", fmtShortTime(run.started_at), run.started_at),
      card(run.status === "running" ? "Running for" : "Runtime", fmtDuration(run.started_at, end)),
      card("Last step", run.last_step === null ? "" : Number(run.last_step).toLocaleString("en-US")),
      card("Last event", fmtAgo(run.last_event_at), run.last_event_at),
      card("Exit code", run.exit_code ?? ""),
      card("Group", run.group || ""),
      card("Job type", run.job_type || ""),
      h("div", { class: "panel card" }, h("div", { class: "label" }, "Tags"), h("div", {}, (run.tags || []).length ? run.tags.map((t) => h("span", { class: "chip" }, t)) : "—")),
    );
  }

  // To the project's runs table with this run ticked: the reader picks the others there.
  function compareWith() {
    const key = `runstream.selected.${run.project}`;
    const selected = new Set(JSON.parse(sessionStorage.getItem(key) || "[]"));
    selected.add(run.id);
    sessionStorage.setItem(key, JSON.stringify([...selected]));
    location.hash = `#/p/${encodeURIComponent(run.project)}`;
  }

  const tabs = {
    charts: { label: "Charts", count: () => run.metrics.length, draw: drawCharts },
    overview: { label: "Config & summary", draw: drawOverview },
    system: { label: "System", draw: drawSystem },
    histograms: { label: "Histograms", draw: drawHistograms },
    alerts: { label: "Alerts", count: () => run.alerts.length, draw: drawAlerts },
  };
  // The tab chosen on this run (a reload keeps it); another run opens on its charts.
  const tabKey = `runstream.runtab.${run.project}.${run.id}`;
  let active = sessionStorage.getItem(tabKey) || "charts";
  if (!(active in tabs)) active = "charts";

  function drawTabs() {
    clear(tabsBar, Object.entries(tabs).map(([key, t]) => h("button", {
      class: key === active ? "active" : "",
      dataset: { tab: key },
      onclick: () => { active = key; sessionStorage.setItem(tabKey, key); show(); },
    }, t.label, t.count ? h("span", { class: "count" }, String(t.count())) : null)));
  }

  function dropCharts() {
    for (const c of charts.splice(0)) c.destroy();
    observer.disconnect();
  }

  function show() {
    dropCharts();
    drawTabs();
    clear(body);
    tabs[active].draw();
  }

  function drawCharts() {
    const search = h("input", { type: "search", placeholder: `search ${run.metrics.length} metrics (regex)`, style: "width: 320px" });
    const grid = h("div", { class: "chart-grid" });
    const more = h("div");
    let limit = FIRST_CHARTS;
    const fill = () => {
      dropCharts();
      let pattern;
      try { pattern = new RegExp(search.value, "i"); } catch (err) {
        clear(grid);
        clear(more, h("div", { class: "error" }, `invalid regular expression: ${err.message}`));
        return;
      }
      const names = run.metrics.filter((m) => pattern.test(m));
      clear(grid, names.slice(0, limit).map((m) => {
        const card = h("div", { class: "panel chart-card", dataset: { metric: m } },
          h("div", { class: "chart-head" }, h("h3", { title: m }, m)));
        observer.observe(card);
        return card;
      }));
      clear(more, names.length > limit
        ? h("div", { class: "empty" }, `${limit} of ${names.length} shown `, h("button", { onclick: () => { limit += FIRST_CHARTS * 2; fill(); } }, "Show more"))
        : names.length ? null : h("div", { class: "empty" }, run.metrics.length ? "No metric matches." : "This run has logged no metrics yet."));
    };
    let t;
    search.addEventListener("input", () => { clearTimeout(t); t = setTimeout(() => { limit = FIRST_CHARTS; fill(); }, 150); });
    body.append(settingsBar(run.step_metrics || []), h("div", { class: "toolbar" }, search), grid, more);
    fill();
  }

  function drawOverview() {
    body.append(h("div", { class: "chart-grid", style: "grid-template-columns: repeat(auto-fill, minmax(min(420px, 100%), 1fr)); align-items: start" },
      h("div", { class: "panel pad" }, h("h2", {}, "Config"), kvTable(run.config)),
      h("div", { class: "panel pad" }, h("h2", {}, "Summary"), kvTable(run.summary)),
      run.notes ? h("div", { class: "panel pad" }, h("h2", {}, "Notes"), h("div", { style: "white-space: pre-wrap" }, run.notes)) : null,
    ));
  }

  async function drawSystem() {
    // A note while it loads, and the reason when it fails: never a blank panel.
    const note = h("div", { class: "panel empty" }, "loading system metrics…");
    body.append(note);
    let series;
    try {
      ({ series } = await get(`/api/runs/${encodeURIComponent(run_id)}/system`, { project }));
    } catch (err) {
      if (note.isConnected) note.replaceWith(errorBox(err));
      return;
    }
    if (!note.isConnected) return; // another tab was chosen meanwhile
    note.remove();
    const names = Object.keys(series).sort();
    if (!names.length) { body.append(h("div", { class: "panel empty" }, "No system metrics for this run.")); return; }
    const grid = h("div", { class: "chart-grid" });
    body.append(grid);
    names.forEach((name, i) => {
      const card = h("div", { class: "panel chart-card", dataset: { metric: name } }, h("div", { class: "chart-head" }, h("h3", {}, name)));
      grid.append(card);
      charts.push(new MetricChart(card, {
        x: "time", zoomFetch: false, name, unit: unitOf(name),
        load: async () => {
          const fresh = card.__loaded ? (await get(`/api/runs/${encodeURIComponent(run_id)}/system`, { project })).series : series;
          card.__loaded = true;
          return [{ label: name, color: PALETTE[(i + 2) % PALETTE.length], points: fresh[name] }];
        },
      }));
    });
  }

  async function drawHistograms() {
    const { histograms } = await get(`/api/runs/${encodeURIComponent(run_id)}/histograms`, { project });
    const names = Object.keys(histograms).sort();
    if (!names.length) { body.append(h("div", { class: "panel empty" }, "No histograms logged by this run.")); return; }
    body.append(h("div", { class: "chart-grid" }, names.map((n) => histogramPanel(n, histograms[n], charts))));
  }

  function drawAlerts() {
    body.append(h("div", { class: "panel" }, alertsTable(run.alerts.map((a) => ({ ...a, run_status: run.status })), { showRun: false })));
  }

  drawHead();
  show();

  if (run.status === "running") {
    let busy = false;
    timers.push(setInterval(async () => {
      if (document.hidden || busy) return;
      busy = true;
      try {
        const fresh = await get(`/api/runs/${encodeURIComponent(run_id)}`, { project });
        const grew = fresh.metrics.length !== run.metrics.length;
        const moved = fresh.points_at !== run.points_at || fresh.last_event_at !== run.last_event_at
          || fresh.last_step !== run.last_step || fresh.status !== run.status;
        run = fresh;
        drawHead();
        if (grew && active === "charts") show();
        else {
          drawTabs();
          if (moved) await Promise.all(charts.filter((c) => !c.zoom).map((c) => c.refresh()));
        }
        if (run.status !== "running") timers.forEach(clearInterval);
      } catch { /* the next tick tries again */ } finally { busy = false; }
    }, REFRESH_MS));
  }

  return () => { timers.forEach(clearInterval); dropCharts(); };
}

function metricChart(card, runId, project, metric) {
  return new MetricChart(card, {
    name: metric,
    load: async ({ x, min_step, max_step, min_x, max_x }) => {
      const res = await get(`/api/runs/${encodeURIComponent(runId)}/history`, {
        key: metric, project, x, samples: settings.samples, min_step, max_step, min_x, max_x,
      });
      const meta = card.querySelector(".meta") || card.querySelector(".chart-head").appendChild(h("span", { class: "meta" }));
      const n = res.points.x.length;
      meta.textContent = res.bucketed && n >= settings.samples ? `${n.toLocaleString("en-US")} buckets · min/max band` : `${n.toLocaleString("en-US")} points`;
      // A step-metric axis: as many x positions as values of it; earlier points have no x.
      if (res.x_values !== undefined) {
        meta.textContent = `${res.x_values.toLocaleString("en-US")} ${res.x} value${res.x_values === 1 ? "" : "s"}`
          + (res.before_first_x ? ` · ${res.before_first_x.toLocaleString("en-US")} points before the first ${res.x} not shown` : "");
      }
      return [{ label: metric, points: res.points }];
    },
  });
}
