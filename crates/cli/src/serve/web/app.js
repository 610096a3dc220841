// imgpipe's page: a client of the public API, nothing more. Sign in with a pasted bearer
// token; drop or choose several files, each uploaded through the form POST /v1/uploads hands
// out (the same shape as an S3 presigned POST) with its progress shown, then followed until
// its record is final; browse, filter, open and delete the caller's images.
"use strict";

const TOKEN_KEY = "imgpipe.token";
const FINAL = new Set(["COMPLETE", "REJECTED", "FAILED"]);
const POLL_MS = 500;
const POLL_LIMIT_MS = 10 * 60 * 1000;
const PAGE_SIZE = 24;
// Uploads and thumbnail lookups at once: enough to keep a link busy, few enough that a
// hundred dropped files do not open a hundred connections.
const UPLOADS_AT_ONCE = 2;
const LOOKUPS_AT_ONCE = 4;
const TYPES_BY_EXTENSION = {
  jpg: "image/jpeg", jpeg: "image/jpeg", jpe: "image/jpeg", png: "image/png",
  webp: "image/webp", gif: "image/gif", tif: "image/tiff", tiff: "image/tiff", bmp: "image/bmp",
  heic: "image/heic", heif: "image/heif", hif: "image/heif", avif: "image/avif",
};

const $ = (id) => document.getElementById(id);
let token = null;
let listCursor = null;
// Full records (with download URLs) by id, for thumbnails and the detail view.
const records = new Map();
let openId = null;

class ApiFailure extends Error {
  constructor(status, body) {
    const what = body && body.message ? `${body.error}: ${body.message}` : `HTTP ${status}`;
    super(what);
    this.status = status;
    this.body = body;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

async function readBody(res) {
  const type = res.headers.get("content-type") || "";
  if (type.includes("json")) {
    try { return await res.json(); } catch (e) { return null; }
  }
  const text = await res.text();
  return text ? { error: `HTTP ${res.status}`, message: text.slice(0, 300) } : null;
}

// A call of the API with the bearer token; throws ApiFailure on any non-2xx answer.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  const body = res.status === 204 ? null : await readBody(res);
  if (!res.ok) throw new ApiFailure(res.status, body);
  return body;
}

// Runs `work` over `items`, `limit` at a time.
async function pool(items, limit, work) {
  const queue = items.slice();
  const runners = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await work(queue.shift());
  });
  await Promise.all(runners);
}

// The claims of a JWT, for display only: the server verifies the token on every call.
function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    return null;
  }
}

function setSignedIn(signedIn) {
  $("signin-section").hidden = signedIn;
  $("upload-section").hidden = !signedIn;
  $("images-section").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (!signedIn) {
    $("whoami").textContent = "Not signed in";
    $("whoami").dataset.user = "";
    $("gallery").replaceChildren();
    $("uploads").replaceChildren();
    records.clear();
  }
}

async function signIn(candidate) {
  $("signin-error").textContent = "";
  token = candidate.trim();
  if (!token) {
    $("signin-error").textContent = "Paste a token first.";
    token = null;
    return false;
  }
  try {
    // Any authenticated call tells whether the server accepts the token.
    await api("/v1/images?limit=1");
  } catch (e) {
    token = null;
    // Only a refused token is forgotten; a server that is down keeps it for next time.
    if (e instanceof ApiFailure && (e.status === 401 || e.status === 403)) {
      localStorage.removeItem(TOKEN_KEY);
    }
    setSignedIn(false);
    $("signin-error").textContent = `Sign-in failed: ${e.message}`;
    return false;
  }
  localStorage.setItem(TOKEN_KEY, token);
  const claims = claimsOf(token) || {};
  const groups = claims["cognito:groups"] || [];
  const admin = Array.isArray(groups) && groups.includes("admin");
  const who = claims.sub || claims.username || "unknown user";
  $("whoami").textContent = `Signed in as ${who}${admin ? " (admin)" : ""}`;
  $("whoami").dataset.user = who;
  $("token").value = "";
  setSignedIn(true);
  await loadImages(true);
  return true;
}

