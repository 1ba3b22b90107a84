// Chosen runs overlaid, one chart per metric; or grouped by a config key: the mean of each group
// with the min/max band across its runs.
import { go } from "../app.js";
import { get } from "../lib/api.js";
import { MetricChart, PALETTE, settings, settingsBar } from "../lib/chart.js";
import { clear, h, statusBadge } from "../lib/dom.js";

export async function render(root, _params, query) {
  const ids = (query.get("runs") || "").split(",").filter(Boolean);
  const groupBy = query.get("group_by") || "";
  const project = query.get("project") || "";
  const meta = await get("/api/compare", { runs: ids.join(","), project });
  const charts = [];
  const color = new Map(meta.runs.map((r, i) => [r.id, PALETTE[i % PALETTE.length]]));
  const reroute = (change) => {
    const q = new URLSearchParams({ runs: ids.join(","), ...(project ? { project } : {}), ...(groupBy ? { group_by: groupBy } : {}), ...change });
    for (const [k, v] of [...q]) if (!v) q.delete(k);
    go("/compare", q);
  };

  // The breadcrumb names the runs' project, or each of them when they come from several.
  const projects = project ? [project] : [...new Set(meta.runs.map((r) => r.project))];
  const crumbs = [h("a", { href: "#/" }, "Projects"), " / "];
  projects.forEach((p, i) => crumbs.push(i ? ", " : "", h("a", { href: `#/p/${encodeURIComponent(p)}` }, p)));
  if (projects.length) crumbs.push(" / ");
  const found = new Set(meta.runs.map((r) => r.id));
  const missing = ids.filter((id) => !found.has(id));
  root.append(
    h("div", { class: "crumbs" }, crumbs),
    h("div", { class: "page-head" }, h("h1", {}, "Compare"), h("span", { class: "sub" }, `${meta.runs.length} run${meta.runs.length === 1 ? "" : "s"} · ${meta.metrics.length} metrics`)),
    missing.length ? h("div", { class: "error" }, `No run with the id${missing.length === 1 ? "" : "s"} ${missing.join(", ")}${project ? ` in project ${project}` : ""}.`) : null,
  );
  if (!meta.runs.length) {
    root.append(h("div", { class: "panel empty" }, "Select runs in a project's runs table, then Compare."));
    return;
  }
  root.append(h("div", { class: "panel pad", style: "margin-bottom: 12px" },
    h("div", { style: "display: flex; flex-wrap: wrap; gap: 8px 18px" }, meta.runs.map((r) =>
      h("span", { style: "display: inline-flex; align-items: center; gap: 6px" },
        h("span", { style: `width: 12px; height: 3px; border-radius: 2px; background: ${groupBy ? "var(--muted)" : color.get(r.id)}` }),
        h("a", { href: `#/run/${encodeURIComponent(r.id)}?project=${encodeURIComponent(r.project)}` }, r.name || r.id), statusBadge(r.status),
        ids.length > 1 ? h("button", { class: "ghost", title: "remove", style: "padding: 0 4px", onclick: () => { ids.splice(ids.indexOf(r.id), 1); reroute({ runs: ids.join(",") }); } }, "×") : null)))));

  const group = h("select", { id: "group-by", onchange: (e) => reroute({ group_by: e.target.value }) },
    h("option", { value: "" }, "no grouping"),
    meta.config_keys.map((k) => h("option", { value: k, selected: k === groupBy }, `group by config.${k}`)));
  const search = h("input", { type: "search", placeholder: "search metrics (regex)", style: "width: 280px" });
  const grid = h("div", { class: "chart-grid" });
  root.append(settingsBar(meta.step_metrics || []), h("div", { class: "toolbar" }, search, group,
    groupBy ? h("span", { class: "hint" }, "line: mean of the group · band: min to max across its runs") : null), grid);

  // Fewer buckets per run as runs are added: the chart joins every run's x values.
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting || e.target.__chart) continue;
      observer.unobserve(e.target);
      const metric = e.target.dataset.metric;
      charts.push(new MetricChart(e.target, {
        name: metric,
        load: async ({ x, min_step, max_step, min_x, max_x }) => {
          const res = await get("/api/compare/history", {
            runs: ids.join(","), project, key: metric, x, group_by: groupBy, samples: Math.min(settings.samples, Math.max(100, Math.floor(20000 / ids.length))), min_step, max_step, min_x, max_x,
          });
          return res.series.map((s, i) => ({ label: s.label, color: groupBy ? PALETTE[i % PALETTE.length] : color.get(s.run_ids[0]), points: s.points }));
        },
      }));
    }
  }, { rootMargin: "300px" });

  const fill = () => {
    for (const c of charts.splice(0)) c.destroy();
    observer.disconnect();
    let pattern;
    try { pattern = new RegExp(search.value, "i"); } catch (err) {
      clear(grid, h("div", { class: "error" }, `invalid regular expression: ${err.message}`));
      return;
    }
    const names = meta.metrics.filter((m) => pattern.test(m));
    if (!names.length) { clear(grid, h("div", { class: "panel empty" }, "No metric matches.")); return; }
    clear(grid, names.slice(0, 60).map((m) => {
      const card = h("div", { class: "panel chart-card", dataset: { metric: m } }, h("div", { class: "chart-head" }, h("h3", {}, m)));
      observer.observe(card);
      return card;
    }));
  };
  let t;
  search.addEventListener("input", () => { clearTimeout(t); t = setTimeout(fill, 150); });
  fill();
  const live = meta.runs.some((r) => r.status === "running");
  const timer = live ? setInterval(() => { if (!document.hidden) for (const c of charts) if (!c.zoom) c.refresh(); }, 5000) : null;
  return () => { clearInterval(timer); observer.disconnect(); for (const c of charts) c.destroy(); };
}
