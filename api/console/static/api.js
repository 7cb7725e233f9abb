// Calls to the API's own routes, with the admin key this tab signed in with (none on a
// loopback console without keys), and errors shown as the API words them.

const KEY = "swipeloop.key";

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export const $ = (selector, root = document) => root.querySelector(selector);

export async function call(method, path, { query, body, accept = [] } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok && !accept.includes(response.status)) {
    const detail = data && typeof data.detail === "string" ? data.detail : response.statusText;
    throw new ApiError(response.status, detail || "request failed");
  }
  return data;
}

export function showError(error) {
  const box = $("#error");
  // the API's own words (its `detail`); never a stack: a script error shows its message only
  box.textContent = error instanceof ApiError ? error.message : String(error.message || error);
  box.hidden = false;
}

export function clearError() {
  const box = $("#error");
  box.hidden = true;
  box.textContent = "";
}

export function notice(text) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = false;
}

// Run an action, showing its error (and clearing the last one) instead of throwing.
export async function guarded(action) {
  clearError();
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// An element: el("td", { class: "x", dataset: { tag: "food" } }, "text", child, ...)
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Replace a table body's rows: each row a list of cells (text or nodes).
export function fill(tbody, rows, empty = "none") {
  tbody.replaceChildren();
  if (!rows.length) {
    const columns = tbody.closest("table")?.querySelectorAll("thead th").length || 1;
    tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty)));
  }
  for (const row of rows) tbody.append(el("tr", {}, row.map((cell) => el("td", {}, cell))));
}

export function fixed(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "—";
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

// A version 4 UUID, also where crypto.randomUUID is not offered (a page not on https).
export function uuid4() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

document.getElementById("sign-out")?.addEventListener("click", () => sessionStorage.removeItem(KEY));
