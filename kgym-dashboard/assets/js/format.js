// How times, durations, sizes and statuses read on the page.

import { h } from "./dom.js";

const STATUS_LABELS = {
  pending: "pending",
  waiting: "waiting",
  in_progress: "running",
  finished: "finished",
  aborted: "aborted",
  failed: "failed",
};

/** The statuses of the API, in the order a job goes through them. */
export const STATUSES = ["pending", "waiting", "in_progress", "finished", "aborted"];

/** The word shown for a status. */
export function statusLabel(status) {
  return STATUS_LABELS[status] || status;
}

/** A coloured status badge (the colour is never the only cue: the word is there). */
export function statusBadge(status, title) {
  return h("span", { class: `badge st-${status}`, title }, statusLabel(status));
}

function plural(n, unit) {
  return `${n} ${unit}`;
}

/** "12 s ago", "5 min ago", "in 30 s": `iso` relative to now. */
export function relTime(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const secs = Math.round((now - t) / 1000);
  const abs = Math.abs(secs);
  let text;
  if (abs < 5) return "just now";
  if (abs < 60) text = plural(abs, "s");
  else if (abs < 3600) text = plural(Math.floor(abs / 60), "min");
  else if (abs < 86400) text = plural(Math.floor(abs / 3600), "h");
  else if (abs < 86400 * 60) text = plural(Math.floor(abs / 86400), "d");
  else return absTime(iso);
  return secs >= 0 ? `${text} ago` : `in ${text}`;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** The local time as `2026-11-30 13:05:12`. */
export function absTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The local time in the form `<input type=datetime-local>` takes. */
export function toLocalInput(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** An `<input type=datetime-local>` value as an RFC 3339 UTC time. */
export function fromLocalInput(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** A `<time>` showing the relative time, the absolute one on hover; refreshed by main.js. */
export function timeEl(iso) {
  if (!iso) return "";
  return h("time", { datetime: iso, title: absTime(iso), class: "rel" }, relTime(iso));
}

/** Refreshes every relative time under `root`. */
export function refreshTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time.rel")) el.textContent = relTime(el.getAttribute("datetime"), now);
}

/** "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min". */
export function duration(seconds) {
  if (seconds === undefined || seconds === null || Number.isNaN(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

/** Seconds between two RFC 3339 times. */
export function secondsBetween(from, to) {
  const a = Date.parse(from);
  const b = Date.parse(to);
  return Number.isNaN(a) || Number.isNaN(b) ? undefined : (b - a) / 1000;
}

/** "512 B", "1.4 KiB", "23.0 MiB". */
export function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** 100000 → "100,000". */
export function count(n) {
  return Number(n).toLocaleString("en-US");
}
