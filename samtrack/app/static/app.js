// samtrack app page: plain JavaScript, no build step. Talks to the JSON API in server.py.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

let session = null;       // the open video (GET /api/sessions/{id})
let position = 0;         // index into session.frames
let active = null;        // the object new clicks go to
let revision = 0;         // bumped by the server on every change
let polling = null;
let playing = null;
let drawSeq = 0;

// ---------------------------------------------------------------- requests
function withToken(url) {
  if (!TOKEN) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, method = "GET", body = undefined) {
  const options = { method, headers: {} };
  if (TOKEN) options.headers["X-Samtrack-Token"] = TOKEN;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the samtrack server cannot be reached (was it stopped?)");
  }
  let data = null;
  try { data = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((data && data.error) || `request failed (${response.status})`);
  return data;
}

function showError(e) {
  const box = $("error");
  box.textContent = e.message || String(e);
  box.hidden = false;
}

function clearError() { $("error").hidden = true; }

async function guarded(fn) {
  try { clearError(); return await fn(); } catch (e) { showError(e); }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("cannot load " + url.split("?")[0]));
    image.src = withToken(url);
  });
}

// ---------------------------------------------------------------- sessions
async function refreshSessions(selectId) {
  const { sessions } = await api("api/sessions");
  const select = $("session");
  select.innerHTML = "";
  for (const s of sessions) {
    const option = document.createElement("option");
    option.value = s.id;
    const shown = s.frames.length === s.n_frames ? `${s.n_frames} frames` : `${s.frames.length} of ${s.n_frames} frames`;
    option.textContent = `${s.video} (${shown}, ${s.width}x${s.height})`;
    select.appendChild(option);
  }
  const id = selectId || (sessions[0] && sessions[0].id);
  if (id) { select.value = id; await openSession(id); }
  else $("status").textContent = "Open a video to start.";
}

async function openSession(id) {
  session = await api(`api/sessions/${id}`);
  position = 0;
  revision = session.revision;
  canvas.width = session.width;
  canvas.height = session.height;
  $("scrub").max = session.frames.length - 1;
  $("scrub").value = 0;
  renderObjects(session.objects);
  if (!session.objects.length) await addObject();
  else active = session.objects[0].id;
  renderDownloads(session.exports);
  await show(0);
  if (session.job && session.job.state === "running") startPolling();  // e.g. the page was reloaded mid-pass
  else if (session.job) document.body.dataset.job = `${session.job.kind}:${session.job.state}`;
}

async function reloadSession() {
  session = await api(`api/sessions/${session.id}`);
  renderObjects(session.objects);
}

// ---------------------------------------------------------------- drawing
function frameIndex() { return session.frames[position]; }

async function show(pos) {
  if (!session) return;
  position = Math.max(0, Math.min(session.frames.length - 1, pos));
  $("scrub").value = position;
  const frame = frameIndex();
  $("frameno").textContent = `${frame} / ${session.frames[session.frames.length - 1]}`;
  const seq = ++drawSeq;
  const base = `api/sessions/${session.id}`;
  const [image, mask, info] = await Promise.all([
    loadImage(`${base}/frames/${frame}.jpg`),
    loadImage(`${base}/masks/${frame}.png?r=${revision}`),
    api(`${base}/frames/${frame}/info`),
  ]);
  if (seq !== drawSeq) return;  // a later frame was asked for meanwhile
  ctx.drawImage(image, 0, 0);
  ctx.drawImage(mask, 0, 0);
  drawPoints(info);
  canvas.dataset.drawn = `${frame}:${info.revision}`;
}

function colour(objId) {
  const obj = session.objects.find((o) => o.id === objId);
  return obj ? obj.colour : "#ffffff";
}

