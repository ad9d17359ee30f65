// How a stage shows on the job page: its state, its typed failure, its
// result by kind (build timings and artifacts, reproduce crashes with the
// report and its frames, patch-check verdicts, anything else as data)
// and its argument.

import { artifactText, artifactUrl, openArtifact } from "../api.js";
import { getToken } from "../auth.js";
import { empty, facts, h, replace, s } from "../dom.js";
import { bytes, duration, secondsBetween, timeEl } from "../format.js";

/** What a stage is doing or did: [state word, badge class]. */
export function stageState(job, i) {
  const r = job.results[i];
  if (r) {
    if (r.outcome === "success") return ["succeeded", "finished"];
    return r.failure && r.failure.code === "cancelled" ? ["cancelled", "aborted"] : ["failed", "failed"];
  }
  if (job.current_stage === i) {
    if (job.status === "in_progress") return ["running", "in_progress"];
    return ["queued", job.status];
  }
  if (job.status === "aborted") {
    // The first stage without a result is the one the abort stopped.
    return i === job.results.length ? ["aborted", "aborted"] : ["not run", "pending"];
  }
  if (job.status === "finished") return ["skipped", "pending"];
  return ["to do", "pending"];
}

/** A link to an artifact; with a token set it is fetched with it and opened from memory. */
export function artifactLink(key, label, ui) {
  const name = key.split("/").pop();
  const a = h("a", { href: artifactUrl(key), class: "artifact", title: key, target: "_blank", rel: "noopener" }, label || name);
  a.addEventListener("click", (event) => {
    if (!getToken()) return;
    event.preventDefault();
    openArtifact(key, name).catch((e) => ui.alert(`Could not open ${name}: ${e.message}`));
  });
  return a;
}

/** JSON as nested lists; long or multi-line strings fold away. */
export function jsonView(value) {
  if (value === null || value === undefined) return h("code", { class: "j-null" }, "null");
  if (Array.isArray(value)) {
    if (!value.length) return h("code", {}, "[]");
    return h("ol", { class: "json", start: 0 }, value.map((v) => h("li", {}, jsonView(v))));
  }
  if (typeof value === "object") {
    const keys = Object.keys(value);
    if (!keys.length) return h("code", {}, "{}");
    const dl = h("dl", { class: "json" });
    for (const k of keys) dl.append(h("dt", {}, k), h("dd", {}, jsonView(value[k])));
    return dl;
  }
  if (typeof value === "string") {
    const lines = value.split("\n");
    if (lines.length > 1 || value.length > 160) {
      return h(
        "details",
        { class: "long" },
        h("summary", {}, h("code", {}, `${lines[0].slice(0, 100)}…`), h("span", { class: "muted" }, ` ${lines.length} lines, ${bytes(value.length)}`)),
        h("pre", {}, value),
      );
    }
    return h("code", { class: "j-str" }, value);
  }
  return h("code", { class: "j-lit" }, String(value));
}

function failureBox(f) {
  return h(
    "div",
    { class: "failure", role: "group", "aria-label": "Failure" },
    h("p", {}, h("code", { class: "code", title: "failure code" }, f.code), " ", h("span", { class: "message" }, f.message)),
    f.retryable ? h("p", { class: "muted" }, "The worker broke (retryable): the stage was handed out again until it gave up.") : "",
    f.detail ? h("details", { open: true }, h("summary", {}, "Detail"), h("pre", { class: "detail" }, f.detail)) : "",
  );
}

/** Build phases as one bar (SVG, so no inline styles are needed). */
function timingBar(t) {
  const parts = [
    ["checkout", t.checkout_secs, "ph-checkout"],
    ["config", t.config_secs, "ph-config"],
    ["compile", t.compile_secs, "ph-compile"],
  ];
  const total = Math.max(t.total_secs || 0, parts.reduce((a, p) => a + (p[1] || 0), 0));
  const svg = s("svg", {
    viewBox: "0 0 600 18",
    preserveAspectRatio: "none",
    class: "timing",
    role: "img",
    "aria-label": `Build phases: ${parts.map(([name, secs]) => `${name} ${duration(secs || 0)}`).join(", ")}`,
  });
  let x = 0;
  for (const [name, secs, cls] of parts) {
    const w = total > 0 ? ((secs || 0) / total) * 600 : 0;
    if (w > 0) svg.append(s("rect", { x, y: 0, width: w, height: 18, class: cls }, s("title", {}, `${name}: ${duration(secs)}`)));
    x += w;
  }
  const legend = h(
    "ul",
    { class: "legend" },
    parts.map(([name, secs, cls]) => h("li", {}, h("span", { class: `swatch ${cls}`, "aria-hidden": "true" }), `${name} ${duration(secs || 0)}`)),
    h("li", {}, h("strong", {}, `total ${duration(t.total_secs || 0)}`)),
  );
  return h("div", { class: "timings" }, svg, legend);
}

