// The API token: asked for in a dialog, kept in sessionStorage (this tab
// only, gone when it closes), sent as `Authorization: Bearer` by api.js.

const KEY = "kgym.token";

/** The token of this tab, or "". */
export function getToken() {
  try {
    return sessionStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

function store(token) {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: the token lives as long as the page.
  }
  showState();
  window.dispatchEvent(new CustomEvent("kgym:token", { detail: { set: Boolean(token) } }));
}

function showState() {
  const state = document.getElementById("auth-state");
  const button = document.getElementById("auth-button");
  if (!state || !button) return;
  const set = Boolean(getToken());
  state.textContent = set ? "Token set" : "No token";
  state.className = set ? "token-set" : "token-none";
  button.textContent = set ? "Change token" : "Set token";
}

let pending = null;

/**
 * Opens the token dialog with `reason` (why it is asked); resolves to true
 * when a token was saved, false otherwise.
 */
export function askToken(reason) {
  const dialog = document.getElementById("token-dialog");
  if (pending) return pending;
  const why = document.getElementById("token-why");
  if (reason) why.textContent = reason;
  const input = document.getElementById("token-input");
  input.value = getToken();
  pending = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        pending = null;
        const choice = dialog.returnValue;
        if (choice === "save" && input.value.trim()) {
          store(input.value.trim());
          resolve(true);
        } else {
          if (choice === "forget") store("");
          resolve(false);
        }
        input.value = "";
      },
      { once: true },
    );
  });
  dialog.showModal();
  input.focus();
  return pending;
}

/** Wires the header's token button. */
export function initAuth() {
  showState();
  document.getElementById("auth-button").addEventListener("click", () => askToken());
}
