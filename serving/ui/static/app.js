// The sarveg web page: vanilla JavaScript, no framework, no build step, nothing from another
// origin. It calls the service's own endpoints with URLs relative to the page (/ui/ -> ../).
"use strict";

const API = new URL("../", document.baseURI);
const PALETTE = [ // ColorBrewer YlGn, 9 classes: light = bare, dark green = dense tree cover
  [255, 255, 229], [247, 252, 185], [217, 240, 163], [173, 221, 142], [120, 198, 121],
  [65, 171, 93], [35, 132, 67], [0, 104, 55], [0, 69, 41],
];
const HATCH = "#c8008f"; // magenta: apart from every green of the scale
const SKIPPED = "#b8bcb8";

const $ = (id) => document.getElementById(id);
const state = { card: null, file: null, kind: "tile", scene: null, selected: null };

// ---- formatting -----------------------------------------------------------------------------

function fmt(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? "n/a" : value.toFixed(digits);
}

function fmtP(p) {
  return p < 0.001 ? "< 0.001" : p.toFixed(3);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    // Through the CSSOM, which a style-src 'self' policy allows (style attributes it refuses).
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function keyValues(dl, rows) {
  dl.replaceChildren();
  for (const [key, value, id] of rows) {
    dl.append(el("dt", { text: key }));
    const dd = el("dd", { text: value });
    if (id) dd.id = id;
    dl.append(dd);
  }
}

function bundleOf(modelName) {
  return (state.card && state.card.bundles.find((b) => b.name === modelName)) || null;
}

// The model that answered, marked synthetic when its bundle says so.
function modelLabel(model) {
  const bundle = bundleOf(model.name);
  const synthetic = bundle && bundle.provenance.synthetic ? ", synthetic: trained on simulated data" : "";
  return `${model.name} (${model.modality}${synthetic})`;
}

function alphaOf(modelName) {
  const bundle = bundleOf(modelName);
  return bundle ? bundle.ood.alpha : null;
}

function verdictWords(unreliable, p, alpha, subject) {
  const bound = alpha === null ? "" : ` ${p < alpha ? "<" : "\u2265"} \u03b1 = ${alpha}`;
  return unreliable
    ? `${subject} unlike anything the model was calibrated on: do not trust (p = ${fmtP(p)}${bound})`
    : `${subject} looks like the calibration data (p = ${fmtP(p)}${bound})`;
}

// ---- requests -------------------------------------------------------------------------------

// XMLHttpRequest rather than fetch: it reports upload progress.
function send(route, file, { responseType = "json", extra = {} } = {}) {
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("tile", file, file.name);
    const modality = $("modality").value;
    if (modality) form.append("modality", modality);
    for (const [key, value] of Object.entries(extra)) form.append(key, value);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", new URL(route, API));
    xhr.responseType = responseType === "blob" ? "blob" : "text";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) $("upload-bar").value = (100 * event.loaded) / event.total;
    };
    xhr.upload.onload = () => {
      $("upload-bar").value = 100;
      progress.phase = "predicting";
    };
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response, type: xhr.getResponseHeader("content-type") || "" });
    xhr.onerror = () => resolve({ status: 0, body: null, type: "" });
    xhr.send(form);
  });
}

// The API's own message for a refusal: {"error": "..."} on 4xx; anything else is shown as is.
async function errorText(answer) {
  if (answer.status === 0) return "Could not reach the service (network error or server stopped).";
  let text = answer.body;
  if (text instanceof Blob) text = await text.text();
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.error === "string") return parsed.error;
  } catch (_) { /* not JSON: a server fault */ }
  const snippet = (text || "").toString().slice(0, 600);
  return `HTTP ${answer.status}${snippet ? ": " + snippet : " (empty answer)"}`;
}

const progress = { timer: null, start: 0, phase: "uploading" };

