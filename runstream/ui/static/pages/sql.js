// Read-only SQL (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS) through the read layer, with the
// result as a table and a quick line chart of two of its columns.
import { get } from "../lib/api.js";
import { MetricChart } from "../lib/chart.js";
import { clear, errorBox, fmtValue, h } from "../lib/dom.js";

const EXAMPLE = `-- the mean loss of every run of every project, step by step
SELECT step, avg(value) AS mean_loss, count() AS runs
FROM metrics
WHERE name = 'loss' AND step < 2000
GROUP BY step
ORDER BY step`;

export async function render(root, _params, query) {
  const initial = query.get("q") || sessionStorage.getItem("runstream.sql") || EXAMPLE;
  const editor = h("textarea", { spellcheck: "false", rows: 7 }, initial);
  const out = h("div");
  const scope = h("div", { class: "hint sql-scope" });
  const runBtn = h("button", { class: "primary", onclick: () => run() }, "Run");
  editor.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "SQL"), h("span", { class: "sub" }, "read-only · runs under the read limits · tables in docs/sql.md")),
    scope,
    h("div", { class: "panel pad sql-editor" }, editor,
      h("div", { class: "toolbar", style: "margin: 10px 0 0" }, runBtn, h("span", { class: "hint" }, "Ctrl+Enter"))),
    out,
  );
  let chart = null;

  async function run() {
    const q = editor.value;
    sessionStorage.setItem("runstream.sql", q);
    runBtn.disabled = true;
    if (chart) { chart.destroy(); chart = null; }
    clear(out, h("div", { class: "result-meta" }, "running…"));
    const started = performance.now();
    try {
      const res = await get("/api/sql", { q });
      const ms = Math.round(performance.now() - started);
      drawResult(res, ms);
    } catch (err) {
      clear(out, h("div", { style: "margin-top: 12px" }, errorBox(err)));
    } finally {
      runBtn.disabled = false;
    }
  }

  function drawResult(res, ms) {
    const numeric = res.columns.filter((_, i) => /Int|Float|Decimal|Date/.test(res.types[i]));
    const xSel = h("select", {}, res.columns.map((c) => h("option", { value: c }, c)));
    const ySel = h("select", {}, res.columns.map((c) => h("option", { value: c }, c)));
    if (numeric.length >= 2) { xSel.value = numeric[0]; ySel.value = numeric[1]; }
    const chartSlot = h("div");
    const plot = () => {
      if (chart) chart.destroy();
      const xi = res.columns.indexOf(xSel.value), yi = res.columns.indexOf(ySel.value);
      const asNum = (v, t) => (/Date/.test(t) && typeof v === "string" ? new Date(v).getTime() / 1000 : typeof v === "number" ? v : (["NaN", "Infinity", "-Infinity"].includes(v) ? v : Number(v)));
      const pairs = res.rows.map((r) => [asNum(r[xi], res.types[xi]), asNum(r[yi], res.types[yi])]).filter(([x]) => Number.isFinite(x)).sort((a, b) => a[0] - b[0]);
      const card = h("div", { class: "panel chart-card wide", style: "margin-top: 8px" }, h("div", { class: "chart-head" }, h("h3", {}, `${ySel.value} by ${xSel.value}`)));
      clear(chartSlot, card);
      chart = new MetricChart(card, {
        name: "sql", x: /Date/.test(res.types[xi]) ? "time" : xSel.value, zoomFetch: false, height: 260,
        load: async () => [{ label: ySel.value, points: { x: pairs.map((p) => p[0]), y: pairs.map((p) => p[1]) } }],
      });
    };
    xSel.addEventListener("change", plot);
    ySel.addEventListener("change", plot);
    const chartBar = res.columns.length >= 2 && res.rows.length ? h("div", { class: "toolbar", style: "margin: 12px 0 0" }, h("span", { class: "hint" }, "Chart"),
      h("label", { class: "inline" }, "x", xSel), h("label", { class: "inline" }, "y", ySel), h("button", { onclick: plot }, "Plot")) : null;
    clear(out,
      h("div", { class: "result-meta" }, `${res.rows.length.toLocaleString("en-US")} row${res.rows.length === 1 ? "" : "s"}${res.truncated ? " (the first ones: the result has more)" : ""} · ${ms} ms`),
      chartBar,
      chartSlot,
      h("div", { class: "panel", style: "margin-top: 12px" }, h("div", { class: "table-wrap", style: "max-height: 420px" }, h("table", { class: "data" },
        h("thead", {}, h("tr", {}, res.columns.map((c, i) => h("th", { title: res.types[i], class: /Int|Float|Decimal/.test(res.types[i]) ? "num" : "" }, c)))),
        h("tbody", {}, res.rows.map((r) => h("tr", {}, r.map((v, i) =>
          h("td", { class: /Int|Float|Decimal/.test(res.types[i]) ? "num" : "", title: typeof v === "string" ? v : JSON.stringify(v) }, fmtValue(v))))))))),
    );
    if (numeric.length >= 2 && res.rows.length) plot();
  }

  // Whom the console reads as: with the default user, every database of the server is readable.
  get("/api/sql/scope").then((s) => {
    const who = [h("span", {}, "Reads as user "), h("code", {}, s.user), " in database ", h("code", {}, s.database), ". "];
    clear(scope, ...who, s.other_databases.length
      ? h("span", { class: "warn" }, `This user can also read other databases of the server (${s.other_databases.join(", ")}): `
        + "give the UI the reader user (RUNSTREAM_READ_CLICKHOUSE_USER, docs/read.md) to keep the console to this one.")
      : "It sees no other database.");
  }).catch(() => {});
  run();
}
