// The runs table of a project: filter (the filter language of the Python API), sort, paging by
// ClickHouse, chosen config and summary columns, live status, selection for compare.
import { go } from "../app.js";
import { get } from "../lib/api.js";
import { clear, errorBox, fmtAgo, fmtDuration, fmtTime, fmtValue, h, statusBadge } from "../lib/dom.js";

const REFRESH_MS = 5000;

function stored(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; }
}

function configValue(config, dotted) {
  if (config && dotted in config) return config[dotted];
  let v = config;
  for (const part of dotted.split(".")) {
    if (v === null || typeof v !== "object" || !(part in v)) return undefined;
    v = v[part];
  }
  return v;
}

export async function render(root, { project }, query) {
  const colsKey = `runstream.columns.${project}`;
  const selKey = `runstream.selected.${project}`;
  const state = {
    where: query.get("where") || "",
    order: query.getAll("order").filter(Boolean),
    offset: Number(query.get("offset") || 0),
    limit: Number(query.get("limit") || stored("runstream.pagesize", 50)),
    columns: stored(colsKey, null),
    // Survives paging and filtering (sessionStorage), not a new browser session.
    selected: new Set(JSON.parse(sessionStorage.getItem(selKey) || "[]")),
  };
  // A typed ?limit= that is no whole number falls back to the default instead of an error.
  if (!Number.isInteger(state.limit) || state.limit < 1) state.limit = 50;
  if (!Number.isInteger(state.offset) || state.offset < 0) state.offset = 0;
  let page = null;
  let headDrawn = false;

  const save = () => sessionStorage.setItem(selKey, JSON.stringify([...state.selected]));
  const navigate = (change) => {
    const next = { ...state, ...change };
    const q = new URLSearchParams();
    if (next.where) q.set("where", next.where);
    for (const name of next.order) q.append("order", name);
    if (next.offset) q.set("offset", String(next.offset));
    if (next.limit !== 50) q.set("limit", String(next.limit));
    go(`/p/${encodeURIComponent(project)}`, q);
  };

  const filter = h("input", {
    type: "search", value: state.where, spellcheck: "false",
    placeholder: 'filter:  config.lr > 1e-3 and summary["val/loss"] < 0.2 and "baseline" in tags', title: "the filter language (?); press / to come here",
    onkeydown: (e) => { if (e.key === "Enter") navigate({ where: filter.value.trim(), offset: 0 }); },
  });
  const compareBtn = h("button", {
    class: "primary", disabled: true,
    onclick: () => go("/compare", new URLSearchParams({ runs: [...state.selected].join(","), project })),
  });
  const clearSel = h("button", { class: "ghost", onclick: () => { state.selected.clear(); save(); drawBody(); } }, "clear");
  compareBtn.textContent = "Compare";
  clearSel.style.display = "none";
  const chooser = h("details", { class: "menu" }, h("summary", { class: "btn" }, "Columns"), h("div", { class: "menu-body" }));
  // The filter language in brief (docs/read.md, "Filters", has all of it).
  const example = (text, what) => h("div", { style: "margin: 6px 0" }, h("code", {}, text), h("div", { class: "hint" }, what));
  const help = h("details", { class: "menu" }, h("summary", { class: "btn", title: "filter syntax" }, "?"),
    h("div", { class: "menu-body", style: "width: 420px" },
      h("h3", {}, "Filter"),
      example('config.lr > 1e-3 and summary["val/loss"] < 0.2', "config and summary values; brackets for keys with odd characters"),
      example('"baseline" in tags or group == "sweep-3"', "tags, group, name, status, job_type, run_id"),
      example('status in ["failed", "crashed"]', "one of several values"),
      example('name =~ "^bert-\\d+$"', "a regular expression (RE2)"),
      example('started_at > "2026-01-31" and finished_at == null', "times in UTC; null: still running"),
      h("div", { class: "hint" }, "and, or, not, ( ); every value is a bound parameter: a filter can only select.")));
  const errorSlot = h("div");
  const table = h("table", { class: "data" });
  const pager = h("div", { class: "pager" });
  const count = h("span", { class: "sub" });

  root.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / "),
    h("div", { class: "page-head" }, h("h1", {}, project), count),
    h("div", { class: "toolbar" },
      h("div", { class: "grow" }, filter),
      h("button", { onclick: () => navigate({ where: filter.value.trim(), offset: 0 }) }, "Filter"),
      state.where ? h("button", { class: "ghost", onclick: () => navigate({ where: "", offset: 0 }) }, "reset") : null,
      help,
      chooser,
      clearSel,
      compareBtn,
    ),
    errorSlot,
    h("div", { class: "panel" }, h("div", { class: "table-wrap" }, table), pager),
  );

  function chosen() {
    if (state.columns) return state.columns;
    // First visit: the config keys that tell the page's runs apart best (most distinct values;
    // a key every run shares, or a seed per run, says less), and up to 4 summary metrics.
    const n = page.runs.length;
    const distinct = (k) => new Set(page.runs.map((r) => JSON.stringify(configValue(r.config, k)))).size;
    const cfg = page.config_keys
      .map((k) => [k, distinct(k)])
      .filter(([, d]) => d > 1)
      // A key with a value per run (a seed, a path) ranks below one that groups runs.
      .sort((a, b) => ((a[1] === n) - (b[1] === n)) || (b[1] - a[1]) || a[0].localeCompare(b[0]))
      .slice(0, 3).map(([k]) => k);
    const picked = [...cfg.map((k) => `config.${k}`), ...page.summary_keys.slice(0, 4).map((k) => `summary.${k}`)];
    // Kept, so that filtering or paging does not change the columns under the reader's eyes.
    if (page.runs.length) { state.columns = picked; localStorage.setItem(colsKey, JSON.stringify(picked)); }
    return picked;
  }

  function drawChooser() {
    const body = chooser.querySelector(".menu-body");
    const cols = new Set(chosen());
    const toggle = (name, on) => {
      const list = chosen().filter((c) => c !== name);
      if (on) list.push(name);
      state.columns = list;
      localStorage.setItem(colsKey, JSON.stringify(list));
      drawHead(); drawBody();
    };
    const group = (title, prefix, keys) => [
      h("h3", {}, title),
      keys.length ? keys.map((k) => h("label", {},
        h("input", { type: "checkbox", checked: cols.has(`${prefix}.${k}`), onchange: (e) => toggle(`${prefix}.${k}`, e.target.checked) }),
        k)) : h("div", { class: "hint" }, "none on this page"),
    ];
    clear(body, group("Config", "config", page.config_keys), group("Summary", "summary", page.summary_keys));
  }

  // A column as a name of the filter language: dotted when the key allows it, else brackets
  // (summary["acc@1"]), which the server's order_by reads like a filter.
  function sortName(col) {
    const m = col.match(/^(config|summary)\.(.*)$/);
    if (!m || /^[A-Za-z0-9_/-]+$/.test(m[2]) || (m[1] === "config" && /^[A-Za-z0-9_/.-]+$/.test(m[2]))) return col;
    return `${m[1]}[${JSON.stringify(m[2])}]`;
  }

  function orderOf(col) {
    const name = sortName(col);
    if (state.order.includes(name)) return "asc";
    if (state.order.includes(`-${name}`)) return "desc";
    return null;
  }

  function sortBy(col) {
    const now = orderOf(col);
    const name = sortName(col);
    const order = now === "desc" ? [name] : now === "asc" ? [] : [`-${name}`];
    navigate({ order, offset: 0 });
  }

  function th(label, col, cls = "") {
    const o = col ? orderOf(col) : null;
    return h("th", { class: `${col ? "sortable" : ""} ${cls}`, onclick: col ? () => sortBy(col) : null, title: col || "" },
      label, o ? h("span", { class: "arrow" }, o === "desc" ? "↓" : "↑") : null);
  }

  function drawHead() {
    const allBox = h("input", {
      type: "checkbox",
      checked: page.runs.length > 0 && page.runs.every((r) => state.selected.has(r.id)),
      onchange: (e) => { for (const r of page.runs) e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id); save(); drawBody(); },
    });
    const extra = chosen().map((c) => {
      const [doc, ...rest] = c.split(".");
      return th(h("span", {}, h("span", { class: "hint" }, `${doc}.`), rest.join(".")), c);
    });
    // The box and the name stay in view while the table scrolls sideways; the chosen columns
    // come right after them, before the fixed ones.
    table.replaceChildren(h("thead", {}, h("tr", {},
      h("th", { class: "stick0" }, allBox),
      th("Name", "name", "stick1"), th("Status", "status"),
      extra,
      th("Group", "group"), th("Tags"), th("Started", "started_at"), th("Runtime"),
      th("Step", "last_step", "num"))), h("tbody"));
  }

  function drawBody(failed = false) {
    const tbody = table.querySelector("tbody");
    const cols = chosen();
    clear(tbody, page.runs.length ? page.runs.map((r) => {
      const box = h("input", {
        type: "checkbox", checked: state.selected.has(r.id),
        onchange: (e) => { e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id); save(); drawBody(); },
      });
      return h("tr", { class: state.selected.has(r.id) ? "selected" : "", dataset: { run: r.id } },
        h("td", { class: "stick0" }, box),
        h("td", { class: "stick1" }, h("a", { href: `#/run/${encodeURIComponent(r.id)}?project=${encodeURIComponent(r.project)}`, title: r.id }, r.name || r.id)),
        h("td", {}, statusBadge(r.status)),
        cols.map((c) => {
          const [doc, ...rest] = c.split(".");
          const key = rest.join(".");
          const v = doc === "config" ? configValue(r.config, key) : (r.summary || {})[key];
          const numeric = typeof v === "number" || v === "NaN" || v === "Infinity" || v === "-Infinity";
          return h("td", { class: numeric ? "num" : "mono", title: v === undefined ? "" : JSON.stringify(v) }, v === undefined ? "" : fmtValue(v));
        }),
        h("td", {}, r.group || ""),
        h("td", {}, (r.tags || []).map((t) => h("span", { class: "chip" }, t))),
        h("td", { title: fmtAgo(r.started_at) }, fmtTime(r.started_at)),
        h("td", {}, fmtDuration(r.started_at, r.status === "running" ? null : (r.finished_at || r.last_event_at))),
        h("td", { class: "num", dataset: { col: "last_step" } }, r.last_step ?? ""),
      );
    }) : h("tr", {}, h("td", { colspan: 8 + cols.length, class: "empty" }, failed ? "Runs could not be read: see above." : state.where ? "No run matches the filter." : "No runs.")));
    const n = state.selected.size;
    compareBtn.textContent = n ? `Compare (${n})` : "Compare";
    compareBtn.disabled = n < 1;
    clearSel.style.display = n ? "" : "none";
    const allBox = table.querySelector("thead input");
    if (allBox) allBox.checked = page.runs.length > 0 && page.runs.every((r) => state.selected.has(r.id));
  }

  function drawPager() {
    const from = page.total ? page.offset + 1 : 0;
    const to = page.offset + page.runs.length;
    const size = h("select", { onchange: (e) => { localStorage.setItem("runstream.pagesize", e.target.value); navigate({ limit: Number(e.target.value), offset: 0 }); } },
      [...new Set([25, 50, 100, 250, 500, state.limit])].sort((a, b) => a - b).map((n) => h("option", { value: n, selected: n === state.limit }, `${n} / page`)));
    clear(pager,
      h("span", {}, `${from.toLocaleString("en-US")}–${to.toLocaleString("en-US")} of ${page.total.toLocaleString("en-US")}`),
      h("span", { class: "spacer" }),
      size,
      h("button", { disabled: page.offset === 0, onclick: () => navigate({ offset: 0 }), title: "first page" }, "«"),
      h("button", { disabled: page.offset === 0, onclick: () => navigate({ offset: Math.max(0, page.offset - state.limit) }) }, "← Prev"),
      h("span", {}, `page ${Math.floor(page.offset / state.limit) + 1} of ${Math.max(1, Math.ceil(page.total / state.limit)).toLocaleString("en-US")}`),
      h("button", { disabled: to >= page.total, onclick: () => navigate({ offset: page.offset + state.limit }) }, "Next →"),
      h("button", { disabled: to >= page.total, onclick: () => navigate({ offset: Math.max(0, (Math.ceil(page.total / state.limit) - 1) * state.limit) }), title: "last page" }, "»"),
    );
    count.textContent = `${page.total.toLocaleString("en-US")} run${page.total === 1 ? "" : "s"}${state.where ? " match" : ""}`;
  }

  async function load(first) {
    try {
      page = await get("/api/runs", {
        project, where: state.where, order_by: state.order, limit: state.limit, offset: state.offset,
      });
      state.limit = page.limit; // the server's (it caps a page)
      // Past the end (an old link, a typed offset): go to the last page instead of an empty one.
      if (page.total > 0 && page.offset >= page.total) {
        const last = (Math.ceil(page.total / state.limit) - 1) * state.limit;
        navigate({ offset: Math.max(0, last) });
        return;
      }
      clear(errorSlot);
      // No runs and no filter: a project that does not exist (a typo in the address) says so.
      if (first && page.total === 0 && !state.where) {
        const known = await get("/api/projects").then((b) => b.projects.map((p) => p.project), () => null);
        if (known && !known.includes(project)) {
          clear(errorSlot, errorBox(`no project named ${JSON.stringify(project)}`),
            h("p", {}, h("a", { href: "#/" }, "← all projects")));
        }
      }
      if (!headDrawn) { drawHead(); drawChooser(); headDrawn = true; }
      drawBody();
      drawPager();
    } catch (err) {
      if (!first) return;
      // The headers stay, the body says why it is empty; the toolbar's "reset" undoes a filter.
      page = { runs: [], total: 0, offset: 0, config_keys: [], summary_keys: [] };
      const undo = [];
      if (state.order.length) undo.push(h("button", { class: "ghost", onclick: () => navigate({ order: [], offset: 0 }) }, "reset sort"));
      clear(errorSlot, errorBox(err), undo.length ? h("div", { class: "toolbar" }, undo) : null);
      drawHead(); drawBody(true); clear(pager); count.textContent = "";
      chooser.style.display = "none";
    }
  }

  // "/" jumps to the filter, as in most tools with a search box.
  const slash = (e) => {
    if (e.key === "/" && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
      e.preventDefault();
      filter.focus();
    }
  };
  document.addEventListener("keydown", slash);

  await load(true);
  // Live status: the page's runs are read again every few seconds (a cheap, paged query).
  const timer = setInterval(() => { if (!document.hidden) load(false); }, REFRESH_MS);
  return () => { clearInterval(timer); document.removeEventListener("keydown", slash); };
}
