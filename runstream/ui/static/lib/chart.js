// Metric charts on uPlot: one or more series of bucketed points ({x, y, min, max}), with
//  - the min/max band of each bucket, so that no spike among millions of points is hidden;
//  - EMA smoothing with the raw line kept faint;
//  - log y; x = step, time, relative time or a step metric;
//  - NaN and ±inf points drawn as markers at the edge of the plot (they have no place on a scale);
//  - zoom (drag) that asks the server for buckets of the visible step range; double-click resets;
//  - refresh() for live runs, keeping the zoom.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { num } from "./api.js";
import { fmtNum, h } from "./dom.js";

// Hues far apart in order (Tableau 10's order): the first runs of a comparison never get two
// greens or two blues.
export const PALETTE = [
  "#3d63dd", "#f76b15", "#30a46c", "#e5484d", "#8e4ec6",
  "#ad7f58", "#d6409f", "#7a7a85", "#a8a200", "#12a5c4",
  "#ffba18", "#0b3d91",
];

// A system metric's unit from its name (runstream/producers/system.py): bytes, bytes per second.
export function unitOf(name) {
  if (/bytes_per_s$/.test(name)) return "B/s";
  if (/bytes$/.test(name)) return "B";
  return "";
}

// Bytes in binary units: 7.0 GiB, 9.5 MiB/s.
export function fmtBytes(v, unit = "B") {
  if (v === null || v === undefined || !Number.isFinite(v)) return fmtNum(v);
  const units = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
  let i = 0, x = Math.abs(v);
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  const text = x >= 100 || i === 0 ? x.toFixed(0) : x.toFixed(1);
  return `${v < 0 ? "-" : ""}${text} ${units[i]}${unit}`;
}

// Axis ticks in bytes: one binary unit for the axis (of its largest tick), and as many decimals
// as the step between ticks needs (1.10, 1.12, 1.14 GiB rather than 1.1 GiB four times).
function fmtBytesTicks(vals, incr, unit) {
  const top = Math.max(...vals.map((v) => Math.abs(v ?? 0)));
  let i = 0;
  while (top >= 1024 ** (i + 1) && i < 5) i++;
  const scale = 1024 ** i;
  const step = incr > 0 ? incr / scale : 1;
  const decimals = Math.min(4, Math.max(0, Math.ceil(-Math.log10(step))));
  return vals.map((v) => (v === null || v === undefined ? "" : `${(v / scale).toFixed(decimals)} ${["", "Ki", "Mi", "Gi", "Ti", "Pi"][i]}${unit}`));
}

// Time ticks in UTC and 24 hours (as the legend), the same format on every chart of a step size.
function fmtTimeTicks(vals, incr) {
  return vals.map((v) => {
    if (v === null || v === undefined) return "";
    const iso = new Date(v * 1000).toISOString();
    if (incr >= 86400) return iso.slice(5, 10);
    if (incr >= 60) return iso.slice(11, 16);
    return iso.slice(11, 19);
  });
}

// --- shared settings (the toolbar of a page changes them; every chart listens) -----------------
const STORE = "runstream.chart";
const defaults = { x: "step", log: false, smoothing: 0, samples: 1000 };
export const settings = { ...defaults, ...safeLoad() };
const listeners = new Set();

function safeLoad() {
  try { return JSON.parse(localStorage.getItem(STORE) || "{}"); } catch { return {}; }
}

export function setSettings(change) {
  Object.assign(settings, change);
  try { localStorage.setItem(STORE, JSON.stringify(settings)); } catch { /* private mode */ }
  for (const fn of listeners) fn(change);
}

export function onSettings(fn) { listeners.add(fn); return () => listeners.delete(fn); }

// Every live chart, for the browser tests and for pages that tear down.
export const registry = new Set();
window.__runstreamCharts = registry;

// --- maths ----------------------------------------------------------------------------------
export function ema(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = 0, n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) { out[i] = null; continue; }
    last = last * weight + (1 - weight) * v;
    n++;
    out[i] = last / (1 - Math.pow(weight, n)); // debiased, as TensorBoard does
  }
  return out;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  const sign = s < 0 ? "-" : "";
  s = Math.abs(s);
  if (s < 60) return `${sign}${Number(s.toFixed(s < 10 ? 1 : 0))}s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)}m${Math.round(s % 60) ? ` ${Math.round(s % 60)}s` : ""}`;
  const hh = Math.floor(s / 3600), mm = Math.round((s % 3600) / 60);
  return `${sign}${hh}h${mm ? ` ${mm}m` : ""}`;
}

