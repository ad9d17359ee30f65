// Small DOM helpers: elements from plain data, without HTML strings (so
// nothing from the API is ever parsed as markup).

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "value" && "value" in el) el.value = value;
    else if (key === "checked" || key === "selected" || key === "disabled") el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: `h("a", {href: "/", class: "x"}, "text", otherNode)`. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element (same arguments as `h`). */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A definition list from [term, description] pairs (pairs with an empty description are left out). */
export function facts(pairs, cls = "facts") {
  const dl = h("dl", { class: cls });
  for (const [term, desc] of pairs) {
    if (desc === undefined || desc === null || desc === "") continue;
    dl.append(h("dt", {}, term), h("dd", {}, desc));
  }
  return dl;
}

/** A section with a heading, labelled by it. */
let sectionIds = 0;
export function section(title, attrs, ...children) {
  const id = `sec-${++sectionIds}`;
  return h("section", { "aria-labelledby": id, ...attrs }, h("h2", { id }, title), ...children);
}

/** A paragraph saying there is nothing to show. */
export function empty(text) {
  return h("p", { class: "empty" }, text);
}
