// imgpipe's page: a client of the public API, nothing more. Sign in with a pasted bearer
// token, upload through the form POST /v1/uploads returns (the same shape as an S3 presigned
// POST), poll the record, show the renditions, list the caller's images.
"use strict";

const TOKEN_KEY = "imgpipe.token";
const FINAL = new Set(["COMPLETE", "REJECTED", "FAILED"]);
const POLL_MS = 500;
const POLL_LIMIT_MS = 10 * 60 * 1000;
const PAGE_SIZE = 10;
const TYPES_BY_EXTENSION = {
  jpg: "image/jpeg", jpeg: "image/jpeg", jpe: "image/jpeg", png: "image/png",
  webp: "image/webp", gif: "image/gif", tif: "image/tiff", tiff: "image/tiff", bmp: "image/bmp",
  heic: "image/heic", heif: "image/heif", hif: "image/heif", avif: "image/avif",
};

const $ = (id) => document.getElementById(id);
let token = null;
let listCursor = null;

class ApiFailure extends Error {
  constructor(status, body) {
    const what = body && body.message ? `${body.error}: ${body.message}` : `HTTP ${status}`;
    super(what);
    this.status = status;
    this.body = body;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
  $("upload").disabled = !signedIn;
  $("images-refresh").disabled = !signedIn;
  $("sign-out").disabled = !signedIn;
  if (!signedIn) {
    $("whoami").textContent = "Not signed in";
    $("whoami").dataset.user = "";
    $("images-list").replaceChildren();
    $("images-more").hidden = true;
    $("images-empty").hidden = true;
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
    localStorage.removeItem(TOKEN_KEY);
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
  setSignedIn(true);
  await loadImages(true);
  return true;
}

function signOut() {
  token = null;
  localStorage.removeItem(TOKEN_KEY);
  $("token").value = "";
  setSignedIn(false);
}

async function loadPresets() {
  const select = $("preset");
  try {
    const body = await api("/v1/presets");
    const names = Object.keys(body.presets || {}).sort();
    select.replaceChildren(...names.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      const description = body.presets[name].description;
      option.textContent = description ? `${name} — ${description}` : name;
      option.selected = name === body.default;
      return option;
    }));
    select.dataset.loaded = "true";
    $("preset-help").textContent = `Default: ${body.default}`;
  } catch (e) {
    $("preset-help").textContent = `Cannot load presets: ${e.message}`;
  }
}

function setStatus(text, status = "") {
  $("status").textContent = text;
  $("status").dataset.status = status;
}

function contentTypeOf(file) {
  if (file.type) return file.type;
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  return TYPES_BY_EXTENSION[ext] || "";
}

// Posts the form exactly as handed out: its fields, then the file, as S3 requires.
async function postForm(form, file) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const data = new FormData();
    for (const [name, value] of Object.entries(form.fields)) data.append(name, value);
    data.append("file", file);
    const res = await fetch(form.url, { method: "POST", body: data });
    if (res.ok) return;
    if (res.status === 503) {
      const wait = Math.min(60, parseInt(res.headers.get("Retry-After") || "5", 10) || 5);
      setStatus(`The server is busy; retrying in ${wait} s…`, "BUSY");
      await sleep(wait * 1000);
      continue;
    }
    throw new ApiFailure(res.status, await readBody(res));
  }
  throw new Error("the server stayed busy; try again later");
}

async function upload(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) {
    setStatus("Choose a file first.", "ERROR");
    return;
  }
  const contentType = contentTypeOf(file);
  $("upload").disabled = true;
  $("result").hidden = true;
  try {
    setStatus(`Asking to upload ${file.name}…`, "REQUESTING");
    const created = await api("/v1/uploads", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        filename: file.name,
        contentType,
        bytes: file.size,
        preset: $("preset").value || undefined,
      }),
    });
    setStatus(`Uploading ${file.name}…`, "UPLOADING");
    await postForm(created.upload, file);
    $("result").dataset.imageId = created.imageId;
    await follow(created.imageId);
  } catch (e) {
    setStatus(`Upload failed: ${e.message}`, "ERROR");
  } finally {
    $("upload").disabled = !token;
  }
  loadImages(true);
}

