// The workers: every worker process the scheduler knows (live or not),
// its kinds and slots, pools (labels), signs of life and the stages it
// holds; below, the system log narrowed to a worker kind or host.

import { systemLog, workers } from "../api.js";
import { empty, h, replace, section } from "../dom.js";
import { absTime, count, relTime, timeEl } from "../format.js";

const POLL_MS = 5000;
const LOG_PAGE = 50;

function stateOf(w) {
  if (w.stopped) return ["stopped", "aborted"];
  return w.live ? ["live", "finished"] : ["not seen lately", "pending"];
}

function runningList(w) {
  if (!w.running || !w.running.length) return h("span", { class: "muted" }, "idle");
  return h(
    "ul",
    { class: "running" },
    w.running.map((r) =>
      h(
        "li",
        {},
        h("a", { href: `/ui/job/${r.job}` }, r.job),
        ` stage ${r.stage} `,
        h("span", { class: "kind" }, r.kind),
        " on ",
        h("code", {}, r.worker),
        ", since ",
        timeEl(r.since),
        r.lease_expires ? [", lease until ", h("time", { datetime: r.lease_expires, title: absTime(r.lease_expires) }, relTime(r.lease_expires))] : "",
        r.attempt > 1 ? `, attempt ${r.attempt}` : "",
      ),
    ),
  );
}

function roster(list) {
  if (!list.length) return empty("No worker has registered yet.");
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data workers" },
      h("caption", { class: "sr-only" }, "Workers"),
      h(
        "thead",
        {},
        h("tr", {}, ["Host", "State", "Slots", "Busy", "Pools and labels", "Holds", "Last seen", "Registered"].map((t) => h("th", { scope: "col" }, t))),
      ),
      h(
        "tbody",
        {},
        list.map((w) => {
          const [word, cls] = stateOf(w);
          const slots = w.kinds.reduce((a, [, n]) => a + n, 0);
          return h(
            "tr",
            { dataset: { host: w.host } },
            h("th", { scope: "row" }, w.host),
            h("td", {}, h("span", { class: `badge st-${cls}` }, word)),
            h("td", {}, h("ul", { class: "plain" }, w.kinds.map(([k, n]) => h("li", {}, h("span", { class: "kind" }, k), ` × ${n}`)))),
            h("td", { class: "num" }, `${(w.running || []).length} / ${slots}`),
            h(
              "td",
              {},
              Object.keys(w.labels || {}).length
                ? h("ul", { class: "labels" }, Object.entries(w.labels).map(([k, v]) => h("li", { class: "pill" }, `${k}=${v}`)))
                : h("span", { class: "muted" }, "none"),
            ),
            h("td", {}, runningList(w)),
            h("td", {}, timeEl(w.last_seen)),
            h("td", {}, timeEl(w.registered)),
          );
        }),
      ),
    ),
  );
}

function logTable(items) {
  return items.map((e) =>
    h(
      "tr",
      { dataset: { seq: String(e.seq) } },
      h("td", { class: "nowrap" }, timeEl(e.time)),
      h("td", {}, e.kind ? h("span", { class: "kind" }, e.kind) : ""),
      h("td", {}, e.host || ""),
      h("td", {}, e.worker ? h("code", {}, e.worker) : ""),
      h("td", {}, e.job ? h("a", { href: `/ui/job/${e.job}` }, e.job) : ""),
      h("td", { class: "message" }, e.message),
    ),
  );
}

/** The workers page. */
export function mount(main, ctx) {
  ctx.title("Workers");
  const summary = h("p", { class: "summary" });
  const rosterBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const kind = h("select", { id: "log-kind", name: "kind" }, h("option", { value: "" }, "any"));
  const host = h("select", { id: "log-host", name: "host" }, h("option", { value: "" }, "any"));
  const filter = { kind: ctx.query.get("kind") || "", host: ctx.query.get("host") || "" };
  const logBody = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Older entries");
  const logNote = h("p", { class: "muted" });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter the system log" },
    h("div", { class: "field" }, h("label", { for: "log-kind" }, "Worker kind"), kind),
    h("div", { class: "field" }, h("label", { for: "log-host" }, "Host"), host),
    h("div", { class: "field buttons" }, h("button", { type: "submit", class: "primary" }, "Show")),
  );
  replace(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Workers")),
    summary,
    rosterBox,
    section(
      "System log",
      { class: "syslog" },
      form,
      logNote,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "data syslog" },
          h("caption", { class: "sr-only" }, "System log"),
          h("thead", {}, h("tr", {}, ["Time", "Kind", "Host", "Worker", "Job", "Message"].map((t) => h("th", { scope: "col" }, t)))),
          logBody,
        ),
      ),
      more,
    ),
  );

  function fillSelect(select, values, current) {
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of [...values, current].filter(Boolean)) {
      if (!have.has(v)) {
        select.append(h("option", { value: v }, v));
        have.add(v);
      }
    }
    select.value = current;
  }

  let logStart = 0;
  async function loadLog(reset) {
    if (reset) logStart = 0;
    const page = await systemLog({ kind: filter.kind, host: filter.host, order: "newest_first", start: logStart, limit: LOG_PAGE }, ctx.signal);
    if (reset) replace(logBody);
    if (!page.items.length && reset) logBody.append(h("tr", {}, h("td", { colspan: 6 }, empty("No entries."))));
    logBody.append(...logTable(page.items));
    logNote.textContent = page.total ? `${count(page.total)} entries, newest first.` : "";
    more.hidden = page.next === null || page.next === undefined;
    logStart = page.next ?? logStart;
  }

  async function loadRoster(first) {
    const list = await workers(ctx.signal);
    const live = list.filter((w) => w.live).length;
    const slots = list.filter((w) => w.live).reduce((a, w) => a + w.kinds.reduce((b, [, n]) => b + n, 0), 0);
    const busy = list.filter((w) => w.live).reduce((a, w) => a + (w.running || []).length, 0);
    summary.textContent = `${live} of ${list.length} workers live; ${busy} of ${slots} slots busy.`;
    replace(rosterBox, roster(list));
    fillSelect(kind, [...new Set(list.flatMap((w) => w.kinds.map(([k]) => k)))].sort(), filter.kind);
    fillSelect(host, list.map((w) => w.host).sort(), filter.host);
    if (first) ctx.rendered("workers");
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (kind.value) params.set("kind", kind.value);
    if (host.value) params.set("host", host.value);
    const q = params.toString();
    ctx.navigate(q ? `/ui/workers?${q}` : "/ui/workers", { replaceState: true });
  });
  more.addEventListener("click", () => loadLog(false).catch(ctx.failed));

  Promise.all([loadRoster(true), loadLog(true)]).catch(ctx.failed);
  const timer = setInterval(() => {
    if (!document.hidden) loadRoster(false).catch(ctx.failed);
  }, POLL_MS);
  return () => clearInterval(timer);
}