function drawPoints(info) {
  const r = Math.max(4, session.width / 160);
  for (const p of info.prompts) {
    ctx.strokeStyle = colour(p.obj_id);
    if (p.box) {
      ctx.lineWidth = 2;
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
    }
    for (const [x, y, label] of p.clicks) {
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = label === 1 ? "#2ecc40" : "#ff4136";
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
  }
  if (info.prompts.length) return;  // on a prompted frame the clicks are the points
  for (const [objId, points] of Object.entries(info.points)) {
    for (const [x, y, label, visible] of points) {
      if (!visible) continue;
      ctx.beginPath();
      if (label === 1) ctx.arc(x, y, r * 0.6, 0, 2 * Math.PI);
      else ctx.rect(x - r * 0.6, y - r * 0.6, r * 1.2, r * 1.2);
      ctx.fillStyle = colour(Number(objId));
      ctx.fill();
      ctx.lineWidth = 1;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
  }
}

// ---------------------------------------------------------------- objects
function renderObjects(objects) {
  session.objects = objects;
  const list = $("objects");
  list.innerHTML = "";
  if (!objects.some((o) => o.id === active)) active = objects.length ? objects[0].id : null;
  for (const obj of objects) {
    const li = document.createElement("li");
    li.className = obj.id === active ? "active" : "";
    li.dataset.id = obj.id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = obj.colour;
    const name = document.createElement("input");
    name.value = obj.name;
    name.title = "rename";
    name.addEventListener("change", () => guarded(async () => {
      const data = await api(`api/sessions/${session.id}/objects/${obj.id}`, "PATCH", { name: name.value });
      renderObjects(data.objects);
    }));
    const remove = document.createElement("button");
    remove.className = "small";
    remove.textContent = "×";
    remove.title = "delete this object";
    remove.addEventListener("click", (e) => {
      e.stopPropagation();
      guarded(async () => {
        const data = await api(`api/sessions/${session.id}/objects/${obj.id}`, "DELETE");
        renderObjects(data.objects);
        revision++;
        await show(position);
      });
    });
    li.append(swatch, name, remove);
    li.addEventListener("click", () => { active = obj.id; renderObjects(session.objects); });
    list.appendChild(li);
  }
}

async function addObject() {
  const obj = await api(`api/sessions/${session.id}/objects`, "POST", {});
  await reloadSession();
  active = obj.id;
  renderObjects(session.objects);
}

// ---------------------------------------------------------------- clicks
let down = null;

function canvasXY(event) {
  const rect = canvas.getBoundingClientRect();
  return [
    Math.min(session.width - 0.5, Math.max(0, (event.clientX - rect.left) * canvas.width / rect.width)),
    Math.min(session.height - 0.5, Math.max(0, (event.clientY - rect.top) * canvas.height / rect.height)),
  ];
}

canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => { if (session) down = { xy: canvasXY(e), button: e.button, shift: e.shiftKey }; });
canvas.addEventListener("mouseup", (e) => {
  if (!down || !session) return;
  const start = down;
  down = null;
  const [x, y] = canvasXY(e);
  guarded(async () => {
    if (active === null) await addObject();
    const frame = frameIndex();
    const base = `api/sessions/${session.id}`;
    const moved = Math.hypot(x - start.xy[0], y - start.xy[1]);
    let result;
    const t0 = performance.now();
    if (moved > 6 && start.button === 0) {
      result = await api(`${base}/box`, "POST", { frame, obj_id: active, box: [start.xy[0], start.xy[1], x, y] });
    } else {
      const label = start.button === 2 || start.shift ? 0 : 1;
      result = await api(`${base}/clicks`, "POST", { frame, obj_id: active, x: start.xy[0], y: start.xy[1], label });
    }
    revision = result.revision;
    await show(position);
    $("status").textContent = `mask updated in ${Math.round(performance.now() - t0)} ms`;
  });
});

async function undo() {
  await guarded(async () => {
    const result = await api(`api/sessions/${session.id}/undo`, "POST");
    revision = result.revision;
    const pos = session.frames.indexOf(result.frame);
    await show(pos >= 0 ? pos : position);
  });
}

// ---------------------------------------------------------------- jobs
async function propagate(direction) {
  await guarded(async () => {
    await api(`api/sessions/${session.id}/propagate`, "POST", { frame: frameIndex(), direction });
    startPolling();
  });
}

function setBusy(busy) {
  $("cancel").disabled = !busy;
  for (const id of ["prop-backward", "prop-both", "prop-forward", "export", "undo"]) $(id).disabled = busy;
}

function startPolling() {
  setBusy(true);
  if (polling) clearInterval(polling);
  let lastShown = null;
  polling = setInterval(async () => {
    let data;
    try { data = await api(`api/sessions/${session.id}/job`); } catch (e) { showError(e); return; }
    const job = data.job;
    if (!job) return;
    revision = data.revision;
    $("progress").max = Math.max(1, job.total);
    $("progress").value = job.done;
    $("status").textContent = `${job.kind}: ${job.done} / ${job.total} frames, ${job.state}`;
    if (job.kind === "propagate" && job.last_frame !== null && job.last_frame !== lastShown) {
      lastShown = job.last_frame;  // results stream in: show each frame as it is finished
      const pos = session.frames.indexOf(job.last_frame);
      if (pos >= 0) show(pos).catch(showError);
    }
    if (job.state !== "running") {
      clearInterval(polling);
      polling = null;
      setBusy(false);
      if (job.state === "error") showError(new Error(job.message));
      if (job.kind === "export" && job.state === "done") {
        await reloadSession();
        renderDownloads(session.exports);
      }
      document.body.dataset.job = `${job.kind}:${job.state}`;
      await show(position).catch(showError);
    }
  }, 250);
}

async function cancel() {
  await guarded(() => api(`api/sessions/${session.id}/cancel`, "POST"));
}

async function loadFormats() {
  const { formats } = await api("api/formats");
  const box = $("formats");
  const defaults = ["matte-png", "matte-ffv1", "cutout-webm"];
  for (const [name, description] of Object.entries(formats)) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" value="${name}"${defaults.includes(name) ? " checked" : ""}> ${name}`;
    label.title = description;
    box.appendChild(label);
  }
}