function signOut() {
  token = null;
  localStorage.removeItem(TOKEN_KEY);
  setSignedIn(false);
  $("token").focus();
}

async function loadPresets() {
  const select = $("preset");
  try {
    const body = await api("/v1/presets");
    const names = Object.keys(body.presets || {}).sort();
    select.replaceChildren(...names.map((name) => {
      const description = body.presets[name].description;
      return el("option", {
        value: name,
        textContent: description ? `${name} — ${description}` : name,
        selected: name === body.default,
      });
    }));
    select.dataset.loaded = "true";
    $("preset-help").textContent = `Default: ${body.default}`;
  } catch (e) {
    $("preset-help").textContent = `Cannot load presets: ${e.message}`;
  }
}

function contentTypeOf(file) {
  if (file.type) return file.type;
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  return TYPES_BY_EXTENSION[ext] || "";
}

function tagsOf(text) {
  return text.split(",").map((t) => t.trim()).filter(Boolean);
}

// ---- Uploads -------------------------------------------------------------------------

// One line of the upload list: name, status badge, progress bar, message.
function uploadRow(file) {
  const badge = el("span", { className: "badge", textContent: "waiting", dataset: { status: "WAITING" } });
  const bar = el("progress", { max: 100, value: 0 });
  bar.setAttribute("aria-label", `Upload of ${file.name}`);
  const message = el("span", { className: "message" });
  const item = el("li", { dataset: { status: "WAITING" } },
    el("span", { className: "name", textContent: file.name, title: file.name }), badge, bar, message);
  const set = (status, text, note = "") => {
    item.dataset.status = status;
    badge.dataset.status = status;
    badge.textContent = text;
    message.textContent = note;
  };
  return { item, bar, set };
}

// Posts the form exactly as handed out: its fields, then the file, as S3 requires, with
// XMLHttpRequest because fetch cannot report upload progress.
function postForm(form, file, onProgress) {
  return new Promise((resolve, reject) => {
    const data = new FormData();
    for (const [name, value] of Object.entries(form.fields)) data.append(name, value);
    data.append("file", file);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.url);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => resolve(xhr));
    xhr.addEventListener("error", () => reject(new Error("the connection failed")));
    xhr.addEventListener("abort", () => reject(new Error("the upload was stopped")));
    xhr.send(data);
  });
}

async function sendFile(form, file, row) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const xhr = await postForm(form, file, (share) => {
      row.bar.value = Math.round(share * 100);
    });
    if (xhr.status >= 200 && xhr.status < 300) {
      row.bar.value = 100;
      return;
    }
    if (xhr.status === 503) {
      const wait = Math.min(60, parseInt(xhr.getResponseHeader("Retry-After") || "5", 10) || 5);
      row.set("UPLOADING", "busy", `The server is busy; retrying in ${wait} s…`);
      await sleep(wait * 1000);
      row.bar.value = 0;
      continue;
    }
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
    throw new ApiFailure(xhr.status, body);
  }
  throw new Error("the server stayed busy; try again later");
}

// Polls the record until it is final.
// Whether a failed call is worth repeating: the server busy or briefly unreachable.
function transient(e) {
  return !(e instanceof ApiFailure) || [429, 502, 503, 504].includes(e.status);
}

async function follow(id, row) {
  const started = Date.now();
  for (;;) {
    let record;
    try {
      record = await api(`/v1/images/${encodeURIComponent(id)}`);
    } catch (e) {
      if (!transient(e) || Date.now() - started > POLL_LIMIT_MS) throw e;
      row.set(row.item.dataset.status, "waiting", `The server did not answer (${e.message}); asking again…`);
      await sleep(2000);
      continue;
    }
    if (FINAL.has(record.status)) return record;
    row.set(record.status, record.status.replace("_", " ").toLowerCase());
    if (Date.now() - started > POLL_LIMIT_MS) {
      throw new Error(`still ${record.status} after ${POLL_LIMIT_MS / 60000} minutes`);
    }
    await sleep(POLL_MS);
  }
}

