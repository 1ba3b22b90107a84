// Histograms of a run (run.watch, runstream.Histogram): the chosen step as bars, and every
// logged step as a heat strip (one column per step, darker = more counts) to see drift.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { fmtNum, h } from "../lib/dom.js";

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

export function histogramPanel(name, items, charts) {
  const body = h("div", { class: "chart-body", style: "min-height: 0" }); // the bars: 200 px
  const label = h("span", { class: "meta" });
  const slider = h("input", { type: "range", min: 0, max: items.length - 1, step: 1, value: items.length - 1, style: "width: 100%; accent-color: var(--accent)", title: "step" });
  const strip = h("canvas", { class: "hist-strip", width: 600, height: 60 });
  // The strip's axes: steps left to right, values bottom to top.
  const lo = Math.min(...items.map((x) => x.bins[0])), hi = Math.max(...items.map((x) => x.bins[x.bins.length - 1]));
  const stripAxes = h("div", { class: "hint hist-axes" },
    h("span", {}, `step ${fmtNum(items[0].step)}`),
    h("span", {}, `values ${fmtNum(lo)} (bottom) to ${fmtNum(hi)} (top)`),
    h("span", {}, `step ${fmtNum(items[items.length - 1].step)}`));
  const card = h("div", { class: "panel chart-card", dataset: { histogram: name } },
    h("div", { class: "chart-head" }, h("h3", { title: name }, name), label), body, slider, strip, stripAxes);
  let u = null;
  const accent = cssVar("--accent") || "#3d63dd";

  const draw = (i) => {
    const item = items[i];
    label.textContent = `step ${fmtNum(item.step)} · ${i + 1} of ${items.length}`;
    const centers = item.counts.map((_, k) => (item.bins[k] + item.bins[k + 1]) / 2);
    const data = [centers, item.counts];
    if (u) { u.setData(data); return; }
    u = new uPlot({
      width: Math.max(300, card.clientWidth - 24 || 400),
      height: 200,
      legend: { show: false },
      scales: { x: { time: false } },
      axes: [
        { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid") }, values: (_, v) => v.map(fmtNum) },
        { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid") }, values: (_, v) => v.map(fmtNum), size: 50 },
      ],
      series: [{}, { label: "count", stroke: accent, fill: accent + "55", paths: uPlot.paths.bars({ size: [1, Infinity] }), points: { show: false } }],
    }, data, body);
  };

  const drawStrip = () => {
    const ctx = strip.getContext("2d");
    const w = strip.width, hgt = strip.height;
    ctx.clearRect(0, 0, w, hgt);
    const colW = w / items.length;
    items.forEach((item, i) => {
      const peak = Math.max(...item.counts, 1e-12);
      item.counts.forEach((c, k) => {
        const y0 = hgt - ((item.bins[k] - lo) / (hi - lo || 1)) * hgt;
        const y1 = hgt - ((item.bins[k + 1] - lo) / (hi - lo || 1)) * hgt;
        ctx.fillStyle = accent;
        ctx.globalAlpha = Math.sqrt(c / peak);
        ctx.fillRect(i * colW, y1, Math.ceil(colW), Math.max(1, y0 - y1));
      });
    });
    ctx.globalAlpha = 1;
  };

  slider.addEventListener("input", () => draw(Number(slider.value)));
  requestAnimationFrame(() => { draw(items.length - 1); drawStrip(); });
  charts.push({ destroy: () => { if (u) u.destroy(); }, refresh: () => {} });
  return card;
}