async function startExport() {
  await guarded(async () => {
    const formats = [...document.querySelectorAll("#formats input:checked")].map((i) => i.value);
    await api(`api/sessions/${session.id}/export`, "POST", { formats, feather: Number($("feather").value) || 0 });
    startPolling();
  });
}

function renderDownloads(names) {
  const box = $("downloads");
  box.innerHTML = "";
  for (const name of names) {
    const a = document.createElement("a");
    a.href = withToken(`api/sessions/${session.id}/exports/${name}/download`);
    a.textContent = `⬇ ${name}.zip`;
    a.className = "download";
    box.appendChild(a);
  }
}

// ---------------------------------------------------------------- transport
function togglePlay() {
  if (playing) { clearTimeout(playing); playing = null; $("play").textContent = "▶"; return; }
  $("play").textContent = "❚❚";
  const step = async () => {
    const t0 = performance.now();
    if (position >= session.frames.length - 1) { togglePlay(); return; }
    await show(position + 1).catch(showError);
    if (playing) playing = setTimeout(step, Math.max(0, 1000 / session.fps - (performance.now() - t0)));
  };
  playing = setTimeout(step, 0);
}

$("scrub").addEventListener("input", (e) => show(Number(e.target.value)).catch(showError));
$("play").addEventListener("click", togglePlay);
$("add-object").addEventListener("click", () => guarded(addObject));
$("undo").addEventListener("click", undo);
$("prop-backward").addEventListener("click", () => propagate("backward"));
$("prop-both").addEventListener("click", () => propagate("both"));
$("prop-forward").addEventListener("click", () => propagate("forward"));
$("cancel").addEventListener("click", cancel);
$("export").addEventListener("click", startExport);
$("session").addEventListener("change", (e) => guarded(() => openSession(e.target.value)));
$("upload").addEventListener("change", (e) => guarded(async () => {
  const file = e.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  $("status").textContent = `uploading ${file.name}…`;
  const headers = TOKEN ? { "X-Samtrack-Token": TOKEN } : {};
  const response = await fetch("api/sessions/upload", { method: "POST", body: form, headers });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error((data && data.error) || `upload failed (${response.status})`);
  $("status").textContent = "";
  await refreshSessions(data.id);
}));
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
  else if (e.key === " ") { e.preventDefault(); togglePlay(); }
  else if (e.key === "ArrowRight") show(position + 1).catch(showError);
  else if (e.key === "ArrowLeft") show(position - 1).catch(showError);
});

guarded(async () => { await loadFormats(); await refreshSessions(); });