async function uploadOne(file, row, preset, tags) {
  try {
    row.set("REQUESTING", "starting");
    const created = await api("/v1/uploads", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        filename: file.name,
        contentType: contentTypeOf(file),
        bytes: file.size,
        preset: preset || undefined,
        tags: tags.length ? tags : undefined,
      }),
    });
    row.item.dataset.imageId = created.imageId;
    row.set("UPLOADING", "uploading");
    await sendFile(created.upload, file, row);
    row.set("PROCESSING", "processing");
    const record = await follow(created.imageId, row);
    records.set(record.id, record);
    const error = record.error ? `${record.error.type}: ${record.error.message}` : "";
    row.set(record.status, record.status.toLowerCase(), error);
  } catch (e) {
    row.set("ERROR", "failed", e.message);
  }
}

async function uploadFiles(files) {
  if (!token || !files.length) return;
  const preset = $("preset").value;
  const tags = tagsOf($("tags").value);
  const rows = files.map((file) => ({ file, row: uploadRow(file) }));
  $("uploads").prepend(...rows.map((r) => r.row.item));
  await pool(rows, UPLOADS_AT_ONCE, async ({ file, row }) => {
    await uploadOne(file, row, preset, tags);
    // Each finished upload shows in the gallery at once.
    loadImages(true);
  });
}

function wireDrop() {
  const drop = $("drop");
  const over = (on) => (e) => {
    e.preventDefault();
    drop.classList.toggle("over", on);
  };
  drop.addEventListener("dragenter", over(true));
  drop.addEventListener("dragover", over(true));
  drop.addEventListener("dragleave", over(false));
  drop.addEventListener("drop", (e) => {
    over(false)(e);
    uploadFiles(Array.from(e.dataTransfer.files || []));
  });
  $("files").addEventListener("change", () => {
    uploadFiles(Array.from($("files").files));
    $("files").value = "";
  });
}

// ---- Gallery ---------------------------------------------------------------------------

function fileName(record) {
  const key = (record.source && record.source.key) || "";
  return key.split("/").pop() || record.id;
}

function smallest(renditions) {
  return renditions.find((r) => r.name === "thumb") ||
    renditions.slice().sort((a, b) => a.width * a.height - b.width * b.height)[0];
}

function filterParams() {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const status = $("filter-status").value;
  const tag = $("filter-tag").value.trim();
  // Dates are the viewer's own days: from the start of "From" to the end of "To".
  const since = $("filter-since").value;
  const until = $("filter-until").value;
  if (status) params.set("status", status);
  if (tag) params.set("tag", tag);
  if (since) params.set("since", new Date(`${since}T00:00:00`).toISOString());
  if (until) {
    const end = new Date(`${until}T00:00:00`);
    end.setDate(end.getDate() + 1);
    params.set("until", end.toISOString());
  }
  return params;
}

let loading = Promise.resolve();
function loadImages(fresh) {
  // One listing at a time, in order: finished uploads ask for many.
  loading = loading.then(() => listImages(fresh));
  return loading;
}

async function listImages(fresh) {
  if (!token) return;
  // "Show more" pressed again after the last page came.
  if (!fresh && !listCursor) return;
  $("images-error").textContent = "";
  if (fresh) {
    listCursor = null;
    // Download URLs last 15 minutes: a fresh listing asks for new ones.
    records.clear();
  }
  const params = filterParams();
  if (listCursor) params.set("cursor", listCursor);
  try {
    const page = await api(`/v1/images?${params}`);
    const cards = page.items.map(card);
    if (fresh) $("gallery").replaceChildren(...cards);
    else $("gallery").append(...cards);
    listCursor = page.cursor || null;
    $("images-more").hidden = !listCursor;
    const shown = $("gallery").children.length;
    $("images-empty").hidden = shown > 0;
    $("images-status").textContent = `${shown} image${shown === 1 ? "" : "s"} shown`;
    await pool(page.items.filter((r) => r.status === "COMPLETE"), LOOKUPS_AT_ONCE, thumbnail);
  } catch (e) {
    $("images-error").textContent = `Cannot list images: ${e.message}`;
  }
}

