// Recent alerts: rule, run, episode (fired, resolved) and the delivery state per webhook.
import { get } from "../lib/api.js";
import { clear, fmtAgo, fmtDuration, fmtNum, fmtTime, h } from "../lib/dom.js";

// The episode of an alert: a rule's alert is open until its condition clears (or its run ends);
// a user alert (wandb.alert) is a one-off message and has none.
function episode(a) {
  if (a.rule === "user") return h("span", { class: "hint", title: "a user alert (run.alert) has no episode" }, "one-off");
  if (a.resolved_at) return h("span", {}, "resolved", h("div", { class: "hint" }, `after ${fmtDuration(a.fired_at, a.resolved_at)}`));
  const ended = a.run_status && a.run_status !== "running";
  return h("span", { class: `status ${ended ? "" : "open"}` }, "open", ended ? h("div", { class: "hint" }, `run ${a.run_status}`) : null);
}

function delivery(a, webhooks) {
  const none = !webhooks.configured && a.delivery_state === "pending" && !(a.deliveries || []).length;
  if (none) return h("span", { class: "hint", title: `no webhooks file at ${webhooks.file}` }, "no webhooks");
  return [
    h("div", {}, a.delivery_state, a.attempts ? h("span", { class: "hint" }, ` · ${a.attempts} attempt${a.attempts === 1 ? "" : "s"}`) : null),
    (a.deliveries || []).map((d) => h("span", { class: "chip", title: d.last_error || "" }, `${d.webhook}: ${d.state}`)),
    a.last_error ? h("div", { class: "hint", title: a.last_error }, a.last_error.slice(0, 80)) : null,
  ];
}

export function alertsTable(alerts, { showRun = true, webhooks = { configured: true, file: "" } } = {}) {
  if (!alerts.length) return h("div", { class: "empty" }, "No alerts.");
  return h("div", { class: "table-wrap" }, h("table", { class: "data" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Fired"), h("th", {}, "Level"), h("th", {}, "Alert"), h("th", {}, "Rule"),
      showRun ? h("th", {}, "Run") : null, h("th", {}, "Metric"), h("th", {}, "Episode"), h("th", {}, "Delivery"))),
    h("tbody", {}, alerts.map((a) => h("tr", {},
      h("td", { title: a.fired_at }, fmtTime(a.fired_at), h("div", { class: "hint" }, fmtAgo(a.fired_at))),
      h("td", {}, h("span", { class: `level ${a.level}` }, a.level)),
      h("td", { class: "wrap", style: "max-width: 420px" }, h("div", {}, a.title), a.text ? h("div", { class: "hint" }, a.text) : null),
      h("td", {}, h("code", {}, a.rule)),
      showRun ? h("td", {}, h("a", { href: `#/run/${encodeURIComponent(a.run_id)}?project=${encodeURIComponent(a.project)}`, title: a.run_id }, a.run_name || a.run_id), h("div", { class: "hint" }, a.project)) : null,
      h("td", {}, a.metric ? h("span", {}, h("code", {}, a.metric), a.value !== null ? ` = ${fmtNum(a.value)}` : "", a.step !== null ? h("div", { class: "hint" }, `step ${a.step}`) : null) : ""),
      h("td", {}, episode(a)),
      h("td", {}, delivery(a, webhooks)),
    )))));
}

export async function render(root, _params, query) {
  const project = query.get("project") || "";
  const load = async () => get("/api/alerts", { project, limit: 200 });
  const { projects } = await get("/api/projects");
  const pick = h("select", { onchange: (e) => { location.hash = e.target.value ? `#/alerts?project=${encodeURIComponent(e.target.value)}` : "#/alerts"; } },
    h("option", { value: "" }, "all projects"),
    projects.map((p) => h("option", { value: p.project, selected: p.project === project }, p.project)));
  const count = h("span", { class: "sub" });
  const panel = h("div", { class: "panel" });
  const draw = (body) => {
    count.textContent = `${body.alerts.length} most recent`;
    clear(panel, alertsTable(body.alerts, { webhooks: { configured: body.webhooks_configured, file: body.webhooks_file } }));
  };
  root.append(h("div", { class: "page-head" }, h("h1", {}, "Alerts"), count, h("span", { style: "flex:1" }), pick), panel);
  draw(await load());
  // New alerts and delivery states appear without a reload.
  const timer = setInterval(async () => { if (!document.hidden) { try { draw(await load()); } catch { /* next time */ } } }, 10000);
  return () => clearInterval(timer);
}