function startProgress(kind) {
  progress.start = performance.now();
  progress.phase = "uploading";
  $("upload-bar").value = 0;
  $("progress").hidden = false;
  const tick = () => {
    const seconds = ((performance.now() - progress.start) / 1000).toFixed(1);
    const what = kind === "scene" ? "predicting every window of the scene" : "predicting the tile";
    $("status").textContent = progress.phase === "uploading"
      ? `Uploading ${state.file.name}\u2026 ${Math.round($("upload-bar").value)} % (${seconds} s)`
      : `The service is ${what}\u2026 ${seconds} s`;
  };
  tick();
  // Announced politely once a second at most: screen readers would drown in faster updates.
  progress.timer = setInterval(tick, 1000);
}

function stopProgress(message) {
  clearInterval(progress.timer);
  $("progress").hidden = true;
  $("status").textContent = message;
}

function showError(message) {
  $("error-message").textContent = message;
  $("error").hidden = false;
  document.body.dataset.state = "error";
}

async function predict() {
  const file = state.file;
  if (!file) {
    showError("Choose a file first.");
    return;
  }
  const kind = document.querySelector("input[name=kind]:checked").value;
  state.kind = kind;
  document.body.dataset.state = "busy";
  $("error").hidden = true;
  $("tile-view").hidden = true;
  $("scene-view").hidden = true;
  $("submit").disabled = true;
  startProgress(kind);
  const started = performance.now();
  const answer = await send(kind === "scene" ? "predict_scene" : "predict", file);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  $("submit").disabled = false;
  if (answer.status !== 200) {
    stopProgress(`Refused after ${seconds} s.`);
    showError(await errorText(answer));
    return;
  }
  const body = JSON.parse(answer.body);
  $("raw-json").textContent = answer.body;
  if (kind === "scene") showScene(body);
  else showTile(body);
  stopProgress(`${file.name}: answered in ${seconds} s.`);
  document.body.dataset.state = "done";
  $(kind === "scene" ? "scene-title" : "tile-title").focus();
}

// ---- the tile view --------------------------------------------------------------------------

function showTile(answer) {
  const ood = answer.ood;
  const alpha = alphaOf(answer.model.name);
  $("tile-veg").textContent = fmt(answer.vegetation_pct);
  const { low, high, coverage } = answer.interval;
  $("tile-interval").textContent = `${Math.round(coverage * 100)} % interval: ${fmt(low)} to ${fmt(high)} %`;
  $("tile-interval").dataset.low = fmt(low);
  $("tile-interval").dataset.high = fmt(high);
  const bar = $("tile-interval-bar");
  bar.setAttribute("aria-label", `${fmt(answer.vegetation_pct)} % within ${fmt(low)} to ${fmt(high)} %, on a 0 to 100 scale`);
  bar.replaceChildren(
    el("div", { class: "span", style: `left:${low}%;width:${Math.max(high - low, 0.5)}%` }),
    el("div", { class: "point", style: `left:${answer.vegetation_pct}%` }),
  );
  if (!bar.nextElementSibling.classList.contains("interval-axis")) {
    bar.after(el("div", { class: "interval-axis", "aria-hidden": "true" },
      ...["0", "25", "50", "75", "100 %"].map((t) => el("span", { text: t }))));
  }
  const verdict = $("tile-verdict");
  verdict.textContent = verdictWords(ood.unreliable, ood.p_value, alpha, "The tile");
  verdict.className = `verdict ${ood.unreliable ? "bad" : "ok"}`;
  verdict.dataset.unreliable = String(ood.unreliable);
  verdict.dataset.pValue = fmtP(ood.p_value);
  const reasons = (ood.unreliable_reasons || []).length
    ? ` Flagged because: ${ood.unreliable_reasons.join("; ")}.` : "";
  $("tile-p-words").textContent = `p = ${fmtP(ood.p_value)}: about ${Math.round(ood.p_value * 100)} % of the held-out `
    + "calibration tiles look at least as strange to the model as this one." + reasons;
  $("tile-nearest").textContent = ood.nearest_region;
  $("tile-plausible").textContent = ood.plausible_regions.length ? ood.plausible_regions.join(", ")
    : "none: the tile matches no reference region";
  $("tile-model").textContent = `Answered by ${modelLabel(answer.model)}.`;
  regionChart(ood, alpha);
  const input = answer.input || {};
  keyValues($("tile-input"), [
    ["kind", input.kind || "n/a"],
    ["layout", input.layout || "n/a"],
    ["units", input.units ? `${input.units} (${input.units_source})` : "n/a"],
    ["seasons", input.seasons || "n/a"],
    ["date", input.date || "unknown"],
    ["footprint", input.footprint_m ? `${fmt(input.footprint_m[0], 0)} x ${fmt(input.footprint_m[1], 0)} m` : "unknown"],
    ["pixel size", input.pixel_size_m ? `${fmt(input.pixel_size_m, 1)} m` : "unknown"],
    ["warnings", input.warnings && input.warnings.length ? input.warnings.join("; ") : "none"],
  ]);
  $("tile-view").hidden = false;
}