function buildResult(v, ui) {
  const links = [
    ["kernel (bzImage)", v.bzimage],
    ["vmlinux", v.vmlinux],
    [".config", v.config],
    ["build log", v.log],
    ["compile_commands.json", v.compile_commands],
  ].filter(([, k]) => k);
  const out = [
    h("h4", {}, "Build timings"),
    timingBar(v.timings || {}),
    facts(
      [
        ["Arch", v.arch],
        ["Warm tree", v.cache ? h("span", { class: `cache cache-${v.cache}` }, v.cache === "hit" ? "hit (reused)" : "miss (fresh tree)") : ""],
        ["Commit", v.commit ? h("code", {}, v.commit) : ""],
        ["Command line", v.cmdline ? h("code", {}, v.cmdline) : ""],
        ["Backports", v.backports_applied && v.backports_applied.length ? v.backports_applied.join(", ") : ""],
        ["Artifacts", h("span", { class: "links" }, links.map(([label, key]) => [artifactLink(key, label, ui), " "]))],
      ],
      "facts inline",
    ),
  ];
  if (v.config_mismatches && v.config_mismatches.length) {
    const n = v.config_mismatches.length;
    out.push(
      h(
        "details",
        { class: "mismatches", dataset: { key: "mismatches" } },
        h("summary", { class: "warn" }, `${n} requested config symbol${n === 1 ? "" : "s"} did not stick`),
        h(
          "table",
          { class: "data" },
          h("thead", {}, h("tr", {}, ["Symbol", "Requested", "Got"].map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            v.config_mismatches.map((m) => h("tr", {}, h("td", {}, h("code", {}, `CONFIG_${m.symbol}`)), h("td", {}, m.requested), h("td", {}, m.actual ?? "absent"))),
          ),
        ),
      ),
    );
  }
  return out;
}

const FRAME = /^(\s*)(\?\s+)?([A-Za-z_][\w.$]*)(\+0x[0-9a-f]+\/0x[0-9a-f]+)?(\s+\[[^\]]+\])?(?:\s+(\S+:\d+))?(\s+\[inline\])?\s*$/;

/** The frames of a report's first call trace: [{fn, loc, inline, unreliable}]. */
export function framesOf(report) {
  const lines = report.split("\n");
  const start = lines.findIndex((l) => /Call Trace:/.test(l));
  if (start < 0) return [];
  const frames = [];
  for (const line of lines.slice(start + 1)) {
    if (/^\s*<\/?(TASK|IRQ|NMI|SOFTIRQ)>\s*$/.test(line)) continue;
    const m = line.match(FRAME);
    // A frame has an offset (func+0x1/0x2) or a source location.
    if (!m || (!m[4] && !m[6])) {
      if (frames.length) break;
      continue;
    }
    frames.push({ fn: m[3], loc: m[6] || "", inline: Boolean(m[7]), unreliable: Boolean(m[2]) });
  }
  return frames;
}

/** The report text with frame lines marked up. */
function reportPre(text) {
  const pre = h("pre", { class: "report", tabindex: "0", "aria-label": "Crash report" });
  for (const line of text.split("\n")) {
    const m = line.match(FRAME);
    if (m && (m[4] || m[6])) {
      pre.append(
        h(
          "span",
          { class: m[2] ? "frame unreliable" : "frame" },
          m[1],
          m[2] || "",
          h("span", { class: "fn" }, m[3]),
          m[4] || "",
          m[5] || "",
          m[6] ? [" ", h("span", { class: "loc" }, m[6])] : "",
          m[7] || "",
        ),
        "\n",
      );
    } else {
      pre.append(`${line}\n`);
    }
  }
  return pre;
}