// Series of {label, color, points} on one x axis: uPlot's columns and the series options.
export function build(input, opts) {
  const { log, smoothing, x } = opts;
  const xs = new Set();
  const xsOf = (s) => [...s.points.x, ...((s.points.nonfinite || {}).x || [])];
  for (const s of input) for (const v of xsOf(s)) { const n = num(v); if (n !== null && Number.isFinite(n)) xs.add(n); }
  const xAxis = Float64Array.from(xs).sort();
  const index = new Map();
  xAxis.forEach((v, i) => index.set(v, i));
  const columns = [Array.from(xAxis)];
  const series = [{ label: labelOfX(x), value: (u, v) => fmtX(v, x) }];
  const bands = [];
  const hidden = []; // series indexes whose legend rows are noise (bands, raw lines)
  const nonFinite = new Array(xAxis.length).fill(null); // "NaN" | "Infinity" | "-Infinity"
  let lo = Infinity, hi = -Infinity;
  const usable = (v) => v !== null && Number.isFinite(v) && (!log || v > 0);

  input.forEach((s, k) => {
    // The first series takes the theme's accent (brighter on the dark background).
    const color = s.color || (k === 0 ? cssVar("--accent") : PALETTE[k % PALETTE.length]);
    const col = () => new Array(xAxis.length).fill(null);
    const y = col(), mn = col(), mx = col();
    const p = s.points;
    const hasBand = Array.isArray(p.min) && Array.isArray(p.max);
    for (let i = 0; i < p.x.length; i++) {
      const xi = index.get(num(p.x[i]));
      if (xi === undefined) continue;
      const v = num(p.y[i]);
      if (v !== null && !Number.isFinite(v)) nonFinite[xi] = p.y[i];
      y[xi] = usable(v) ? v : null;
      if (hasBand) {
        const a = num(p.min[i]), b = num(p.max[i]);
        mn[xi] = usable(a) ? a : null;
        mx[xi] = usable(b) ? b : null;
        if (b === Infinity || a === -Infinity) nonFinite[xi] = b === Infinity ? "Infinity" : "-Infinity";
      }
      for (const v2 of [y[xi], mn[xi], mx[xi]]) if (v2 !== null) { lo = Math.min(lo, v2); hi = Math.max(hi, v2); }
    }
    // NaN and ±inf points inside buckets (the server lists them): markers at their own x.
    const nf = p.nonfinite || { x: [], y: [] };
    for (let i = 0; i < nf.x.length; i++) {
      const xi = index.get(num(nf.x[i]));
      if (xi !== undefined) nonFinite[xi] = nf.y[i];
    }
    const smoothed = smoothing > 0 ? ema(y, smoothing) : null;
    const width = input.length > 8 ? 1.25 : 1.6;
    if (hasBand) {
      // Fainter under a smoothed line, which is then what the eye should follow.
      const edge = smoothing > 0 ? 0.16 : input.length > 4 ? 0.25 : 0.45;
      const maxIdx = columns.length;
      columns.push(mx, mn);
      series.push(
        // The edges are drawn too, thin: a one-bucket spike is a sliver of band, but a line.
        { label: `${s.label} max`, stroke: alpha(color, edge), width: 1, points: { show: false }, spanGaps: true, value: (u, v) => fmtNum(v) },
        { label: `${s.label} min`, stroke: alpha(color, edge), width: 1, points: { show: false }, spanGaps: true, value: (u, v) => fmtNum(v) },
      );
      hidden.push(maxIdx, maxIdx + 1);
      bands.push({ series: [maxIdx, maxIdx + 1], fill: alpha(color, smoothing > 0 || input.length > 4 ? 0.07 : 0.16) });
    }
    columns.push(y);
    series.push({
      label: smoothed ? `${s.label} (raw)` : s.label,
      stroke: smoothed ? alpha(color, 0.22) : color,
      width: smoothed ? 1 : width,
      spanGaps: true,
      points: { show: false },
      value: (u, v) => fmtNum(v),
    });
    if (smoothed) {
      hidden.push(columns.length - 1);
      columns.push(smoothed);
      series.push({ label: s.label, stroke: color, width, spanGaps: true, points: { show: false }, value: (u, v) => fmtNum(v) });
    }
  });

  // NaN and infinities: markers at the top (NaN, +inf) or bottom (-inf) of the finite range.
  if (nonFinite.some((v) => v !== null)) {
    if (!Number.isFinite(lo)) { lo = log ? 1 : 0; hi = log ? 10 : 1; }
    const top = hi, bottom = lo;
    columns.push(nonFinite.map((v) => (v === null ? null : v === "-Infinity" ? bottom : top)));
    const bad = cssVar("--bad");
    series.push({
      label: "NaN / inf",
      stroke: bad,
      fill: bad,
      width: 0,
      paths: () => null,
      points: { show: true, size: 8, width: 1.5, stroke: bad, fill: bad, space: 0 },
      value: (u, v, si, i) => (i === null || i === undefined ? "" : nonFinite[i] || ""),
    });
  }
  return { columns, series, bands, hidden, nonFinite };
}

