// Building DOM nodes without innerHTML: every value a run carries (names, tags, config) is text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = !!value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Numbers as people read them: 4 significant digits, exponent for the very small and large.
export function fmtNum(v) {
  if (v === null || v === undefined || v === "") return "";
  if (typeof v === "string") return v; // "NaN", "Infinity", text values
  if (typeof v !== "number") return JSON.stringify(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) {
    const [mantissa, exp] = v.toExponential(3).split("e");
    return `${Number(mantissa)}e${exp.replace("+", "")}`;
  }
  return Number(v.toPrecision(5)).toString();
}

export function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number" || typeof v === "string") return fmtNum(v);
  if (typeof v === "boolean") return String(v);
  return JSON.stringify(v);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// "Nov 28, 10:00": for a card (the full time is its title).
export function fmtShortTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString("en-US", { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

export function fmtAgo(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return `${Math.max(0, Math.round(s))}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function fmtDuration(startIso, endIso) {
  if (!startIso) return "";
  const end = endIso ? new Date(endIso) : new Date();
  let s = Math.max(0, (end - new Date(startIso)) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hh = Math.floor(s / 3600); s -= hh * 3600;
  const mm = Math.floor(s / 60); s = Math.round(s - mm * 60);
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return s ? `${mm}m ${s}s` : `${mm}m`;
  return `${s}s`;
}

export function statusBadge(status) {
  return h("span", { class: `status ${status}` }, status || "unknown");
}

export function errorBox(err) {
  return h("div", { class: "error" }, err && err.message ? err.message : String(err));
}
