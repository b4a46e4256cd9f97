// nemgan playground: a framework-free page over the public API (/v1/...). Every error box shows the API's
// own words ({"error": "..."}) with the HTTP status, so what a user sees here is what curl would print.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "style") e.style.cssText = v;  // CSSOM, which the page's CSP (no inline styles) allows
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
};

const state = { models: [], detail: null, genSeq: 0, job: null };

// ------------------------------------------------------------------ API access
class ApiError extends Error {
  constructor(status, body, text) {
    const msg = body && typeof body.error === "string" ? body.error : (text || "request failed").slice(0, 300);
    super(msg);
    this.status = status;
    this.body = body;
  }
}

async function api(path, { method = "GET", json, form } = {}) {
  const headers = {};
  let body;
  if (json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;  // the browser sets the multipart boundary
  }
  const key = $("#api-key").value.trim();
  if (key) headers.authorization = "Bearer " + key;
  let r;
  try {
    r = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new Error("cannot reach the API: " + e.message);
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, data, text);
  return data;
}

function showError(box, err) {
  box.replaceChildren();
  if (err instanceof ApiError) box.append(el("span", { class: "status", text: `HTTP ${err.status}` }));
  box.append(el("span", { class: "message", text: err.message }));
  box.hidden = false;
}

function clearError(box) { box.hidden = true; box.replaceChildren(); }

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

const currentModel = () => $("#model").value;
const currentVersion = () => $("#version").value;  // "" = the active version

// ------------------------------------------------------------------ models and versions
async function loadModels() {
  try {
    state.models = await api("/v1/models");
  } catch (e) {
    showError($("#global-error"), e);
    return;
  }
  const sel = $("#model");
  const keep = sel.value;
  sel.replaceChildren(...state.models.map((m) => el("option", { value: m.name, text: m.name })));
  if (!state.models.length) {
    showError($("#global-error"), new Error("the registry holds no model (seed one with NEMGAN_MODEL_DIRS)"));
    return;
  }
  const names = state.models.map((m) => m.name);
  sel.value = names.includes(keep) ? keep : (names.includes("mnist") ? "mnist" : names[0]);
  await loadDetail();
}

async function loadDetail({ regenerate = true } = {}) {
  const box = $("#versions-error");
  let d;
  try {
    d = await api(`/v1/models/${encodeURIComponent(currentModel())}`);
  } catch (e) {
    showError(box, e);
    return;
  }
  state.detail = d;
  const vsel = $("#version");
  const keep = vsel.value;
  vsel.replaceChildren(el("option", { value: "", text: `active (v${d.active_version})` }),
    ...d.versions.map((v) => el("option", { value: v, text: `v${v}` })));
  vsel.value = d.versions.includes(keep) ? keep : "";

  const msel = $("#gen-mode");
  const mkeep = msel.value;
  msel.replaceChildren(el("option", { value: "", text: "from the priors" }),
    ...(d.mode_labels || []).map((lab, i) => el("option", { value: String(i), text: lab })));
  msel.value = [...msel.options].some((o) => o.value === mkeep) ? mkeep : "";
  renderVersions(d);
  if (regenerate) generate();
}

function minibars(values) {
  const max = Math.max(...values, 1e-9);
  const box = el("span", { class: "minibars", title: values.map((v) => v.toFixed(3)).join(" ") });
  for (const v of values) box.append(el("span", { style: `height:${Math.max(1, (22 * v) / max)}px` }));
  return box;
}

function metricsText(m) {
  if (!m) return "";
  const out = [];
  if (m.cluster && m.cluster.acc != null) out.push(`ACC ${Number(m.cluster.acc).toFixed(3)}`);
  const pl = m.prior_learning;
  if (pl && pl.labeled_acc != null) out.push(`labeled ACC ${Number(pl.labeled_acc).toFixed(3)}`);
  return out.join(" · ");
}

function renderVersions(d) {
  const tbody = $("#versions-table tbody");
  tbody.replaceChildren(...[...d.details].reverse().map((v) => {
    const status = el("td", {}, el("span", { class: "badge" + (v.active ? " active" : ""),
      text: v.active ? "active" : "inactive" }), v.loaded ? " loaded" : "");
    const act = v.active ? "" : el("button", { type: "button", class: "activate", "data-version": v.version,
      text: "activate", onclick: () => activate(v.version) });
    return el("tr", { "data-version": v.version },
      el("td", { text: "v" + v.version }), status,
      el("td", { text: v.created ? v.created.replace("T", " ").slice(0, 19) : "" }),
      el("td", {}, v.priors ? minibars(v.priors) : ""),
      el("td", { text: metricsText(v.metrics) }),
      el("td", { text: v.job && v.job.id ? "job " + String(v.job.id).slice(0, 8) : "export" }),
      el("td", {}, act));
  }));
}

async function activate(version) {
  const box = $("#versions-error");
  clearError(box);
  try {
    await api(`/v1/models/${encodeURIComponent(currentModel())}/versions/${encodeURIComponent(version)}/activate`,
      { method: "POST" });
  } catch (e) {
    showError(box, e);
    return;
  }
  await loadDetail();
}