// The y axis as wide as its longest label (uPlot's axis-size recipe).
function axisWidth(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let size = axis.ticks.size + axis.gap;
  const longest = (values || []).reduce((acc, v) => (v.length > acc.length ? v : acc), "");
  if (longest) { u.ctx.font = axis.font[0]; size += u.ctx.measureText(longest).width / devicePixelRatio; }
  return Math.ceil(size) + 4;
}

function labelOfX(x) {
  return { step: "step", time: "time", relative_time: "relative time" }[x] || x;
}

function fmtX(v, x) {
  if (v === null || v === undefined) return "";
  if (x === "time") return new Date(v * 1000).toISOString().replace("T", " ").slice(0, 19);
  if (x === "relative_time") return fmtSeconds(v);
  return fmtNum(v);
}

// On a log axis over several decades only the powers of ten get a line and a label (uPlot puts
// one at every 1..9 multiple, a dense grid); within a decade, every split.
function decades(u, splits) {
  const major = splits.map((v) => (v > 0 && Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9 ? v : null));
  return major.filter((v) => v !== null).length >= 2 ? major : splits;
}

// --- the chart ------------------------------------------------------------------------------
// load({min_step, max_step}) -> Promise<[{label, color?, points: {x, y, min?, max?}}]>
export class MetricChart {
  constructor(container, { load, height = 230, x = null, zoomFetch = true, name = "", unit = "" }) {
    this.unit = unit; // "B" or "B/s": values in binary units
    this.container = container;
    this.load = load;
    this.height = height;
    this.fixedX = x !== null; // system metrics: always time
    this.x = x ?? settings.x;
    this.zoomFetch = zoomFetch;
    this.name = name;
    this.zoom = null; // {min, max} in x units while zoomed
    this.u = null;
    this.input = null;
    this.version = 0;
    this.note = h("div", { class: "chart-note" }, "loading…");
    this.body = h("div", { class: "chart-body" });
    container.append(this.body, this.note);
    container.__chart = this;
    registry.add(this);
    this.resize = new ResizeObserver(() => {
      if (this.u) this.u.setSize({ width: this.width(), height: this.height });
    });
    this.resize.observe(container);
    this.unlisten = onSettings((change) => {
      if ("x" in change) { if (!this.fixedX) { this.x = settings.x; this.zoom = null; this.reload(); } }
      else if ("samples" in change) this.reload();
      else this.redraw();
    });
    this.reload();
  }

  width() { return Math.max(200, this.container.clientWidth - 24); }

  // Data for the drawn chart, for tests: the uPlot columns and the series labels.
  drawn() {
    if (!this.u) return null;
    return { labels: this.u.series.map((s) => s.label), data: this.u.data.map((c) => Array.from(c)) };
  }

  async reload() {
    const version = ++this.version;
    // The visible range, for the server to cut into buckets: steps, or (time, a step metric)
    // the axis's own values, which the server turns into the steps they cover.
    let range = {};
    if (this.zoom && this.zoomFetch) {
      range = this.x === "step"
        ? { min_step: Math.floor(this.zoom.min), max_step: Math.ceil(this.zoom.max) }
        : { min_x: this.zoom.min, max_x: this.zoom.max };
    }
    try {
      const input = await this.load({ x: this.x, ...range });
      if (version !== this.version) return;
      this.input = input;
      this.redraw();
    } catch (err) {
      if (version !== this.version) return;
      this.note.textContent = err.message || String(err);
      this.note.style.display = "flex";
    }
  }

  refresh() { return this.reload(); }

