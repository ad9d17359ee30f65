// The overview: jobs per status now, and over a window: jobs finished per
// hour, how long stages took per kind, the crash titles seen most often.

import { jobCounts, stats } from "../api.js";
import { groupedBars, stackedBars } from "../chart.js";
import { empty, h, replace, section } from "../dom.js";
import { STATUSES, count, duration, statusLabel } from "../format.js";

const WINDOWS = [
  ["24h", "last 24 hours", 24],
  ["7d", "last 7 days", 7 * 24],
  ["30d", "last 30 days", 30 * 24],
];
const HOUR = 3600 * 1000;

function hourLabel(d, withDay) {
  const hh = String(d.getHours()).padStart(2, "0");
  return withDay ? `${d.getMonth() + 1}/${d.getDate()} ${hh}:00` : `${hh}:00`;
}

function dayLabel(d) {
  return `${d.getMonth() + 1}/${d.getDate()}`;
}

/** Every hour of the window, with the API's counts where there are any. */
function hourlyBars(perHour, hours) {
  const now = Date.now();
  const first = Math.floor((now - (hours - 1) * HOUR) / HOUR) * HOUR;
  const byHour = new Map(perHour.map((c) => [Math.floor(Date.parse(c.hour) / HOUR) * HOUR, c]));
  const tickEvery = hours <= 24 ? 3 : hours <= 168 ? 24 : 24 * 5;
  const bars = [];
  for (let t = first; t <= now; t += HOUR) {
    const c = byHour.get(t) || { finished: 0, failed: 0 };
    const d = new Date(t);
    const ok = Math.max(0, c.finished - c.failed);
    bars.push({
      label: hourLabel(d, true),
      tick: tickEvery < 24 ? (d.getHours() % tickEvery === 0 ? hourLabel(d, false) : "") : d.getHours() === 0 && (t / (24 * HOUR)) % (tickEvery / 24) < 1 ? dayLabel(d) : "",
      values: [ok, c.failed],
      title: `${hourLabel(d, true)}: ${c.finished} finished, ${c.failed} with a failed stage`,
    });
  }
  return bars;
}

/** The overview page. */
export function mount(main, ctx) {
  ctx.title("Overview");
  const key = WINDOWS.some(([k]) => k === ctx.query.get("window")) ? ctx.query.get("window") : "24h";
  const [, label, hours] = WINDOWS.find(([k]) => k === key);
  const picker = h(
    "nav",
    { class: "window", "aria-label": "Time window" },
    WINDOWS.map(([k, l]) => h("a", { href: `/ui/overview?window=${k}`, class: "chip", "aria-current": k === key ? "true" : undefined }, l)),
  );
  const countsBox = h("div", { class: "cards" });
  const perHourBox = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const durationsBox = h("div", {});
  const titlesBox = h("div", {});
  replace(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Overview"), picker),
    section("Jobs now", {}, countsBox),
    section(`Jobs finished per hour, ${label}`, {}, perHourBox),
    section(`Stage durations, ${label}`, {}, durationsBox),
    section(`Crash titles seen most often, ${label}`, {}, titlesBox),
  );

  const since = new Date(Date.now() - hours * HOUR).toISOString();
  Promise.all([jobCounts({}, ctx.signal), stats({ since, top: 15 }, ctx.signal)])
    .then(([c, st]) => {
      replace(
        countsBox,
        STATUSES.map((s) =>
          h("a", { href: `/?status=${s}`, class: `card st-${s}` }, h("span", { class: "n" }, count(c[s] || 0)), h("span", {}, statusLabel(s))),
        ),
      );
      const bars = hourlyBars(st.finished_per_hour, hours);
      const finished = st.finished_per_hour.reduce((a, x) => a + x.finished, 0);
      const failed = st.finished_per_hour.reduce((a, x) => a + x.failed, 0);
      replace(
        perHourBox,
        h("p", { class: "summary" }, `${count(finished)} jobs finished, ${count(failed)} of them with a failed stage.`),
        stackedBars({
          caption: `Jobs finished per hour, ${label}`,
          summary: `Bar chart: ${finished} jobs finished in the ${label}, ${failed} with a failed stage.`,
          bars,
          series: [
            { name: "succeeded", cls: "s-ok" },
            { name: "with a failed stage", cls: "s-bad" },
          ],
        }),
      );
      const kinds = st.durations;
      replace(
        durationsBox,
        kinds.length
          ? groupedBars({
              caption: "Successful stages: median, 90th percentile and longest",
              summary: kinds.map((k) => `${k.kind}: median ${duration(k.p50_seconds)} over ${k.count} stages`).join("; "),
              groups: kinds.map((k) => ({ label: `${k.kind} (${count(k.count)})`, values: [k.p50_seconds, k.p90_seconds, k.max_seconds] })),
              series: [
                { name: "median", cls: "p50" },
                { name: "90th percentile", cls: "p90" },
                { name: "longest", cls: "pmax" },
              ],
              format: duration,
            })
          : empty("No stage ended in this window."),
      );
      replace(
        titlesBox,
        st.headlines.length
          ? h(
              "table",
              { class: "data titles" },
              h("caption", { class: "sr-only" }, "Crash titles seen most often"),
              h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Title"), h("th", { scope: "col", class: "num" }, "Seen"), h("th", { scope: "col" }, "Latest job"))),
              h(
                "tbody",
                {},
                st.headlines.map((t) =>
                  h(
                    "tr",
                    {},
                    h("td", { class: "crash" }, t.headline),
                    h("td", { class: "num" }, count(t.count)),
                    h("td", {}, h("a", { href: `/ui/job/${t.last_job}` }, t.last_job)),
                  ),
                ),
              ),
            )
          : empty("No crash title in this window."),
      );
      ctx.rendered("overview");
    })
    .catch(ctx.failed);
}
