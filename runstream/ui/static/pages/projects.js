import { get } from "../lib/api.js";
import { fmtAgo, fmtTime, h } from "../lib/dom.js";

export async function render(root) {
  const { projects } = await get("/api/projects");
  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Projects"),
      h("span", { class: "sub" }, `${projects.length} project${projects.length === 1 ? "" : "s"}`)),
  );
  if (!projects.length) {
    root.append(h("div", { class: "panel empty" }, "No runs yet. Log one with runstream.init(project=...) and it appears here."));
    return;
  }
  root.append(h("div", { class: "project-grid" }, projects.map((p) =>
    h("a", { class: "panel project-card", href: `#/p/${encodeURIComponent(p.project)}` },
      h("div", { class: "title" }, p.project),
      h("div", { class: "stats" },
        h("div", {}, h("b", {}, p.runs.toLocaleString("en-US")), "runs"),
        h("div", {}, h("b", { class: p.running ? "status running" : "" }, String(p.running)), "running"),
        h("div", { title: fmtTime(p.last_activity) }, h("b", {}, fmtAgo(p.last_activity)), "last activity"),
      ),
    ))));
}