function framesList(frames) {
  if (!frames.length) return empty("No call trace in this report.");
  return h(
    "ol",
    { class: "frames", "aria-label": "Call trace" },
    frames.map((f) =>
      h(
        "li",
        { class: f.unreliable ? "unreliable" : "" },
        h("span", { class: "fn" }, f.fn),
        f.loc ? [" ", h("code", { class: "loc" }, f.loc)] : "",
        f.inline ? h("span", { class: "muted" }, " inline") : "",
        f.unreliable ? h("span", { class: "muted" }, " (unreliable)") : "",
      ),
    ),
  );
}

/** Fetches a report artifact and shows it with its frames. */
function reportView(key, ui) {
  const box = h("div", { class: "report-box" }, h("p", { class: "muted" }, "Loading the report…"));
  artifactText(key, ui.signal)
    .then((text) => {
      replace(
        box,
        h("h5", {}, "Frames"),
        framesList(framesOf(text)),
        h("h5", {}, "Report ", artifactLink(key, "(raw)", ui)),
        reportPre(text),
      );
      ui.loaded("report");
    })
    .catch((e) => {
      if (e.name === "AbortError") return;
      replace(box, h("p", { class: "error" }, `Could not load the report: ${e.message}`));
    });
  return box;
}

function crashView(c, picked, ui) {
  const withReport = c.incidents.find((i) => i.report);
  const incidents = h(
    "table",
    { class: "data incidents" },
    h("caption", { class: "sr-only" }, `Incidents of ${c.title}`),
    h("thead", {}, h("tr", {}, ["VM", "Boot", "Crashed after", "Console log", "Report"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      c.incidents.map((i) =>
        h(
          "tr",
          {},
          h("td", {}, String(i.instance)),
          h("td", {}, String(i.run)),
          h("td", {}, duration(i.seconds)),
          h("td", {}, artifactLink(i.log, "console log", ui)),
          h("td", {}, i.report ? artifactLink(i.report, "report", ui) : ""),
        ),
      ),
    ),
  );
  const article = h(
    "article",
    { class: `crash-item kind-${c.kind}` },
    h("h4", { class: "crash-title" }, c.title),
    h(
      "p",
      { class: "tags" },
      h("span", { class: `pill ${c.kind === "crash" ? "bad" : "warn"}` }, c.kind === "crash" ? "kernel crash" : "special"),
      c.crash_type ? h("span", { class: "pill" }, c.crash_type) : "",
      c.corrupted ? h("span", { class: "pill warn" }, "report corrupted") : "",
      c.guilty_file ? h("span", { class: "pill" }, `guilty file ${c.guilty_file}`) : "",
    ),
    c.alt_titles && c.alt_titles.length ? h("p", { class: "muted" }, `Also known as: ${c.alt_titles.join("; ")}`) : "",
    incidents,
  );
  if (withReport) {
    if (picked) article.append(reportView(withReport.report, ui));
    else {
      const d = h("details", { class: "lazy-report" }, h("summary", {}, "Report and frames"));
      d.addEventListener("toggle", () => d.open && d.children.length === 1 && d.append(reportView(withReport.report, ui)), { once: false });
      article.append(d);
    }
  }
  return article;
}

function reproduceResult(v, ui) {
  const verdict = v.crashed
    ? h("p", { class: "verdict bad" }, h("strong", {}, "The kernel crashed"))
    : h("p", { class: `verdict ${v.title ? "warn" : "good"}` }, v.title ? `Special crash only: ${v.title}` : "No crash reproduced");
  const out = [
    verdict,
    facts([
      ["Image ability", v.image_ability ? h("span", { class: `ability ability-${v.image_ability}` }, v.image_ability) : ""],
      ["Acceleration", v.accel ? v.accel.toUpperCase() : ""],
      ["VM boots", v.boots !== undefined ? String(v.boots) : ""],
      ["Run time", duration(v.seconds)],
      ["Summary", v.message],
      ["syzkaller", v.syzkaller_commit ? h("code", {}, v.syzkaller_commit) : ""],
    ], "facts inline"),
  ];
  const crashes = v.crashes || [];
  if (crashes.length) {
    out.push(h("h4", {}, crashes.length === 1 ? "Crash" : `Crashes (${crashes.length})`));
    crashes.forEach((c, i) => out.push(crashView(c, i === 0, ui)));
  }
  return out;
}

function patchCheckResult(v) {
  const verdicts = v.verdicts || [];
  return h(
    "table",
    { class: "data" },
    h("caption", {}, "Candidate patches"),
    h("thead", {}, h("tr", {}, ["#", "Applies", "Compiles", "Files", "Changed functions", "Time", "Error"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      verdicts.map((p, i) =>
        h(
          "tr",
          {},
          h("td", {}, String(i)),
          h("td", {}, p.applies ? "yes" : h("strong", { class: "bad" }, "no")),
          h("td", {}, p.applies ? (p.compiles ? "yes" : h("strong", { class: "bad" }, "no")) : "—"),
          h("td", {}, (p.files || []).join(", ")),
          h(
            "td",
            {},
            (p.functions || []).length
              ? h(
                  "details",
                  {},
                  h("summary", {}, String(p.functions.length)),
                  h("ul", {}, p.functions.map((f) => h("li", {}, h("code", {}, f.function), ` (${f.object}) ${f.before ?? "new"} → ${f.after ?? "gone"} instructions`))),
                )
              : "0",
          ),
          h("td", {}, duration(p.seconds)),
          h("td", {}, p.error ? h("pre", { class: "detail" }, p.error) : ""),
        ),
      ),
    ),
  );
}

function resultView(kind, result, ui) {
  const v = result.value;
  if (v === null || v === undefined) return [];
  try {
    if (kind === "build") return buildResult(v, ui);
    if (kind === "reproduce") return reproduceResult(v, ui);
    if (kind === "patch-check") return patchCheckResult(v);
  } catch (e) {
    // A result of another shape (an older or newer worker): show it as data.
    ui.alert(`Could not read the ${kind} result: ${e.message}`);
  }
  return h("div", { class: "generic" }, h("h4", {}, "Result"), jsonView(v));
}

/** The labels a stage requires of its worker, as `k=v,k=v` ("" for none). */
function poolOf(spec) {
  return Object.entries(spec.labels || {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

/** One stage: header, failure, result, argument. */
export function stageView(job, i, ui) {
  const spec = job.stages[i];
  const r = job.results[i];
  const [state, cls] = stageState(job, i);
  const running = state === "running";
  const took = r && r.started && r.finished ? duration(secondsBetween(r.started, r.finished)) : "";
  const header = h(
    "header",
    {},
    h(
      "h3",
      {},
      h("span", { class: "index" }, `Stage ${i}`),
      " ",
      h("span", { class: "kind" }, spec.kind),
      poolOf(spec) ? [" ", h("code", { class: "pool", title: "labels a worker needs to run this stage" }, poolOf(spec))] : "",
    ),
    h("span", { class: `badge st-${cls}` }, state),
    h(
      "span",
      { class: "meta" },
      r && r.worker ? ["on ", h("code", {}, r.worker)] : running && job.worker ? ["on ", h("code", {}, job.worker)] : "",
      took ? ` · took ${took}` : "",
      r && r.outcome === "success" && r.message ? ` · ${r.message}` : "",
      r && r.finished ? [" · ended ", timeEl(r.finished)] : "",
    ),
  );
  const body = [];
  if (r && r.failure) body.push(failureBox(r.failure));
  if (r) body.push(resultView(spec.kind, r, ui));
  body.push(
    h("details", { class: "args", dataset: { key: `args-${i}` } }, h("summary", {}, "Argument"), jsonView(spec.arg)),
  );
  if (r && r.value !== null && r.value !== undefined) {
    body.push(h("details", { class: "raw", dataset: { key: `raw-${i}` } }, h("summary", {}, "Result as JSON"), h("pre", {}, JSON.stringify(r.value, null, 2))));
  }
  return h("li", { class: `stage stage-${cls}`, id: `stage-${i}`, dataset: { stage: String(i), state } }, header, body);
}
