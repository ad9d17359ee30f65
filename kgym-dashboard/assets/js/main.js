// The dashboard's shell: client-side routing between the pages, the
// header (navigation, token), alerts, relative times kept fresh.

import { askToken, initAuth } from "./auth.js";
import { h, replace } from "./dom.js";
import { refreshTimes } from "./format.js";
import * as jobs from "./pages/jobs.js";
import * as job from "./pages/job.js";
import * as workers from "./pages/workers.js";
import * as overview from "./pages/overview.js";

/** Errors nobody caught, newest last (also shown as alerts). */
window.kgymErrors = [];

const ROUTES = [
  { page: "jobs", pattern: /^\/$/, module: jobs },
  { page: "jobs", pattern: /^\/ui\/?$/, module: jobs },
  { page: "job", pattern: /^\/ui\/job\/([0-9a-fA-F]{1,16})\/?$/, module: job },
  { page: "workers", pattern: /^\/ui\/workers\/?$/, module: workers },
  { page: "overview", pattern: /^\/ui\/overview\/?$/, module: overview },
];

const main = document.getElementById("main");
let current = null;
let renders = 0;

/** Shows a message in the alert area; `kind` is "error" or "info". */
export function showAlert(message, kind = "error") {
  const box = document.getElementById("alerts");
  for (const old of box.querySelectorAll(".alert")) {
    if (old.dataset.message === message) old.remove();
  }
  const close = h("button", { type: "button", class: "close", "aria-label": "Dismiss" }, "×");
  const alert = h("div", { class: `alert ${kind}`, dataset: { message } }, h("span", {}, message), close);
  close.addEventListener("click", () => alert.remove());
  box.append(alert);
  if (kind === "info") setTimeout(() => alert.remove(), 6000);
}

function clearAlerts() {
  replace(document.getElementById("alerts"));
}

function route(path) {
  for (const r of ROUTES) {
    const m = path.match(r.pattern);
    if (m) return { ...r, params: m.slice(1) };
  }
  return null;
}

/** Shows the page of the current URL. */
function render(focus) {
  if (current) {
    current.controller.abort();
    if (current.cleanup) current.cleanup();
  }
  const found = route(location.pathname);
  for (const a of document.querySelectorAll("nav.pages a")) {
    if (found && a.dataset.page === found.page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const controller = new AbortController();
  const page = { controller, cleanup: null, refused: false };
  current = page;
  if (!found) {
    document.title = "Not found · kgym";
    replace(main, h("h1", {}, "Not found"), h("p", {}, "No page here. ", h("a", { href: "/" }, "See the jobs.")));
    return;
  }
  const ctx = {
    signal: controller.signal,
    params: found.params,
    query: new URLSearchParams(location.search),
    title: (t) => (document.title = `${t} · kgym`),
    navigate,
    alert: showAlert,
    // Called by a page once its data is on screen (User Timing, for the
    // performance check and the browser's own tools).
    rendered: (what) => {
      renders += 1;
      performance.mark("kgym:rendered", { detail: { page: found.page, what, n: renders } });
    },
    failed: (e) => failed(e, controller.signal, page),
  };
  replace(main);
  const cleanup = found.module.mount(main, ctx);
  page.cleanup = typeof cleanup === "function" ? cleanup : null;
  if (focus) {
    const h1 = main.querySelector("h1");
    (h1 || main).setAttribute("tabindex", "-1");
    (h1 || main).focus({ preventScroll: false });
  }
}

/** Goes to `url` (same origin) without reloading. */
export function navigate(url, { replaceState = false } = {}) {
  const target = new URL(url, location.href);
  if (replaceState) history.replaceState(null, "", target);
  else history.pushState(null, "", target);
  clearAlerts();
  render(!replaceState);
}

/** A page's data did not load: say why (and ask for a token when that is why). */
function failed(e, signal, page) {
  if (e && e.name === "AbortError") return;
  if (signal && signal.aborted) return;
  showAlert(e && e.message ? e.message : String(e));
  if (e && e.unauthorized && page && !page.refused) {
    page.refused = true;
    askToken("This server keeps its data private: enter its token to read it.");
  }
}

function isPageLink(a, event) {
  if (!a || event.defaultPrevented || event.button !== 0) return false;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return false;
  if (a.target || a.hasAttribute("download")) return false;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return false;
  return url.pathname === "/" || (url.pathname.startsWith("/ui") && !url.pathname.startsWith("/ui/assets/"));
}

document.addEventListener("click", (event) => {
  const a = event.target.closest && event.target.closest("a[href]");
  if (!isPageLink(a, event)) return;
  event.preventDefault();
  navigate(a.href);
});

window.addEventListener("popstate", () => render(true));

// A token entered after a page was refused its data loads the page again.
window.addEventListener("kgym:token", () => {
  if (current && current.refused) render(false);
});

window.addEventListener("error", (event) => {
  window.kgymErrors.push(String(event.message));
  showAlert(`Dashboard error: ${event.message}`);
});
window.addEventListener("unhandledrejection", (event) => {
  const reason = event.reason;
  if (reason && reason.name === "AbortError") return;
  window.kgymErrors.push(String(reason && reason.message ? reason.message : reason));
  showAlert(`Dashboard error: ${reason && reason.message ? reason.message : reason}`);
});

setInterval(() => refreshTimes(main), 15_000);

initAuth();
render(false);

export { askToken };
