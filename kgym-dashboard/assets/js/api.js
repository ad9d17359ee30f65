// The public JSON API under /api/v1, as the dashboard uses it. Every call
// carries the tab's token (when one is set); errors become ApiError with
// the server's code and message.

import { getToken } from "./auth.js";
import { readEvents } from "./sse.js";

const BASE = "/api/v1";

/** An error answer (or no answer) from the server. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
  }

  /** The server wants a (right) token. */
  get unauthorized() {
    return this.status === 401 || this.status === 403;
  }
}

function headers(json) {
  const h = new Headers();
  const token = getToken();
  if (token) h.set("Authorization", `Bearer ${token}`);
  if (json) h.set("Content-Type", "application/json");
  return h;
}

/** `?a=1&b=2` from an object, leaving out empty values. */
export function queryString(query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") params.set(k, String(v));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON: the status says enough.
  }
  const code = (body && body.code) || `http-${resp.status}`;
  let message = (body && (body.error || body.detail)) || resp.statusText || `HTTP ${resp.status}`;
  if (resp.status === 401 || resp.status === 403) {
    message = getToken()
      ? `the server refused this tab's token: ${message}`
      : `the server needs a token: ${message}`;
  }
  return new ApiError(resp.status, code, message, body);
}

async function send(method, path, { query, body, signal } = {}) {
  const init = { method, headers: headers(body !== undefined), signal, cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(BASE + path + queryString(query), init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `cannot reach the server (${e.message})`, null);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

async function json(method, path, options) {
  const resp = await send(method, path, options);
  return resp.json();
}

/** The path of a job (its id as 8 hex digits). */
function jobPath(id) {
  return `/jobs/${encodeURIComponent(id)}`;
}

/** A page of job summaries: `{items, start, total, next}`. */
export const listJobs = (query, signal) => json("GET", "/jobs", { query, signal });
/** Jobs per status among those `query` selects. */
export const jobCounts = (query, signal) => json("GET", "/jobs/counts", { query, signal });
/** One job with its stages and results. */
export const getJob = (id, signal) => json("GET", jobPath(id), { signal });
/** A page of a job's log. */
export const jobLog = (id, query, signal) => json("GET", `${jobPath(id)}/log`, { query, signal });
/** A job's artifacts: `[{key, size}]`. */
export const jobArtifacts = (id, signal) => json("GET", `${jobPath(id)}/artifacts`, { signal });
/** The worker roster. */
export const workers = (signal) => json("GET", "/workers", { signal });
/** A page of the system log. */
export const systemLog = (query, signal) => json("GET", "/system/log", { query, signal });
/** Statistics since a time. */
export const stats = (query, signal) => json("GET", "/stats", { query, signal });

/** Aborts a job; answers the job. */
export const abortJob = (id) => json("POST", `${jobPath(id)}/abort`);
/** Restarts a job from stage `from` (default: where it stopped). */
export const restartJob = (id, from) => json("POST", `${jobPath(id)}/restart`, { query: { from } });
/** Replaces a job's tags. */
export const setTags = (id, tags) => json("PUT", `${jobPath(id)}/tags`, { body: tags });

/** The URL of an artifact (a link; see `openArtifact` for tokens). */
export function artifactUrl(key) {
  return `${BASE}/artifacts/${key.split("/").map(encodeURIComponent).join("/")}`;
}

/** An artifact as text (reports, logs). */
export async function artifactText(key, signal) {
  const resp = await send("GET", `/artifacts/${key.split("/").map(encodeURIComponent).join("/")}`, { signal });
  return resp.text();
}

/**
 * Opens an artifact in a new tab with the token (a plain link cannot send
 * the header): fetched, then shown from a blob URL.
 */
export async function openArtifact(key, name) {
  const win = window.open("", "_blank");
  try {
    const resp = await send("GET", `/artifacts/${key.split("/").map(encodeURIComponent).join("/")}`);
    const blob = await resp.blob();
    const url = URL.createObjectURL(blob);
    const text = (blob.type || "").startsWith("text/") || (blob.type || "").includes("json");
    if (text && win) {
      win.location.href = url;
    } else {
      if (win) win.close();
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.click();
    }
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (e) {
    if (win) win.close();
    throw e;
  }
}

/**
 * Watches a job: calls `onEvent` with each JobEvent (`{event: "status"|"log", ...}`)
 * until the job ends or `signal` aborts; reconnects when the stream drops.
 * Resolves once a terminal status arrived (or on abort); rejects on an
 * error answer (401, 404).
 */
export async function watchJob(id, onEvent, signal) {
  let delay = 500;
  for (;;) {
    if (signal && signal.aborted) return;
    let resp;
    try {
      resp = await send("GET", `${jobPath(id)}/events`, { signal });
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e.status) throw e;
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10_000);
      continue;
    }
    try {
      for await (const ev of readEvents(resp.body)) {
        if (ev.event !== "job") continue;
        delay = 500;
        const data = JSON.parse(ev.data);
        onEvent(data);
        if (data.event === "status" && (data.status === "finished" || data.status === "aborted")) return;
      }
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10_000);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });
}
