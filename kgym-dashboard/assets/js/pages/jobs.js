// The job list: counts per status, filters (status, tag, time range),
// sort, pages, and live updates (the page polls the list while visible).

import { jobCounts, listJobs } from "../api.js";
import { empty, h, replace } from "../dom.js";
import {
  STATUSES,
  count,
  duration,
  fromLocalInput,
  secondsBetween,
  statusBadge,
  statusLabel,
  timeEl,
  toLocalInput,
} from "../format.js";

const POLL_MS = 3000;
const PAGE_SIZES = [20, 50, 100, 200];
const DEFAULTS = { by: "created", order: "newest_first", start: "0", limit: "20" };
// `after` is the API's page cursor: only the "Next" link carries it (with
// its `start`), so deep pages cost what the first one does.
const FIELDS = ["status", "tag", "tag_value", "from", "to", "by", "order", "start", "limit", "after"];

/** The filters of the URL's query, with defaults filled in. */
function readFilters(query) {
  const f = {};
  for (const k of FIELDS) f[k] = query.get(k) || DEFAULTS[k] || "";
  if (!STATUSES.includes(f.status)) f.status = "";
  if (!["created", "modified"].includes(f.by)) f.by = DEFAULTS.by;
  if (!["newest_first", "oldest_first"].includes(f.order)) f.order = DEFAULTS.order;
  const limit = Number.parseInt(f.limit, 10);
  f.limit = String(Number.isFinite(limit) ? Math.min(Math.max(limit, 1), 500) : 20);
  const start = Number.parseInt(f.start, 10);
  f.start = String(Number.isFinite(start) && start > 0 ? start : 0);
  if (!f.tag) f.tag_value = "";
  return f;
}

/** The page's URL for filters `f` (defaults left out, so links stay short). */
function urlOf(f) {
  const params = new URLSearchParams();
  if (f.after && (!f.start || f.start === "0")) f = { ...f, after: "" };
  for (const k of FIELDS) if (f[k] && f[k] !== DEFAULTS[k]) params.set(k, f[k]);
  const text = params.toString();
  return text ? `/?${text}` : "/";
}

function apiQuery(f, { withStatus = true, withPage = true } = {}) {
  const q = { by: f.by, from: f.from, to: f.to, tag: f.tag, tag_value: f.tag_value };
  if (withStatus) q.status = f.status;
  if (withPage) Object.assign(q, { order: f.order, start: f.start, limit: f.limit, after: f.after });
  return q;
}

function stagesCell(job) {
  const terminal = job.current_stage === null || job.current_stage === undefined;
  return h(
    "ol",
    { class: "kinds", "aria-label": "Stages" },
    job.kinds.map((kind, i) => {
      let state = "ended";
      if (!terminal) state = i < job.current_stage ? "done" : i === job.current_stage ? `current st-${job.status}` : "todo";
      return h("li", { class: `kind ${state}` }, kind);
    }),
  );
}

function row(job) {
  const terminal = job.status === "finished" || job.status === "aborted";
  const took = terminal ? duration(secondsBetween(job.created, job.modified)) : "";
  return h(
    "tr",
    { dataset: { job: job.id, status: job.status } },
    h("th", { scope: "row" }, h("a", { href: `/ui/job/${job.id}`, class: "job-id" }, job.id)),
    h("td", {}, job.failed && job.status === "finished" ? statusBadge("failed", "finished with a failed stage") : statusBadge(job.status)),
    h("td", {}, stagesCell(job)),
    h(
      "td",
      { class: "headline" },
      job.headline ? h("span", { class: "crash", title: job.headline }, job.headline) : "",
      job.no_worker_for ? h("span", { class: "pill warn", title: "No live worker runs this stage kind" }, `no worker for ${job.no_worker_for}`) : "",
    ),
    h("td", { class: "worker" }, job.worker || ""),
    h("td", {}, timeEl(job.created)),
    h("td", {}, timeEl(job.modified), took ? h("span", { class: "muted" }, ` · took ${took}`) : ""),
  );
}