function regionChart(ood, alpha) {
  const body = $("tile-regions").tBodies[0];
  body.replaceChildren();
  const regions = Object.keys(ood.region_p_values);
  const maxDistance = Math.max(...regions.map((r) => ood.knn_distance_by_region[r]), 1e-9);
  for (const region of regions) {
    const p = ood.region_p_values[region];
    const distance = ood.knn_distance_by_region[region];
    const pBar = el("div", { class: "bar", "aria-hidden": "true" },
      el("div", { class: "fill", style: `width:${p * 100}%` }));
    if (alpha !== null) pBar.append(el("div", { class: "alpha", style: `left:${alpha * 100}%` }));
    const dBar = el("div", { class: "bar", "aria-hidden": "true" },
      el("div", { class: "fill dist", style: `width:${(100 * distance) / maxDistance}%` }));
    const row = el("tr", { "data-region": region },
      el("th", { scope: "row", text: region }),
      el("td", {}, pBar, el("span", { class: "bar-label", text: fmtP(p) })),
      el("td", {}, dBar, el("span", { class: "bar-label", text: fmt(distance, 3) })),
      el("td", { class: "num", text: fmt(ood.swd_by_region[region], 3) }));
    if (alpha !== null && p < alpha) row.className = "implausible";
    body.append(row);
  }
}

// ---- the scene view -------------------------------------------------------------------------

function colour(pct) {
  const x = Math.min(Math.max(pct, 0), 100) / 100 * (PALETTE.length - 1);
  const i = Math.min(Math.floor(x), PALETTE.length - 2);
  const t = x - i;
  const mix = PALETTE[i].map((c, k) => Math.round(c + t * (PALETTE[i + 1][k] - c)));
  return `rgb(${mix.join(",")})`;
}

function drawLegend() {
  const canvas = $("legend-scale");
  const ctx = canvas.getContext("2d");
  for (let x = 0; x < canvas.width; x += 1) {
    ctx.fillStyle = colour((100 * x) / (canvas.width - 1));
    ctx.fillRect(x, 0, 1, canvas.height);
  }
}

function cellSize(grid) {
  const width = Math.min(640, $("scene-map").parentElement.clientWidth || 640);
  return Math.max(4, Math.min(64, Math.floor(Math.min(width / grid.cols, 480 / grid.rows))));
}

function hatch(ctx, x, y, size) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, size, size);
  ctx.clip();
  ctx.strokeStyle = HATCH;
  ctx.lineWidth = Math.max(1.5, size / 16); // thin enough to show the colour beneath
  const step = Math.max(4, size / 4);
  ctx.beginPath();
  for (let d = -size; d < size; d += step) {
    ctx.moveTo(x + d, y + size);
    ctx.lineTo(x + d + size, y);
  }
  ctx.stroke();
  ctx.restore();
}

