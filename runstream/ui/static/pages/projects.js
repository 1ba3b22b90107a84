// Every project: its runs, how many run now, its last activity; read again every 10 seconds.
import { get } from "../lib/api.js";
import { clear, errorBox, fmtAgo, fmtTime, h } from "../lib/dom.js";

const REFRESH_MS = 10000;

export async function render(root) {
  const count = h("span", { class: "sub" });
  const grid = h("div");
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Projects"), count), grid);

  const draw = (projects) => {
    count.textContent = `${projects.length} project${projects.length === 1 ? "" : "s"}`;
    if (!projects.length) {
      clear(grid, h("div", { class: "panel empty" }, "No runs yet. Log one with runstream.init(project=...) and it appears here."));
      return;
    }
    clear(grid, h("div", { class: "project-grid" }, projects.map((p) =>
      h("a", { class: "panel project-card", href: `#/p/${encodeURIComponent(p.project)}` },
        h("div", { class: "title" }, p.project),
        h("div", { class: "stats" },
          h("div", {}, h("b", {}, p.runs.toLocaleString("en-US")), "runs"),
          h("div", {}, h("b", { class: p.running ? "status running" : "" }, String(p.running)), "running"),
          h("div", { title: fmtTime(p.last_activity) }, h("b", {}, fmtAgo(p.last_activity)), "last activity"),
        )))));
  };

  draw((await get("/api/projects")).projects);
  const timer = setInterval(async () => {
    if (document.hidden) return;
    try { draw((await get("/api/projects")).projects); } catch (err) { clear(grid, errorBox(err)); }
  }, REFRESH_MS);
  return () => clearInterval(timer);
}