function sortHeader(label, by, f) {
  const active = f.by === by;
  const next = { ...f, by, start: "0", after: "", order: active && f.order === "newest_first" ? "oldest_first" : "newest_first" };
  const arrow = active ? (f.order === "newest_first" ? " ↓" : " ↑") : "";
  return h(
    "th",
    { scope: "col", "aria-sort": active ? (f.order === "newest_first" ? "descending" : "ascending") : "none" },
    h(
      "a",
      { href: urlOf(next), class: "sort", title: `Sort by ${label.toLowerCase()}` },
      label,
      h("span", { "aria-hidden": "true" }, arrow),
    ),
  );
}

function filterForm(f, ctx) {
  const option = (value, label, current) => h("option", { value, selected: value === current }, label);
  const status = h(
    "select",
    { name: "status", id: "f-status" },
    option("", "any", f.status),
    STATUSES.map((s) => option(s, statusLabel(s), f.status)),
  );
  const tag = h("input", { name: "tag", id: "f-tag", value: f.tag, placeholder: "key", autocomplete: "off" });
  const value = h("input", {
    name: "tag_value",
    id: "f-tag-value",
    value: f.tag_value,
    placeholder: "any value",
    autocomplete: "off",
  });
  const from = h("input", { type: "datetime-local", name: "from", id: "f-from", value: toLocalInput(f.from) });
  const to = h("input", { type: "datetime-local", name: "to", id: "f-to", value: toLocalInput(f.to) });
  const by = h(
    "select",
    { name: "by", id: "f-by" },
    option("created", "submitted", f.by),
    option("modified", "last changed", f.by),
  );
  const order = h(
    "select",
    { name: "order", id: "f-order" },
    option("newest_first", "newest first", f.order),
    option("oldest_first", "oldest first", f.order),
  );
  const limit = h(
    "select",
    { name: "limit", id: "f-limit" },
    PAGE_SIZES.map((n) => option(String(n), String(n), f.limit)),
  );
  const field = (label, id, control) => h("div", { class: "field" }, h("label", { for: id }, label), control);
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    field("Status", "f-status", status),
    field("Tag", "f-tag", tag),
    field("Tag value", "f-tag-value", value),
    field("From", "f-from", from),
    field("To", "f-to", to),
    field("Time of", "f-by", by),
    field("Order", "f-order", order),
    field("Per page", "f-limit", limit),
    h(
      "div",
      { class: "field buttons" },
      h("button", { type: "submit", class: "primary" }, "Apply"),
      h("a", { href: "/", class: "button" }, "Clear"),
    ),
  );
  const quick = h(
    "div",
    { class: "quick", role: "group", "aria-label": "Time range" },
    [
      ["Last hour", 3600],
      ["Last day", 86400],
      ["Last week", 7 * 86400],
    ].map(([label, secs]) =>
      h(
        "button",
        {
          type: "button",
          class: "link",
          onclick: () => {
            from.value = toLocalInput(new Date(Date.now() - secs * 1000).toISOString());
            to.value = "";
            form.requestSubmit();
          },
        },
        label,
      ),
    ),
  );
  form.insertBefore(h("div", { class: "field" }, h("span", { class: "sr-only" }, "Quick range"), quick), form.querySelector(".field.buttons"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = {
      ...f,
      status: status.value,
      tag: tag.value.trim(),
      tag_value: tag.value.trim() ? value.value.trim() : "",
      from: fromLocalInput(from.value),
      to: fromLocalInput(to.value),
      by: by.value,
      order: order.value,
      limit: limit.value,
      start: "0",
      after: "",
    };
    ctx.navigate(urlOf(next));
  });
  for (const select of [status, by, order, limit]) select.addEventListener("change", () => form.requestSubmit());
  return form;
}

function countsNav(counts, f) {
  const total = STATUSES.reduce((a, s) => a + (counts[s] || 0), 0);
  const chip = (status, label, n) =>
    h(
      "a",
      {
        href: urlOf({ ...f, status, start: "0", after: "" }),
        class: `chip ${status ? `st-${status}` : "all"}`,
        "aria-current": f.status === status ? "true" : undefined,
        dataset: { status: status || "all" },
      },
      h("span", {}, label),
      " ",
      h("b", { class: "n" }, count(n)),
    );
  return [chip("", "all", total), STATUSES.map((s) => chip(s, statusLabel(s), counts[s] || 0))];
}