async function rollback() {
  const box = $("#versions-error");
  clearError(box);
  try {
    await api(`/v1/models/${encodeURIComponent(currentModel())}/rollback`, { method: "POST" });
  } catch (e) {
    showError(box, e);
    return;
  }
  await loadDetail();
}

// ------------------------------------------------------------------ generate
let genTimer = null;
function generateSoon() {
  clearTimeout(genTimer);
  genTimer = setTimeout(generate, 120);  // debounce slider drags
}

async function generate() {
  const seq = ++state.genSeq;
  const box = $("#gen-error");
  const req = { model: currentModel(), n: Number($("#gen-n").value), sigma: Number($("#gen-sigma").value),
                format: "json" };
  if (currentVersion()) req.version = currentVersion();
  const mode = $("#gen-mode").value;
  if (mode !== "") req.mode = Number(mode);
  const seed = $("#gen-seed").value.trim();
  if (seed !== "") req.seed = Number(seed);
  let res;
  try {
    res = await api("/v1/generate", { method: "POST", json: req });
  } catch (e) {
    if (seq === state.genSeq) showError(box, e);
    return;
  }
  if (seq !== state.genSeq) return;  // a newer request was sent meanwhile
  clearError(box);
  const grid = $("#gen-grid");
  grid.replaceChildren(...res.images.map((b64, i) => el("figure", {},
    el("img", { src: "data:image/png;base64," + b64, alt: "mode " + res.mode_labels[i] }),
    el("figcaption", { text: res.mode_labels[i] }))));
  $("#gen-meta").textContent = `${res.model} v${res.version} · seed ${res.seed} · ${res.n} images · ` +
    (req.mode === undefined ? "modes drawn from the priors" : `mode ${res.mode_labels[0]}`) + ` · σ ${req.sigma}`;
}

// ------------------------------------------------------------------ cluster
const ARRAY_FILE = /\.(npy|npz)$/i;

async function cluster(files) {
  files = [...files];
  if (!files.length) return;
  const box = $("#cluster-error");
  clearError(box);
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const q = query({ model: currentModel(), version: currentVersion(), return_reconstruction: "true",
                   input_range: $("#cluster-range").value });
  $("#cluster-meta").textContent = `clustering ${files.length} file(s)…`;
  let res;
  try {
    res = await api("/v1/cluster" + q, { method: "POST", form });
  } catch (e) {
    $("#cluster-meta").textContent = "";
    $("#cluster-results").replaceChildren();
    showError(box, e);
    return;
  }
  const originals = files.some((f) => ARRAY_FILE.test(f.name)) ? [] : files;
  let meta = `${res.model} v${res.version} · ${res.results.length} image(s)`;
  if (res.ood) {  // the model's calibrated out-of-distribution rule, when it has one
    meta += ` · flagged out of distribution when the score is above ${Number(res.ood.threshold).toFixed(2)} ` +
      `(${(100 * res.ood.fpr).toFixed(0)}% of held-out training images are)`;
  }
  $("#cluster-meta").textContent = meta;
  $("#cluster-results").replaceChildren(...res.results.map((r) => renderResult(r, res.mode_labels,
    originals[r.index])));
}

// The OOD fields are shown when the API sends them (older servers do not).
function oodBadge(r) {
  const flag = r.ood ?? r.out_of_distribution;
  const score = r.ood_score;
  if (flag == null && score == null) return null;
  const box = el("div", { class: "ood-box" });
  if (flag != null) box.append(el("span", { class: "badge " + (flag ? "ood" : "ok"),
    text: flag ? "out of distribution" : "in distribution" }));
  if (score != null) box.append(el("div", { class: "meta ood-score", text: `OOD score ${Number(score).toFixed(2)}` }));
  return box;
}

function renderResult(r, labels, file) {
  const pair = el("div", { class: "pair" });
  if (file) {
    pair.append(el("figure", {}, el("img", { src: URL.createObjectURL(file), alt: file.name }),
      el("figcaption", { text: "input" })));
  }
  if (r.reconstruction) {
    pair.append(el("figure", {}, el("img", { src: "data:image/png;base64," + r.reconstruction,
      alt: "reconstruction", class: "recon" }), el("figcaption", { text: "g(h1(x))" })));
  }
  // one column per mode: the bar's height is the probability (the exact figure in the tooltip)
  const top = r.probabilities.indexOf(Math.max(...r.probabilities));
  const probs = el("div", { class: "vbars" });
  r.probabilities.forEach((p, i) => {
    probs.append(el("div", { class: "col" + (i === top ? " top" : ""), title: `${labels[i]}: ${(100 * p).toFixed(2)}%` },
      el("div", { class: "track" }, el("div", { class: "fill", style: `height:${(100 * p).toFixed(1)}%` })),
      el("span", { text: labels[i] })));
  });
  const name = file ? file.name : `#${r.index}`;
  const side = el("div", {}, el("div", { class: "label" }, r.label, el("small", { text: name })),
    el("div", { class: "meta", text: `p = ${r.probabilities[top].toFixed(3)}` }));
  const ood = oodBadge(r);
  if (ood) side.append(ood);
  if (r.reconstruction_mse != null) {
    side.append(el("div", { class: "meta", text: `recon. MSE ${Number(r.reconstruction_mse).toFixed(3)}` }));
  }
  return el("div", { class: "result", "data-label": r.label }, pair, side, probs);
}

