// Building the page from FHIR data: text nodes only, never HTML, so nothing a record
// holds (a patient's name, a result's note) can run as script.

/** An element with attributes (strings, or event handlers for on* keys) and
 * children (nodes or strings, which become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, ...children);
  return node;
}

export function append(node, ...children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

export function $(id) {
  return document.getElementById(id);
}

/** A table with a header row and one row per item; cells are strings or nodes. */
export function table(headers, rows, className = "") {
  return el("table", { class: className },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((cells) => {
      const tr = el("tr");
      for (const cell of cells) tr.append(el("td", {}, cell));
      return tr;
    })));
}

/** Show a message in a status line: state is "ok", "busy" or "error". */
export function say(node, text, state = "ok") {
  node.textContent = text;
  node.dataset.state = state;
}
