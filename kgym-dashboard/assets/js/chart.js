// Charts drawn as inline SVG: stacked vertical bars (a time series) and
// grouped horizontal bars (a few labelled values). Each chart is a figure
// with a caption, a title on every bar and its data as a table for screen
// readers and for copying.

import { h, s } from "./dom.js";

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten. */
export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function dataTable(caption, head, rows) {
  return h(
    "details",
    { class: "chart-data" },
    h("summary", {}, "Show the numbers"),
    h(
      "table",
      { class: "data" },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
    ),
  );
}

/**
 * Stacked vertical bars. `bars`: [{label, tick, values: [number...], title}];
 * `series`: [{name, cls}] (one per value, bottom first); `tick` is a short
 * axis label shown when set.
 */
export function stackedBars({ caption, summary, bars, series, width = 900, height = 180 }) {
  const pad = { left: 40, right: 8, top: 10, bottom: 28 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const total = (b) => b.values.reduce((a, v) => a + v, 0);
  const max = niceMax(Math.max(0, ...bars.map(total)));
  const step = innerW / Math.max(1, bars.length);
  const barW = Math.max(1, step * 0.8);
  const y = (v) => pad.top + innerH - (v / max) * innerH;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": summary,
  });
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    svg.append(
      s("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: pad.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(Math.round(v))),
    );
  }
  bars.forEach((b, i) => {
    const x = pad.left + i * step + (step - barW) / 2;
    const g = s("g", { class: "bar" }, s("title", {}, b.title));
    let acc = 0;
    b.values.forEach((v, k) => {
      if (v <= 0) return;
      g.append(s("rect", { x, width: barW, y: y(acc + v), height: y(acc) - y(acc + v), class: series[k].cls }));
      acc += v;
    });
    // A transparent full-height target so thin bars still show their title.
    g.append(s("rect", { x: pad.left + i * step, width: step, y: pad.top, height: innerH, class: "hit" }));
    svg.append(g);
    if (b.tick) {
      svg.append(s("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle" }, b.tick));
    }
  });
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((se) => h("li", {}, h("span", { class: `swatch ${se.cls}`, "aria-hidden": "true" }), se.name)),
  );
  const rows = bars.filter((b) => total(b) > 0).map((b) => [b.label, ...b.values.map(String)]);
  return h(
    "figure",
    { class: "chart-figure" },
    svg,
    h("figcaption", {}, caption, legend),
    dataTable(caption, ["", ...series.map((se) => se.name)], rows),
  );
}

/**
 * Grouped horizontal bars: `groups`: [{label, values: [number...]}],
 * `series`: [{name, cls}], values formatted by `format`.
 */
export function groupedBars({ caption, summary, groups, series, format, width = 900 }) {
  const rowH = 16;
  const gap = 14;
  const pad = { left: 120, right: 90, top: 6 };
  const groupH = series.length * rowH + gap;
  const height = pad.top + groups.length * groupH;
  const max = Math.max(0, ...groups.flatMap((g) => g.values));
  const scale = (v) => (max > 0 ? (v / max) * (width - pad.left - pad.right) : 0);
  const svg = s("svg", { viewBox: `0 0 ${width} ${Math.max(height, 20)}`, class: "chart", role: "img", "aria-label": summary });
  groups.forEach((g, i) => {
    const top = pad.top + i * groupH;
    svg.append(
      s("text", { x: pad.left - 10, y: top + (series.length * rowH) / 2 + 4, class: "label", "text-anchor": "end" }, g.label),
    );
    g.values.forEach((v, k) => {
      const yy = top + k * rowH;
      const w = Math.max(1, scale(v));
      svg.append(
        s(
          "g",
          { class: "bar" },
          s("title", {}, `${g.label} ${series[k].name}: ${format(v)}`),
          s("rect", { x: pad.left, y: yy + 1, width: w, height: rowH - 3, class: series[k].cls }),
          s("text", { x: pad.left + w + 6, y: yy + rowH - 4, class: "axis" }, format(v)),
        ),
      );
    });
  });
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((se) => h("li", {}, h("span", { class: `swatch ${se.cls}`, "aria-hidden": "true" }), se.name)),
  );
  const rows = groups.map((g) => [g.label, ...g.values.map(format)]);
  return h(
    "figure",
    { class: "chart-figure" },
    svg,
    h("figcaption", {}, caption, legend),
    dataTable(caption, ["", ...series.map((se) => se.name)], rows),
  );
}