function card(record) {
  const name = fileName(record);
  const picture = el("div", { className: "thumb none", textContent: record.status === "COMPLETE" ? "" : "no preview" });
  // The picture's own colour until its thumbnail loads.
  if (record.dominantColor) {
    picture.style.backgroundColor = record.dominantColor;
    picture.dataset.placeholder = record.dominantColor;
  }
  const created = new Date(record.createdAt);
  const open = el("button", { type: "button", id: `open-${record.id}` },
    picture,
    el("span", { className: "caption" },
      el("span", { className: "name", textContent: name, title: name }),
      el("span", { className: "badge", textContent: record.status.replace("_", " ").toLowerCase(), dataset: { status: record.status } }),
      el("time", { dateTime: record.createdAt, textContent: created.toLocaleString() })));
  open.setAttribute("aria-label", `${name}, ${record.status.toLowerCase()}: open`);
  open.addEventListener("click", () => openDetail(record.id));
  return el("li", { className: "card", dataset: { imageId: record.id, status: record.status } }, open);
}

async function fullRecord(id) {
  if (!records.has(id)) records.set(id, await api(`/v1/images/${encodeURIComponent(id)}`));
  return records.get(id);
}

// Puts the image's smallest rendition in its card.
async function thumbnail(listed) {
  try {
    const record = await fullRecord(listed.id);
    const preview = smallest(record.renditions || []);
    const slot = document.querySelector(`.card[data-image-id="${CSS.escape(listed.id)}"] .thumb`);
    if (!slot || !preview || !preview.url) return;
    const img = el("img", { className: "thumb", src: preview.url, alt: `${fileName(record)} (${preview.name})`, loading: "lazy" });
    slot.replaceWith(img);
  } catch (e) {
    // The card keeps its placeholder; the detail view will say what is wrong.
  }
}

// ---- Detail ----------------------------------------------------------------------------

async function openDetail(id) {
  let record;
  try {
    records.delete(id); // fresh download URLs
    record = await fullRecord(id);
  } catch (e) {
    $("images-error").textContent = `Cannot open ${id}: ${e.message}`;
    return;
  }
  openId = id;
  const name = fileName(record);
  $("detail").dataset.imageId = id;
  $("detail-name").textContent = name;
  const tags = (record.tags || []).length ? ` · tags: ${record.tags.join(", ")}` : "";
  $("detail-meta").replaceChildren(
    el("span", { className: "badge", textContent: record.status.toLowerCase(), dataset: { status: record.status } }),
    ` ${new Date(record.createdAt).toLocaleString()}${tags}`);
  $("detail-error").textContent = record.error ? `${record.error.type}: ${record.error.message}` : "";
  const stem = name.replace(/\.[^.]*$/, "");
  $("detail-renditions").replaceChildren(...(record.renditions || []).map((r) => {
    const ext = r.key.split(".").pop();
    const link = el("a", { id: `download-${r.name}`, href: r.url || "#", download: `${stem}-${r.name}.${ext}`, textContent: `Download ${r.name}` });
    return el("li", {},
      el("figure", {},
        el("img", { src: r.url || "", alt: `${name}, ${r.name} rendition`, loading: "lazy" }),
        el("figcaption", {},
          el("strong", { textContent: r.name }),
          ` — ${r.width}×${r.height} ${r.format}, ${r.bytes.toLocaleString()} bytes `,
          link)));
  }));
  $("confirm-delete").hidden = true;
  $("delete").hidden = false;
  $("links-form").hidden = record.status !== "COMPLETE";
  $("link-result").hidden = true;
  $("link-error").textContent = "";
  $("detail").showModal();
  $("detail-close").focus();
}

