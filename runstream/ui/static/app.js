// The single page: a hash router over the pages in pages/. Each page is
// `export async function render(root, params, query) -> cleanup?`.
import { errorBox, clear, h } from "./lib/dom.js";

const routes = [
  [/^\/?$/, "projects", () => import("./pages/projects.js")],
  [/^\/p\/([^/]+)$/, "projects", () => import("./pages/runs.js"), ["project"]],
  [/^\/run\/([^/]+)$/, "projects", () => import("./pages/run.js"), ["run_id"]],
  [/^\/compare$/, "projects", () => import("./pages/compare.js")],
  [/^\/alerts$/, "alerts", () => import("./pages/alerts.js")],
  [/^\/sql$/, "sql", () => import("./pages/sql.js")],
];

let cleanup = null;
let current = 0;

async function route() {
  const root = document.getElementById("app");
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  const query = new URLSearchParams(search);
  const version = ++current;
  if (typeof cleanup === "function") { try { cleanup(); } catch { /* the page is gone */ } }
  cleanup = null;
  for (const [pattern, nav, load, names = []] of routes) {
    const m = path.match(pattern);
    if (!m) continue;
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1])]));
    try {
      const page = await load();
      if (version !== current) return;
      // Each page renders into a node of its own: a render still loading when the reader moves
      // on writes into a node that is no longer in the document.
      const mount = document.createElement("div");
      clear(root, mount);
      const done = await page.render(mount, params, query);
      // Navigated away while this page was loading: it must not keep timers or charts.
      if (version !== current) { if (typeof done === "function") done(); return; }
      cleanup = done;
    } catch (err) {
      // A page that could not load says why and leads back (a 404: no such run).
      if (version === current) clear(root, h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Projects"), " / "), errorBox(err),
        h("p", {}, h("a", { href: "#/" }, "← all projects")));
    }
    return;
  }
  clear(root, errorBox(`no page ${path}`), h("p", {}, h("a", { href: "#/" }, "← all projects")));
}

// Setting the hash of the same page with new query (filter, sort, page) re-renders it.
export function go(path, query) {
  const q = query && [...query].length ? `?${query}` : "";
  location.hash = `#${path}${q}`;
}

function theme() {
  const stored = localStorage.getItem("runstream.theme");
  const dark = stored ? stored === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}

document.getElementById("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  localStorage.setItem("runstream.theme", next);
  theme();
  route(); // charts read their colours when drawn
});

theme();
window.addEventListener("hashchange", route);
route();