// Polls the record until it is final, then shows it.
async function follow(id) {
  const started = Date.now();
  for (;;) {
    const record = await api(`/v1/images/${encodeURIComponent(id)}`);
    if (FINAL.has(record.status)) {
      show(record);
      return record;
    }
    setStatus(`${record.status.replace("_", " ").toLowerCase()}…`, record.status);
    if (Date.now() - started > POLL_LIMIT_MS) {
      throw new Error(`still ${record.status} after ${POLL_LIMIT_MS / 60000} minutes`);
    }
    await sleep(POLL_MS);
  }
}

function fileName(record) {
  const key = (record.source && record.source.key) || "";
  return key.split("/").pop() || record.id;
}

function show(record) {
  const name = fileName(record);
  $("result").dataset.imageId = record.id;
  if (record.status !== "COMPLETE") {
    const error = record.error ? `${record.error.type}: ${record.error.message}` : "";
    setStatus(`${record.status}: ${name}${error ? ` — ${error}` : ""}`, record.status);
    $("result").hidden = true;
    return;
  }
  setStatus(`COMPLETE: ${name}`, "COMPLETE");
  const renditions = record.renditions || [];
  const preview = renditions.find((r) => r.name === "thumb") ||
    renditions.slice().sort((a, b) => a.width * a.height - b.width * b.height)[0];
  const thumb = $("thumb");
  if (preview && preview.url) {
    thumb.src = preview.url;
    thumb.alt = `${name}, ${preview.name} rendition`;
    thumb.hidden = false;
  } else {
    thumb.removeAttribute("src");
    thumb.hidden = true;
  }
  $("result-caption").textContent = `${name} (${record.id})`;
  $("downloads").replaceChildren(...renditions.map((r) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.id = `download-${r.name}`;
    link.href = r.url || "#";
    link.download = `${name.replace(/\.[^.]*$/, "")}-${r.name}.${r.key.split(".").pop()}`;
    link.textContent = `${r.name}`;
    item.append(link, ` — ${r.width}×${r.height} ${r.format}, ${r.bytes.toLocaleString()} bytes`);
    return item;
  }));
  $("result").hidden = false;
}

async function loadImages(fresh) {
  if (!token) return;
  $("images-error").textContent = "";
  if (fresh) listCursor = null;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (listCursor) params.set("cursor", listCursor);
  try {
    const page = await api(`/v1/images?${params}`);
    const rows = page.items.map(row);
    if (fresh) $("images-list").replaceChildren(...rows);
    else $("images-list").append(...rows);
    listCursor = page.cursor || null;
    $("images-more").hidden = !listCursor;
    $("images-empty").hidden = $("images-list").children.length > 0;
  } catch (e) {
    $("images-error").textContent = `Cannot list images: ${e.message}`;
  }
}

function row(record) {
  const tr = document.createElement("tr");
  tr.dataset.imageId = record.id;
  const cell = (text, className) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  };
  const actions = document.createElement("td");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.id = `show-${record.id}`;
  button.textContent = "Show";
  button.setAttribute("aria-label", `Show ${fileName(record)}`);
  button.addEventListener("click", async () => {
    try {
      const full = await api(`/v1/images/${encodeURIComponent(record.id)}`);
      show(full);
      $("result-heading").scrollIntoView({ block: "nearest" });
    } catch (e) {
      setStatus(`Cannot load ${record.id}: ${e.message}`, "ERROR");
    }
  });
  actions.append(button);
  tr.append(
    cell(fileName(record), "name"),
    cell(record.owner),
    cell(record.status),
    cell(new Date(record.createdAt).toLocaleString()),
    cell(String((record.renditions || []).length)),
    actions,
  );
  return tr;
}

document.addEventListener("DOMContentLoaded", () => {
  setSignedIn(false);
  $("signin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token").value);
  });
  $("sign-out").addEventListener("click", signOut);
  $("upload-form").addEventListener("submit", upload);
  $("images-refresh").addEventListener("click", () => loadImages(true));
  $("images-more").addEventListener("click", () => loadImages(false));
  loadPresets();
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved) {
    $("token").value = saved;
    signIn(saved);
  }
});