// ---- Links -----------------------------------------------------------------------------

// The transform parameters the links form describes, at a pixel ratio.
function linkParams(dpr) {
  const params = new URLSearchParams();
  params.set("w", String(Number($("link-width").value)));
  const height = $("link-height").value;
  if (height) params.set("h", String(Number(height)));
  const [fit, gravity] = $("link-crop").value.split("-");
  params.set("fit", fit);
  if (gravity) params.set("gravity", gravity);
  params.set("fmt", $("link-format").value);
  if (dpr > 1) params.set("dpr", String(dpr));
  return params.toString();
}

const escapeAttr = (s) => s.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");

async function makeLinks() {
  const id = openId;
  if (!id) return;
  $("link-error").textContent = "";
  $("link-copied").textContent = "";
  $("link-make").disabled = true;
  try {
    const expiresIn = Number($("link-ttl").value);
    const [one, two] = await Promise.all([1, 2].map((dpr) => api(`/v1/images/${encodeURIComponent(id)}/links`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ params: linkParams(dpr), expiresIn }),
    })));
    const width = Number($("link-width").value);
    const height = $("link-height").value ? ` height="${Number($("link-height").value)}"` : "";
    const alt = escapeAttr($("detail-name").textContent.replace(/\.[^.]*$/, ""));
    $("link-snippet").value =
      `<img src="${escapeAttr(one.url)}"\n     srcset="${escapeAttr(one.url)} 1x, ${escapeAttr(two.url)} 2x"\n` +
      `     width="${width}"${height} alt="${alt}" loading="lazy">`;
    $("link-open").href = one.url;
    $("link-result").hidden = false;
    $("link-snippet").dataset.expires = one.expiresAt;
  } catch (e) {
    $("link-error").textContent = `Cannot make links: ${e.message}`;
  } finally {
    $("link-make").disabled = false;
  }
}

async function copySnippet() {
  const text = $("link-snippet").value;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    // No clipboard permission (plain http beyond localhost): select it for Ctrl-C instead.
    $("link-snippet").select();
    document.execCommand("copy");
  }
  $("link-copied").textContent = "Copied";
}

function closeDetail() {
  $("detail").close();
  openId = null;
}

async function deleteOpen() {
  const id = openId;
  if (!id) return;
  const name = $("detail-name").textContent;
  try {
    await api(`/v1/images/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (e) {
    $("detail-error").textContent = `Cannot delete: ${e.message}`;
    return;
  }
  records.delete(id);
  closeDetail();
  const cardItem = document.querySelector(`.card[data-image-id="${CSS.escape(id)}"]`);
  if (cardItem) cardItem.remove();
  $("images-status").textContent = `Deleted ${name}`;
  $("images-empty").hidden = $("gallery").children.length > 0;
}

document.addEventListener("DOMContentLoaded", () => {
  setSignedIn(false);
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value);
  });
  $("sign-out").addEventListener("click", signOut);
  $("upload-form").addEventListener("submit", (e) => e.preventDefault());
  wireDrop();
  $("filter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    loadImages(true);
  });
  $("filter-clear").addEventListener("click", () => {
    $("filter-form").reset();
    loadImages(true);
  });
  $("images-more").addEventListener("click", () => loadImages(false));
  $("detail-close").addEventListener("click", closeDetail);
  $("detail").addEventListener("close", () => { openId = null; });
  $("delete").addEventListener("click", () => {
    $("delete").hidden = true;
    $("confirm-delete").hidden = false;
    $("delete-no").focus();
  });
  $("delete-no").addEventListener("click", () => {
    $("confirm-delete").hidden = true;
    $("delete").hidden = false;
    $("delete").focus();
  });
  $("delete-yes").addEventListener("click", deleteOpen);
  $("links-form").addEventListener("submit", (e) => {
    e.preventDefault();
    makeLinks();
  });
  $("link-copy").addEventListener("click", copySnippet);
  loadPresets();
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
});