function drawScene() {
  const answer = state.scene;
  const grid = answer.summary.grid;
  const size = cellSize(grid);
  const canvas = $("scene-map");
  const ratio = window.devicePixelRatio || 1;
  canvas.width = grid.cols * size * ratio;
  canvas.height = grid.rows * size * ratio;
  canvas.style.width = `${grid.cols * size}px`;
  canvas.style.height = `${grid.rows * size}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, grid.cols * size, grid.rows * size);
  let hatched = 0;
  for (const tile of answer.tiles) {
    ctx.fillStyle = colour(tile.vegetation_pct);
    ctx.fillRect(tile.col * size, tile.row * size, size, size);
    if (tile.ood.unreliable) {
      hatch(ctx, tile.col * size, tile.row * size, size);
      hatched += 1;
    }
  }
  for (const skipped of answer.skipped) {
    ctx.fillStyle = SKIPPED;
    ctx.fillRect(skipped.col * size, skipped.row * size, size, size);
  }
  if (state.selected) {
    const [row, col] = state.selected;
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#0b57d0";
    ctx.strokeRect(col * size + 1.5, row * size + 1.5, size - 3, size - 3);
  }
  // What the page drew, for anyone checking the map against the answer (the browser test does).
  canvas.dataset.hatched = String(hatched);
  canvas.dataset.drawn = String(answer.tiles.length);
  canvas.dataset.skipped = String(answer.skipped.length);
  canvas.dataset.cell = String(size);
  const share = answer.summary.unreliable_tile_share;
  canvas.setAttribute("aria-label", `Vegetation map, ${grid.rows} by ${grid.cols} windows; `
    + `${hatched} hatched as unreliable (${fmt(share * 100)} %), ${answer.skipped.length} skipped.`);
}

function windowAt(row, col) {
  const answer = state.scene;
  return answer.tiles.find((t) => t.row === row && t.col === col)
    || answer.skipped.find((t) => t.row === row && t.col === col) || null;
}

function selectWindow(row, col) {
  const grid = state.scene.summary.grid;
  state.selected = [Math.min(Math.max(row, 0), grid.rows - 1), Math.min(Math.max(col, 0), grid.cols - 1)];
  drawScene();
  const [r, c] = state.selected;
  const win = windowAt(r, c);
  const detail = $("window-detail");
  detail.dataset.row = String(r);
  detail.dataset.col = String(c);
  const bounds = (b) => b.map((v) => fmt(v, 2)).join(", ");
  if (!win) {
    detail.replaceChildren(el("h3", { text: `Window row ${r}, column ${c}` }), el("p", { text: "Not in the answer." }));
    return;
  }
  const list = el("dl", { class: "kv" });
  if (win.ood) {
    keyValues(list, [
      ["vegetation", `${fmt(win.vegetation_pct)} %`, "window-veg"],
      ["interval", `${fmt(win.interval.low)} to ${fmt(win.interval.high)} %`],
      ["p-value", fmtP(win.ood.p_value), "window-p"],
      ["verdict", win.ood.unreliable ? "unreliable: do not trust" : "looks like the calibration data", "window-verdict"],
      ["nearest region", win.ood.nearest_region],
      ["valid pixels", `${fmt(win.valid_fraction * 100, 0)} %`],
      ["bounds (l, b, r, t)", bounds(win.bounds), "window-bounds"],
    ]);
  } else {
    keyValues(list, [
      ["skipped", win.reason, "window-reason"],
      ["valid pixels", `${fmt(win.valid_fraction * 100, 0)} %`],
      ["bounds (l, b, r, t)", bounds(win.bounds), "window-bounds"],
    ]);
  }
  detail.replaceChildren(el("h3", { text: `Window row ${r}, column ${c}` }), list);
}

function showScene(answer) {
  state.scene = answer;
  state.selected = null;
  const summary = answer.summary;
  const ood = summary.ood;
  const alpha = alphaOf(answer.model.name);
  const verdict = $("scene-verdict");
  verdict.textContent = verdictWords(ood.unreliable, ood.p_value, alpha, "The scene as a whole");
  verdict.className = `verdict ${ood.unreliable ? "bad" : "ok"}`;
  verdict.dataset.unreliable = String(ood.unreliable);
  const veg = summary.vegetation_pct;
  const reasons = Object.entries(summary.skipped_by_reason).map(([k, v]) => `${k}: ${v}`).join("; ");
  keyValues($("scene-summary"), [
    ["windows predicted", String(summary.tile_count), "sum-tiles"],
    ["windows skipped", String(summary.skipped_tile_count) + (reasons ? ` (${reasons})` : ""), "sum-skipped"],
    ["unreliable windows", `${fmt(summary.unreliable_tile_share * 100)} %`, "sum-unreliable"],
    ["vegetation mean", `${fmt(veg.mean)} %`, "sum-mean"],
    ["p10 / p25 / p50 / p75 / p90", `${[veg.p10, veg.p25, veg.p50, veg.p75, veg.p90].map((v) => fmt(v)).join(" / ")} %`, "sum-quantiles"],
    ["scene p-value", fmtP(ood.p_value), "sum-p"],
    ["nearest region", ood.nearest_region, "sum-nearest"],
    ["grid", `${summary.grid.rows} x ${summary.grid.cols} windows of ${summary.grid.tile_px} px`],
    ["CRS", summary.grid.crs || "none"],
    ["model", modelLabel(answer.model)],
  ]);
  const body = $("scene-table").tBodies[0];
  body.replaceChildren();
  for (const tile of answer.tiles) {
    body.append(el("tr", {},
      el("td", { class: "num", text: String(tile.row) }), el("td", { class: "num", text: String(tile.col) }),
      el("td", { class: "num", text: fmt(tile.vegetation_pct) }),
      el("td", { text: `${fmt(tile.interval.low)} to ${fmt(tile.interval.high)}` }),
      el("td", { class: "num", text: fmtP(tile.ood.p_value) }),
      el("td", { text: tile.ood.unreliable ? "unreliable" : "ok" }),
      el("td", { text: tile.ood.nearest_region })));
  }
  for (const skipped of answer.skipped) {
    body.append(el("tr", {},
      el("td", { class: "num", text: String(skipped.row) }), el("td", { class: "num", text: String(skipped.col) }),
      el("td", { colspan: "5", text: `skipped: ${skipped.reason}` })));
  }
  $("scene-view").hidden = false; // visible first: the cell size follows the column's width
  drawScene();
  $("window-detail").replaceChildren(el("p", { class: "hint", text: "No window selected." }));
}

function mapEvents() {
  const canvas = $("scene-map");
  const cellOf = (event) => {
    const rect = canvas.getBoundingClientRect();
    const size = Number(canvas.dataset.cell);
    return [Math.floor((event.clientY - rect.top) / size), Math.floor((event.clientX - rect.left) / size)];
  };
  const pick = (event) => {
    if (!state.scene) return;
    const [row, col] = cellOf(event);
    const current = state.selected || [-1, -1];
    if (row !== current[0] || col !== current[1]) selectWindow(row, col);
  };
  canvas.addEventListener("mousemove", pick);
  canvas.addEventListener("click", pick);
  canvas.addEventListener("keydown", (event) => {
    if (!state.scene) return;
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (event.key === "Home" || (moves[event.key] && !state.selected)) {
      selectWindow(0, 0); // the first key press lands on the top-left window
    } else if (moves[event.key]) {
      const [row, col] = state.selected;
      selectWindow(row + moves[event.key][0], col + moves[event.key][1]);
    } else {
      return;
    }
    event.preventDefault();
  });
}

// ---- downloads ------------------------------------------------------------------------------

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function stem() {
  return state.file.name.replace(/\.[^.]+$/, "");
}

async function downloadMap() {
  const button = $("download-map");
  button.disabled = true;
  startProgress("scene");
  const answer = await send("predict_scene_map", state.file, { responseType: "blob" });
  button.disabled = false;
  if (answer.status !== 200) {
    stopProgress("The map was refused.");
    showError(await errorText(answer));
    return;
  }
  stopProgress("Map downloaded.");
  download(answer.body, `${stem()}_map.tif`);
}

function downloadJson() {
  download(new Blob([JSON.stringify(state.scene, null, 2)], { type: "application/json" }), `${stem()}_scene.json`);
}

// ---- the model card -------------------------------------------------------------------------

function showCard(card) {
  const body = $("card-body");
  body.replaceChildren(el("p", {
    text: `sarveg ${card.sarveg_version}; ONNX Runtime providers available: ${card.providers_available.join(", ")}; `
      + `at most ${card.max_batch_size} tiles per model call; uploads up to ${fmt(card.limits.tile_max_upload_mb)} MiB `
      + `(tile) and ${fmt(card.limits.scene_max_upload_mb)} MiB (scene).`,
  }));
  const synthetic = card.bundles.filter((b) => b.provenance.synthetic).map((b) => b.name);
  const banner = $("synthetic-banner");
  banner.hidden = synthetic.length === 0;
  banner.textContent = `Synthetic: ${synthetic.join(", ")} ${synthetic.length > 1 ? "were" : "was"} trained and `
    + "evaluated on simulated data. Read every figure on this page as a demonstration, not as a measurement of real forests.";
  for (const bundle of card.bundles) {
    const ood = bundle.ood;
    const measured = ood.measured;
    const section = el("article", { class: "card", "data-bundle": bundle.name },
      el("h3", { text: `${bundle.name} (${bundle.modality})${bundle.provenance.synthetic ? ", synthetic" : ""}` }));
    const rows = [
      ["bands", bundle.band_names.join(", ")],
      ["units", bundle.units],
      ["input", `${bundle.source_tile_px} px tiles resampled to ${bundle.input_size} px (${bundle.resampling})`],
      ["architecture", bundle.architecture.name],
      ["trained on", `${bundle.provenance.data}; fine-tuned on ${bundle.provenance.fine_tuning_regions.join(", ")}`],
      ["reference regions", ood.reference_regions.join(", ")],
      ["OOD alpha", `${ood.alpha} (bounded false-flag rate), calibration on ${ood.calibration_size} tiles`],
      ["interval", `nominal coverage ${fmt((1 - ood.interval_alpha) * 100, 0)} %`],
    ];
    if (measured) {
      rows.push(
        ["measured false flags", `${fmt(measured.false_flag_rate * 100)} % of ${measured.n_in_distribution} held-out tiles`],
        ["measured coverage", `${fmt(measured.interval_coverage * 100)} %, mean width ${fmt(measured.interval_width_mean)} points`],
      );
      if (measured.auroc !== null) {
        rows.push(["AUROC, unseen region", `${fmt(measured.auroc, 3)} on ${measured.unseen_region} (${measured.n_unseen} tiles)`]);
      }
      rows.push(["measured on", measured.synthetic ? "synthetic data" : "real data"]);
    }
    rows.push(["provider", bundle.provider]);
    const list = el("dl", { class: "kv" });
    keyValues(list, rows);
    list.querySelector("dd").className = "bands";
    const metrics = el("table", {},
      el("caption", { text: "Test-split metrics per region, percentage points" }),
      el("thead", {}, el("tr", {}, ...["region", "RMSE", "MAE", "bias", "tiles"].map((h) => el("th", { scope: "col", text: h })))));
    const tbody = el("tbody");
    for (const [region, m] of Object.entries(bundle.metrics)) {
      tbody.append(el("tr", {}, el("th", { scope: "row", text: region }),
        el("td", { class: "num", text: fmt(m.rmse, 2) }), el("td", { class: "num", text: fmt(m.mae, 2) }),
        el("td", { class: "num", text: fmt(m.bias, 2) }), el("td", { class: "num", text: String(m.n_tiles) })));
    }
    metrics.append(tbody);
    section.append(list, metrics);
    body.append(section);
  }
}

async function loadCard() {
  try {
    const response = await fetch(new URL("model_card", API));
    if (!response.ok) throw new Error(await errorText({ status: response.status, body: await response.text() }));
    state.card = await response.json();
    showCard(state.card);
  } catch (error) {
    $("card-body").replaceChildren(el("p", { class: "error", text: `The model card could not be loaded: ${error.message}` }));
  }
}

// ---- wiring ---------------------------------------------------------------------------------

function choose(file) {
  if (!file) return;
  state.file = file;
  predict();
}

function wire() {
  const zone = $("drop-zone");
  $("file").addEventListener("change", (event) => choose(event.target.files[0]));
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    predict();
  });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    choose(event.dataTransfer.files[0]);
  });
  $("download-map").addEventListener("click", downloadMap);
  $("download-json").addEventListener("click", downloadJson);
  window.addEventListener("resize", () => { if (state.scene && !$("scene-view").hidden) drawScene(); });
  mapEvents();
  drawLegend();
}

wire();
loadCard().then(() => {
  if (document.body.dataset.state === "loading") document.body.dataset.state = "idle";
});
