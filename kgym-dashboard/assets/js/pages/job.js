// One job: its stages (arguments, results, typed failures, crash report
// and frames), artifacts, tags and log; live while it runs (the job's
// event stream), with abort, restart and tag editing.

import { abortJob, getJob, jobArtifacts, jobLog, restartJob, setTags, watchJob } from "../api.js";
import { empty, facts, h, replace, section } from "../dom.js";
import { absTime, bytes, count, duration, secondsBetween, statusBadge, timeEl } from "../format.js";
import { artifactLink, stageState, stageView } from "./results.js";

const LOG_LINES = 500;
const LOG_KEEP = 5000;

function isTerminal(status) {
  return status === "finished" || status === "aborted";
}

/** A job's headline for the top of the page: the latest stage result's title. */
function headline(job) {
  for (let i = job.results.length - 1; i >= 0; i--) {
    const r = job.results[i];
    if (r.headline) return { title: r.headline, stage: i, crashed: Boolean(r.value && r.value.crashed) };
  }
  return null;
}

/** Which details elements are open (so a live refresh keeps them open). */
function openDetails(root) {
  return new Set([...root.querySelectorAll("details[data-key]")].filter((d) => d.open).map((d) => d.dataset.key));
}

function reopen(root, keys) {
  for (const d of root.querySelectorAll("details[data-key]")) if (keys.has(d.dataset.key)) d.open = true;
}

function logLine(entry) {
  const t = new Date(entry.time);
  const stamp = Number.isNaN(t.getTime()) ? "" : t.toLocaleTimeString([], { hour12: false });
  const where = entry.stage !== undefined && entry.stage !== null ? `[${entry.stage} ${entry.kind || ""}]` : "[scheduler]";
  return h(
    "span",
    { class: "line", dataset: { seq: String(entry.seq) } },
    h("span", { class: "t", title: absTime(entry.time) }, stamp),
    " ",
    h("span", { class: "w" }, where),
    " ",
    entry.line,
    "\n",
  );
}