function pagerLinks(page, f) {
  const start = Number(f.start);
  const limit = Number(f.limit);
  const total = page.total;
  const link = (label, to, rel, disabled, after = "") =>
    disabled
      ? h("span", { class: "button disabled", "aria-disabled": "true" }, label)
      : h("a", { href: urlOf({ ...f, start: String(to), after }), class: "button", rel }, label);
  const last = total > 0 ? Math.floor((total - 1) / limit) * limit : 0;
  const pageNo = Math.floor(start / limit) + 1;
  const pages = Math.max(1, Math.ceil(total / limit));
  return [
    link("« First", 0, "first", start === 0),
    link("‹ Previous", Math.max(0, start - limit), "prev", start === 0),
    h("span", { class: "where" }, `page ${count(pageNo)} of ${count(pages)}`),
    link("Next ›", page.next ?? start + limit, "next", page.next === null || page.next === undefined, page.cursor || ""),
    link("Last »", last, "last", start >= last),
  ];
}

function summaryText(page, f) {
  if (!page.total) return "No jobs match.";
  const first = Number(f.start) + 1;
  const last = Number(f.start) + page.items.length;
  return `Jobs ${count(first)}–${count(last)} of ${count(page.total)}`;
}

/** The jobs page. */
export function mount(main, ctx) {
  const f = readFilters(ctx.query);
  ctx.title("Jobs");
  const counts = h("nav", { class: "counts", "aria-label": "Jobs per status" });
  const summary = h("p", { class: "summary", id: "jobs-summary" });
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "jobs", "aria-describedby": "jobs-summary" },
    h("caption", { class: "sr-only" }, "Jobs"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Job"),
        h("th", { scope: "col" }, "Status"),
        h("th", { scope: "col" }, "Stages"),
        h("th", { scope: "col" }, "Result"),
        h("th", { scope: "col" }, "Worker"),
        sortHeader("Submitted", "created", f),
        sortHeader("Last change", "modified", f),
      ),
    ),
    tbody,
  );
  const pager = h("nav", { class: "pager", "aria-label": "Pages of jobs" });
  let live = true;
  const liveButton = h("button", { type: "button", class: "live", "aria-pressed": "true" }, "Live");
  const updated = h("span", { class: "muted updated" });
  liveButton.addEventListener("click", () => {
    live = !live;
    liveButton.setAttribute("aria-pressed", String(live));
  });
  replace(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("div", { class: "live-box" }, updated, liveButton)),
    counts,
    filterForm(f, ctx),
    summary,
    h("div", { class: "table-wrap" }, table),
    pager,
  );

  // id → JSON of the rows on screen (null before the first answer).
  let shown = null;
  function showRows(items) {
    const ids = items.map((j) => j.id);
    const before = shown ? [...shown.keys()] : null;
    const same = before !== null && ids.length === before.length && ids.every((id, i) => before[i] === id);
    const next = new Map(items.map((j) => [j.id, JSON.stringify(j)]));
    if (!same) {
      replace(tbody, items.length ? items.map(row) : h("tr", {}, h("td", { colspan: 7 }, empty("No jobs match these filters."))));
    } else {
      for (const j of items) {
        if (shown.get(j.id) === next.get(j.id)) continue;
        const old = tbody.querySelector(`tr[data-job="${j.id}"]`);
        const fresh = row(j);
        fresh.classList.add("changed");
        if (old) old.replaceWith(fresh);
      }
    }
    shown = next;
  }

  let busy = false;
  async function load(first) {
    if (busy) return;
    busy = true;
    try {
      const [page, c] = await Promise.all([
        listJobs(apiQuery(f), ctx.signal),
        jobCounts(apiQuery(f, { withStatus: false, withPage: false }), ctx.signal),
      ]);
      replace(counts, countsNav(c, f));
      summary.textContent = summaryText(page, f);
      showRows(page.items);
      replace(pager, pagerLinks(page, f));
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (first) ctx.rendered("list");
    } finally {
      busy = false;
    }
  }
  load(true).catch(ctx.failed);
  const timer = setInterval(() => {
    if (live && !document.hidden) load(false).catch(ctx.failed);
  }, POLL_MS);
  return () => clearInterval(timer);
}