// ------------------------------------------------------------------ prior learning
async function learnPriors(ev) {
  ev.preventDefault();
  const box = $("#priors-error");
  clearError(box);
  const f = ev.target;
  const form = new FormData();
  form.append("model", currentModel());
  if (currentVersion()) form.append("version", currentVersion());
  form.append("labeled", $("#priors-labeled").files[0]);
  if ($("#priors-unlabeled").files.length) form.append("unlabeled", $("#priors-unlabeled").files[0]);
  for (const k of ["method", "h_steps", "alpha_steps", "seed"]) form.append(k, f.elements[k].value);
  form.append("activate", f.elements.activate.checked ? "true" : "false");
  $("#priors-submit").disabled = true;
  let res;
  try {
    res = await api("/v1/priors/learn", { method: "POST", form });
  } catch (e) {
    showError(box, e);
    $("#priors-submit").disabled = false;
    return;
  }
  state.job = res.id;
  $("#job").hidden = false;
  $("#job-result").replaceChildren();
  $("#job-id").textContent = "job " + res.id;
  showJob({ state: res.state, progress: 0, message: "queued" });
  pollJob(res.location || `/v1/jobs/${res.id}`, res.id);
}

function showJob(j) {
  const pct = Math.round(100 * (j.progress || 0));
  const bar = $("#job-bar");
  bar.querySelector(".fill").style.width = pct + "%";
  bar.setAttribute("aria-valuenow", String(pct));
  bar.classList.toggle("done", j.state === "succeeded");
  bar.classList.toggle("failed", j.state === "failed" || j.state === "cancelled");
  const badge = $("#job-state");
  badge.textContent = `${j.state} · ${pct}%`;
  badge.className = "badge " + j.state;
  $("#job-message").textContent = j.message || "";
  $("#job-cancel").hidden = ["succeeded", "failed", "cancelled"].includes(j.state);
}

async function pollJob(url, id) {
  let j;
  try {
    j = await api(url);
  } catch (e) {
    if (state.job === id) showError($("#priors-error"), e);
    $("#priors-submit").disabled = false;
    return;
  }
  if (state.job !== id) return;  // a newer job replaced this one
  showJob(j);
  if (!["succeeded", "failed", "cancelled"].includes(j.state)) {
    setTimeout(() => pollJob(url, id), 400);
    return;
  }
  $("#priors-submit").disabled = false;
  if (j.state === "failed") showError($("#priors-error"), new Error(j.error || "the job failed"));
  if (j.state === "succeeded" && j.result) {
    const r = j.result;
    const labels = (state.detail && state.detail.mode_labels) || r.priors.map((_, i) => String(i));
    const probs = el("div", { class: "probs" });
    r.priors.forEach((p, i) => probs.append(el("span", { text: labels[i] }),
      el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * p).toFixed(1)}%;display:block` })),
      el("span", { class: "num", text: (100 * p).toFixed(1) + "%" })));
    $("#job-result").replaceChildren(el("p", { text: `published ${r.model} v${r.version}; learned priors:` }), probs);
    await loadDetail();
  }
}

async function cancelJob() {
  if (!state.job) return;
  try {
    showJob(await api(`/v1/jobs/${state.job}`, { method: "DELETE" }));
  } catch (e) {
    showError($("#priors-error"), e);
  }
}

// ------------------------------------------------------------------ wiring
function wire() {
  const key = $("#api-key");
  key.value = sessionStorage.getItem("nemgan-api-key") || "";
  key.addEventListener("change", () => sessionStorage.setItem("nemgan-api-key", key.value));
  $("#model").addEventListener("change", () => loadDetail());
  $("#version").addEventListener("change", generate);
  $("#gen-mode").addEventListener("change", generate);
  $("#gen-n").addEventListener("change", generate);
  $("#gen-seed").addEventListener("input", generateSoon);
  $("#gen-sigma").addEventListener("input", () => {
    $("#gen-sigma-out").textContent = Number($("#gen-sigma").value).toFixed(2);
    generateSoon();
  });
  $("#gen-reseed").addEventListener("click", () => {
    $("#gen-seed").value = String(Math.floor(Math.random() * 1e9));
    generate();
  });
  $("#gen-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });

  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    cluster(e.dataTransfer.files);
  });
  drop.addEventListener("keydown", (e) => {  // keyboard users: Enter or Space opens the file chooser
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("#cluster-files").click(); }
  });
  $("#cluster-files").addEventListener("change", (e) => { cluster(e.target.files); e.target.value = ""; });

  $("#priors-form").addEventListener("submit", learnPriors);
  $("#job-cancel").addEventListener("click", cancelJob);
  $("#rollback").addEventListener("click", rollback);
}

wire();
loadModels();