/** The job page. */
export function mount(main, ctx) {
  const id = ctx.params[0].toLowerCase().padStart(8, "0");
  ctx.title(`Job ${id}`);
  const ui = {
    signal: ctx.signal,
    alert: ctx.alert,
    loaded: (what) => ctx.rendered(what),
  };
  let job = null;

  const badge = h("span", { class: "job-status" });
  const head = h("div", { class: "page-head" }, h("h1", {}, "Job ", h("span", { class: "job-id" }, id), " ", badge));
  const factsBox = h("div", { class: "job-facts" });
  const status = h("p", { class: "action-status", role: "status", "aria-live": "polite" });
  const actions = h("div", { class: "actions", role: "group", "aria-label": "Actions" });
  const top = h("div", { class: "headline-box" });
  const stages = h("ol", { class: "stages", start: 0 });
  const tagsBox = h("div", { class: "tags-box" });
  const artifactsBox = h("div", { class: "artifacts-box" }, h("p", { class: "muted" }, "Loading…"));
  const log = h("pre", { class: "log", tabindex: "0", "aria-label": "Job log" });
  const logNote = h("p", { class: "muted log-note" });
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });

  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/" }, "Jobs"), " › ", h("span", { "aria-current": "page" }, id)),
    head,
    factsBox,
    actions,
    status,
    top,
    section("Stages", { class: "stages-section" }, stages),
    section("Artifacts", { class: "artifacts-section" }, artifactsBox),
    section("Tags", { class: "tags-section" }, tagsBox),
    section(
      "Log",
      { class: "log-section" },
      h("div", { class: "log-tools" }, logNote, h("label", { for: "log-follow" }, follow, " follow new lines")),
      log,
    ),
  );

  // ----- rendering -----

  function renderHead() {
    replace(badge, statusBadge(job.status));
    const failed = job.results.find((r) => r.outcome === "failure");
    if (failed && job.status === "finished") replace(badge, statusBadge("failed", "finished with a failed stage"));
    const ended = isTerminal(job.status);
    replace(
      factsBox,
      facts([
        ["Submitted", timeEl(job.created)],
        ["Last change", timeEl(job.modified)],
        [ended ? "Took" : "Running for", duration(secondsBetween(job.created, ended ? job.modified : new Date().toISOString()))],
        ["Current stage", job.current_stage !== null && job.current_stage !== undefined ? `${job.current_stage} (${job.stages[job.current_stage].kind})` : ""],
        ["Worker", job.worker ? h("code", {}, job.worker) : ""],
        ["Waiting for", job.no_worker_for ? h("span", { class: "warn" }, `a live worker that runs ${job.no_worker_for} (none now)`) : ""],
      ], "facts inline"),
    );
    const h1 = headline(job);
    replace(
      top,
      h1
        ? h(
            "p",
            { class: `headline-banner ${h1.crashed ? "bad" : ""}` },
            h("span", { class: "muted" }, h1.crashed ? "Crash: " : "Result: "),
            h("a", { href: `#stage-${h1.stage}`, class: "crash-headline" }, h1.title),
          )
        : "",
    );
  }

  function renderStages() {
    const open = openDetails(stages);
    replace(stages, job.stages.map((_, i) => stageView(job, i, ui)));
    reopen(stages, open);
  }

  function renderActions() {
    const buttons = [];
    if (!isTerminal(job.status)) {
      buttons.push(h("button", { type: "button", class: "danger", id: "abort", onclick: () => act("Abort", () => abortJob(id)) }, "Abort job"));
    } else {
      const firstFailed = job.results.findIndex((r) => r.outcome === "failure");
      const from = firstFailed >= 0 ? firstFailed : Math.min(job.results.length, job.stages.length - 1);
      const select = h(
        "select",
        { id: "restart-from" },
        job.stages.map((s, i) => h("option", { value: String(i), selected: i === from }, `stage ${i} (${s.kind})`)),
      );
      buttons.push(
        h("label", { for: "restart-from" }, "Restart from "),
        select,
        h("button", { type: "button", id: "restart", onclick: () => act("Restart", () => restartJob(id, select.value)) }, "Restart"),
      );
    }
    replace(actions, buttons);
  }

  function renderTags() {
    const rows = h("tbody");
    const addRow = (k = "", v = "") => {
      const n = rows.children.length;
      const remove = h("button", { type: "button", class: "link", "aria-label": `Remove tag ${k || n + 1}` }, "remove");
      const tr = h(
        "tr",
        {},
        h("td", {}, h("input", { class: "tag-key", value: k, "aria-label": `Tag ${n + 1} key`, autocomplete: "off" })),
        h("td", {}, h("input", { class: "tag-value", value: v, "aria-label": `Tag ${n + 1} value`, autocomplete: "off" })),
        h("td", {}, remove),
      );
      remove.addEventListener("click", () => tr.remove());
      rows.append(tr);
    };
    for (const [k, v] of Object.entries(job.tags || {})) addRow(k, v);
    const form = h(
      "form",
      { class: "tags-form", "aria-label": "Tags" },
      h(
        "table",
        { class: "data" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Value"), h("th", {}, h("span", { class: "sr-only" }, "Remove")))),
        rows,
      ),
      h(
        "p",
        {},
        h("button", { type: "button", class: "link", id: "add-tag", onclick: () => addRow() }, "+ add a tag"),
        " ",
        h("button", { type: "submit", id: "save-tags" }, "Save tags"),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const tags = {};
      for (const tr of rows.children) {
        const k = tr.querySelector(".tag-key").value.trim();
        if (k) tags[k] = tr.querySelector(".tag-value").value;
      }
      act("Saving tags", () => setTags(id, tags));
    });
    replace(tagsBox, form);
  }

  function renderArtifacts(items) {
    if (!items) {
      replace(artifactsBox, empty("This server does not serve artifacts."));
      return;
    }
    if (!items.length) {
      replace(artifactsBox, empty("No artifacts (yet)."));
      return;
    }
    replace(
      artifactsBox,
      h(
        "table",
        { class: "data artifacts" },
        h("caption", { class: "sr-only" }, "Artifacts"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Artifact"), h("th", { scope: "col", class: "num" }, "Size"))),
        h(
          "tbody",
          {},
          items.map((a) => h("tr", {}, h("td", {}, artifactLink(a.key, a.key.replace(/^jobs\/[0-9a-f]+\//, ""), ui)), h("td", { class: "num" }, bytes(a.size)))),
        ),
      ),
    );
  }

  // ----- log -----

  let lastSeq = -1;
  let logTotal = 0;
  function appendLog(entries) {
    const fresh = entries.filter((e) => e.seq > lastSeq).sort((a, b) => a.seq - b.seq);
    if (!fresh.length) return;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    log.append(...fresh.map(logLine));
    lastSeq = fresh[fresh.length - 1].seq;
    while (log.childNodes.length > LOG_KEEP) log.firstChild.remove();
    if (follow.checked && atBottom) log.scrollTop = log.scrollHeight;
  }

  async function loadLog() {
    const page = await jobLog(id, { order: "newest_first", limit: LOG_LINES }, ctx.signal);
    logTotal = page.total;
    const older = [...log.childNodes].length;
    if (!older) appendLog(page.items);
    else {
      // Lines streamed in before this page arrived: merge by sequence.
      const seen = new Set([...log.querySelectorAll(".line")].map((l) => Number(l.dataset.seq)));
      const missing = page.items.filter((e) => !seen.has(e.seq));
      if (missing.length) {
        const all = [...log.querySelectorAll(".line")].map((l) => l);
        for (const e of missing.sort((a, b) => a.seq - b.seq)) {
          const before = all.find((l) => Number(l.dataset.seq) > e.seq);
          log.insertBefore(logLine(e), before || null);
        }
      }
    }
    logNote.textContent =
      logTotal > LOG_LINES ? `The last ${count(LOG_LINES)} of ${count(logTotal)} lines.` : logTotal ? `${count(logTotal)} lines.` : "No log lines yet.";
    log.scrollTop = log.scrollHeight;
  }

  // ----- actions -----

  async function act(what, call) {
    status.className = "action-status";
    status.setAttribute("role", "status");
    status.textContent = `${what}…`;
    for (const b of actions.querySelectorAll("button")) b.disabled = true;
    try {
      await call();
      status.className = "action-status ok";
      status.textContent = `${what}: done.`;
      await refresh(true);
      if (!isTerminal(job.status)) startWatch();
    } catch (e) {
      status.className = "action-status error";
      status.setAttribute("role", "alert");
      status.textContent = e.unauthorized ? `${what} refused: ${e.message}. Set the token (top right) and try again.` : `${what} failed: ${e.message}`;
      for (const b of actions.querySelectorAll("button")) b.disabled = false;
    }
  }

  // ----- loading and live updates -----

  async function loadArtifacts() {
    try {
      renderArtifacts(await jobArtifacts(id, ctx.signal));
    } catch (e) {
      if (e.status === 404 && e.code === "no-artifacts") renderArtifacts(null);
      else if (e.name !== "AbortError") replace(artifactsBox, h("p", { class: "error" }, `Could not list the artifacts: ${e.message}`));
    }
  }

  async function refresh(all) {
    job = await getJob(id, ctx.signal);
    renderHead();
    renderStages();
    renderActions();
    if (all) renderTags();
  }

  let watching = null;
  function startWatch() {
    if (watching) return;
    const controller = new AbortController();
    ctx.signal.addEventListener("abort", () => controller.abort(), { once: true });
    let pendingRefresh = null;
    watching = watchJob(
      id,
      (ev) => {
        if (ev.event === "log") {
          appendLog([ev]);
          return;
        }
        if (ev.event !== "status") return;
        // A status change: the results may have changed too.
        clearTimeout(pendingRefresh);
        pendingRefresh = setTimeout(() => {
          refresh(false)
            .then(() => (isTerminal(job.status) ? loadArtifacts() : null))
            .catch(ctx.failed);
        }, 100);
      },
      controller.signal,
    )
      .catch(ctx.failed)
      .finally(() => {
        watching = null;
      });
  }

  (async () => {
    await refresh(true);
    ctx.rendered("job");
    // Watch first, so no line falls between the log page and the stream
    // (the log page merges with what the stream already brought).
    if (!isTerminal(job.status)) startWatch();
    await Promise.all([loadArtifacts(), loadLog()]);
  })().catch((e) => {
    if (e.status === 404) replace(main, h("h1", {}, `No job ${id}`), h("p", {}, e.message, " ", h("a", { href: "/" }, "See the jobs.")));
    ctx.failed(e);
  });

  const ticker = setInterval(() => job && !isTerminal(job.status) && renderHead(), 5000);
  return () => clearInterval(ticker);
}