  redraw() {
    if (!this.input) return;
    const built = build(this.input, { log: settings.log, smoothing: settings.smoothing, x: this.x });
    const empty = built.columns[0].length === 0;
    this.note.textContent = empty ? "no points yet" : "";
    this.note.style.display = empty ? "flex" : "none";
    const shape = JSON.stringify([built.series.map((s) => s.label), settings.log, this.x]);
    if (this.u && this.shape === shape) {
      this.u.setData(built.columns, !this.zoom);
      if (this.zoom) this.u.setScale("x", this.zoom);
      return;
    }
    this.shape = shape;
    if (this.u) this.u.destroy();
    const grid = { stroke: cssVar("--grid"), width: 1 };
    const axisStroke = cssVar("--muted");
    const font = "11px system-ui, sans-serif";
    const time = this.x === "time";
    const unit = this.unit;
    const fmtY = unit ? (v) => fmtBytes(v, unit) : fmtNum;
    if (unit) for (const s of built.series.slice(1)) if (s.value) s.value = (u, v) => fmtY(v);
    const opts = {
      width: this.width(),
      height: this.height,
      series: built.series,
      bands: built.bands,
      scales: {
        x: { time },
        y: settings.log ? { distr: 3 } : { auto: true },
      },
      axes: [
        {
          stroke: axisStroke, grid, ticks: grid, font, size: 32,
          values: this.x === "relative_time" ? (u, vals) => vals.map(fmtSeconds)
            : time ? (u, vals, _i, _space, incr) => fmtTimeTicks(vals, incr) : (u, vals) => vals.map(fmtNum),
        },
        { stroke: axisStroke, grid, ticks: grid, font, size: axisWidth, values: unit ? (u, vals, _i, _space, incr) => fmtBytesTicks(vals, incr, unit) : (u, vals) => vals.map(fmtY), filter: settings.log ? decades : undefined },
      ],
      cursor: {
        // The chart applies a drag's zoom itself (setSelect below): uPlot also sets the x scale
        // on resizes and new data, which must not count as the reader zooming.
        drag: { x: true, y: false, setScale: false },
        bind: { dblclick: () => null },
        points: { size: 6 },
      },
      legend: { live: true },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 2) return;
          const min = u.posToVal(u.select.left, "x");
          const max = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          this.zoomTo(min, max);
        }],
      },
    };
    this.u = new uPlot(opts, built.columns, this.body);
    if (this.zoom) this.u.setScale("x", this.zoom);
    // Legend rows of the band edges and of the raw line under a smoothed one: noise.
    const rows = this.u.root.querySelectorAll(".u-legend .u-series");
    for (const i of built.hidden) if (rows[i]) rows[i].style.display = "none";
    this.u.over.addEventListener("dblclick", () => this.resetZoom());
  }

  // Zoom to x in [min, max]: at once on what is loaded, then with the buckets of that range
  // from the server.
  zoomTo(min, max) {
    if (!(max > min)) return;
    this.zoom = { min, max };
    if (this.u) this.u.setScale("x", this.zoom);
    if (this.zoomFetch) {
      clearTimeout(this.zoomTimer);
      this.zoomTimer = setTimeout(() => this.reload(), 150);
    }
  }

  resetZoom() {
    this.zoom = null;
    if (this.zoomFetch) this.reload();
    else if (this.u) this.u.setData(this.u.data, true);
  }

  destroy() {
    this.version++;
    clearTimeout(this.zoomTimer);
    this.resize.disconnect();
    this.unlisten();
    registry.delete(this);
    if (this.u) this.u.destroy();
    this.u = null;
  }
}

// The toolbar that sets the shared chart settings: x axis, log y, smoothing.
export function settingsBar(xChoices = []) {
  const xSelect = h("select", {
    onchange: (e) => setSettings({ x: e.target.value }),
  },
  ["step", "time", "relative_time", ...xChoices].map((v) =>
    h("option", { value: v, selected: v === settings.x }, labelOfX(v))));
  if (![...xSelect.options].some((o) => o.value === settings.x)) { xSelect.value = "step"; settings.x = "step"; }
  const smoothValue = h("span", { class: "value" }, settings.smoothing.toFixed(2));
  const smooth = h("input", {
    type: "range", min: 0, max: 0.99, step: 0.01, value: settings.smoothing,
    oninput: (e) => { smoothValue.textContent = Number(e.target.value).toFixed(2); setSettings({ smoothing: Number(e.target.value) }); },
  });
  const log = h("input", { type: "checkbox", checked: settings.log, onchange: (e) => setSettings({ log: e.target.checked }) });
  return h("div", { class: "settings-bar panel" },
    h("label", { class: "inline" }, "x axis", xSelect),
    h("label", { class: "inline" }, log, "log y"),
    h("label", { class: "inline" }, "smoothing", smooth, smoothValue),
    h("span", { class: "hint" }, "drag to zoom (fetches the visible range) · double-click to reset"),
  );
}
