// The console's script: plain DOM, this server's JSON API and its /events stream.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "pipeline-admin-token";
const QUEUES = [["exportJobs", "export-jobs"], ["downloadTasks", "download-tasks"]];
const ACTIVE = ["WAITING", "RUNNING"];
const RETRYABLE = ["FAILED", "CANCELLED"];

const state = { jobs: new Map(), heard: new Map(), cursor: null, filter: "", files: null, dlq: null };
// Active jobs not heard of for this long are read again: /events shows only what the
// process serving this page writes (in split mode, part of a job's changes).
const QUIET_MS = 5000;

// --- messages -----------------------------------------------------------------
function showError(text) {
  const box = document.createElement("div");
  const words = document.createElement("span");
  words.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "dismiss";
  close.addEventListener("click", () => box.remove());
  box.append(words, close);
  $("errors").append(box);
  while ($("errors").children.length > 4) $("errors").firstElementChild.remove();
}
function notice(text) { $("notice").textContent = text; }

// --- the admin token: asked once per browser session ----------------------------
function token() { return sessionStorage.getItem(TOKEN_KEY); }
function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  $("token-state").textContent = value ? "admin token: given" : "admin token: not given";
  $("token-forget").hidden = !value;
}
function askToken(why) {
  const dialog = $("token-dialog");
  $("token-why").textContent = why;
  $("token-input").value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    const done = (value) => {
      dialog.removeEventListener("close", onClose);
      resolve(value);
    };
    const onClose = () => done(dialog.returnValue === "ok" ? $("token-input").value.trim() : "");
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    $("token-input").focus();
  });
}
$("token-cancel").addEventListener("click", () => $("token-dialog").close("cancel"));
$("token-forget").addEventListener("click", () => { setToken(""); notice("Admin token forgotten."); });

// --- calls ---------------------------------------------------------------------
class Refused extends Error {}

async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" || path.startsWith("/dlq/")) {
    let given = token();
    if (!given) {
      given = await askToken("This call changes something or shows message bodies: give the service's ADMIN_TOKEN. It is kept for this browser session only.");
      if (!given) throw new Refused("No admin token given; nothing was done.");
      setToken(given);
    }
    headers.Authorization = `Bearer ${given}`;
  }
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let answer = null;
  if (response.status !== 204) {
    const text = await response.text();
    try { answer = text ? JSON.parse(text) : null; } catch { answer = { error: text }; }
  }
  if (response.status === 401) {
    setToken("");
    throw new Refused("The admin token was refused (401): it is wrong. You will be asked again on the next change.");
  }
  if (response.status === 403) throw new Refused("The control API is off on this service (ADMIN_TOKEN is not set).");
  if (!response.ok) {
    const reason = answer && answer.error ? answer.error : response.statusText;
    throw new Refused(`${method} ${path} answered ${response.status}: ${reason}`);
  }
  return answer;
}

async function guarded(work) {
  try { return await work(); } catch (err) { showError(err.message || String(err)); return null; }
}

// --- jobs ----------------------------------------------------------------------
function cell(row, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content); else td.textContent = content;
  row.append(td);
  return td;
}
function button(text, onClick, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}
function meter(job) {
  const wrap = document.createElement("span");
  const pct = Math.round((job.progress || 0) * 100);
  const bar = document.createElement("span");
  bar.className = `meter ${job.status}`;
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-label", `progress of ${job.exportId}`);
  const fill = document.createElement("span");
  fill.style.width = `${pct}%`;
  bar.append(fill);
  const label = document.createElement("span");
  label.className = "pct";
  label.textContent = `${pct}%`;
  wrap.append(bar, label);
  return wrap;
}
function jobRow(job) {
  const row = document.createElement("tr");
  row.dataset.exportId = job.exportId;
  row.dataset.status = job.status;
  cell(row, button(job.exportId, () => openFiles(job.exportId), "linkish"));
  const status = cell(row, job.status);
  status.className = `status ${job.status}`;
  if (job.error) status.title = job.error;
  cell(row, meter(job));
  cell(row, `${job.filesDone}/${job.filesFailed}/${job.listingDone === false && ACTIVE.includes(job.status) ? "?" : job.filesTotal}`, "num wide");
  cell(row, String(job.entriesUploaded), "num wide");
  cell(row, (job.createdAt || "").replace("T", " ").replace(/\.\d+Z$/, "Z"), "wide");
  const actions = cell(row, "");
  if (ACTIVE.includes(job.status)) actions.append(button("cancel", () => cancelJob(job.exportId), "danger"));
  if (RETRYABLE.includes(job.status)) actions.append(button("retry", () => retryJob(job.exportId)));
  return row;
}
function renderJob(job) {
  state.heard.set(job.exportId, Date.now());
  const old = state.jobs.get(job.exportId);
  state.jobs.set(job.exportId, job);
  const body = $("jobs").tBodies[0];
  const existing = body.querySelector(`tr[data-export-id="${CSS.escape(job.exportId)}"]`);
  const wanted = !state.filter || state.filter === job.status;
  if (existing && !wanted && old && old.status !== job.status) {
    existing.replaceWith(jobRow(job)); // keep it in view once shown; its status says where it went
    return;
  }
  if (existing) existing.replaceWith(jobRow(job));
  else if (wanted) body.prepend(jobRow(job));
  $("jobs-empty").hidden = body.rows.length > 0;
}
async function loadJobs(more) {
  const params = new URLSearchParams();
  if (state.filter) params.set("status", state.filter);
  if (more && state.cursor) params.set("cursor", state.cursor);
  const answer = await guarded(() => call("GET", `/jobs?${params}`));
  if (!answer) return;
  const body = $("jobs").tBodies[0];
  if (!more) { body.replaceChildren(); state.jobs.clear(); }
  for (const job of answer.jobs) { state.jobs.set(job.exportId, job); state.heard.set(job.exportId, Date.now()); body.append(jobRow(job)); }
  state.cursor = answer.nextCursor;
  $("more-jobs").hidden = !state.cursor;
  $("jobs-empty").hidden = body.rows.length > 0;
  $("retry-all").hidden = !RETRYABLE.includes(state.filter);
}
async function cancelJob(exportId) {
  const answer = await guarded(() => call("POST", `/jobs/${encodeURIComponent(exportId)}/cancel`));
  if (answer) { notice(`${exportId}: cancel accepted.`); refreshJob(exportId); }
}
async function retryJob(exportId) {
  const answer = await guarded(() => call("POST", `/jobs/${encodeURIComponent(exportId)}/retry`));
  if (answer) { notice(`${exportId}: retry accepted.`); refreshJob(exportId); }
}
async function refreshJob(exportId) {
  const job = await guarded(() => call("GET", `/jobs/${encodeURIComponent(exportId)}`));
  if (job) renderJob(job);
}
$("status-filter").addEventListener("change", (e) => { state.filter = e.target.value; loadJobs(false); });
$("refresh-jobs").addEventListener("click", () => loadJobs(false));
$("more-jobs").addEventListener("click", () => loadJobs(true));
$("retry-all").addEventListener("click", async () => {
  const answer = await guarded(() => call("POST", "/jobs/retry", { status: state.filter, limit: 50 }));
  if (answer) { notice(`Retried ${answer.retried.length} job(s).`); loadJobs(false); }
});

// --- a job's files -------------------------------------------------------------
async function openFiles(exportId, more) {
  state.files = state.files && state.files.exportId === exportId && more ? state.files : { exportId, cursor: null };
  const params = new URLSearchParams();
  const filter = $("files-filter").value;
  if (filter) params.set("status", filter);
  if (more && state.files.cursor) params.set("cursor", state.files.cursor);
  const answer = await guarded(() => call("GET", `/jobs/${encodeURIComponent(exportId)}/files?${params}`));
  if (!answer) return;
  $("files-panel").hidden = false;
  $("files-title").textContent = `Files of ${exportId}`;
  const job = state.jobs.get(exportId);
  $("job-error").hidden = !(job && job.error);
  $("job-error").textContent = job && job.error ? `Job error: ${job.error}` : "";
  const body = $("files").tBodies[0];
  if (!more) body.replaceChildren();
  for (const file of answer.files) {
    const row = document.createElement("tr");
    cell(row, file.name ? `${file.name} (${file.fileId})` : file.fileId);
    const status = cell(row, file.status);
    status.className = `status ${file.status}`;
    cell(row, `${file.entriesUploaded}/${file.entriesSkipped}/${file.entriesRejected}`, "num wide");
    cell(row, file.error || "", file.error ? "error-text" : "");
    body.append(row);
  }
  state.files.cursor = answer.nextCursor;
  $("more-files").hidden = !answer.nextCursor;
  $("files-empty").hidden = body.rows.length > 0;
  $("files-title").focus();
}
$("files-title").tabIndex = -1;
$("files-filter").addEventListener("change", () => state.files && openFiles(state.files.exportId));
$("more-files").addEventListener("click", () => state.files && openFiles(state.files.exportId, true));
$("files-close").addEventListener("click", () => { $("files-panel").hidden = true; state.files = null; });

// --- queues and dead letters ---------------------------------------------------
async function loadQueues() {
  const answer = await guarded(() => call("GET", "/queues"));
  if (!answer) return;
  const body = $("queues").tBodies[0];
  body.replaceChildren();
  for (const [key, name] of QUEUES) {
    const q = answer[key];
    if (!q) continue;
    const row = document.createElement("tr");
    row.dataset.queue = name;
    cell(row, name);
    cell(row, String(q.visible), "num");
    cell(row, String(q.inFlight), "num");
    cell(row, String(q.delayed), "num wide");
    cell(row, button(`${q.deadLetter} — view`, () => openDlq(name), "linkish"), "num");
    const paused = cell(row, q.paused ? "paused" : "receiving");
    if (q.paused) paused.className = "paused";
    cell(row, q.paused ? button("resume", () => pause(name, false)) : button("pause", () => pause(name, true), "danger"));
    body.append(row);
  }
  if (answer.overloaded) notice("A queue is over its backlog limit (overloaded).");
}
async function pause(queue, paused) {
  const answer = await guarded(() => call("POST", `/queues/${queue}/${paused ? "pause" : "resume"}`));
  if (answer) { notice(`${queue} ${paused ? "paused" : "resumed"}: every process follows within 10 s.`); loadQueues(); }
}
async function openDlq(queue) {
  state.dlq = queue;
  const answer = await guarded(() => call("GET", `/dlq/${queue}`));
  if (!answer) return;
  $("dlq-panel").hidden = false;
  $("dlq-title").textContent = `Dead letters of ${queue}`;
  const list = $("dlq-messages");
  list.replaceChildren();
  for (const m of answer.messages) {
    const item = document.createElement("li");
    item.dataset.messageId = m.messageId;
    const head = document.createElement("div");
    head.textContent = `${m.messageId} · sent ${m.sentAt} · received ${m.receiveCount}×`;
    const reason = document.createElement("div");
    reason.textContent = `reason: ${m.reason || "not given (dead-lettered by the queue's redrive policy)"}`;
    const pre = document.createElement("pre");
    pre.textContent = m.body;
    item.append(head, reason, pre, button("delete", () => deleteDead(queue, m.messageId), "danger"));
    list.append(item);
  }
  $("dlq-empty").hidden = answer.messages.length > 0;
  $("dlq-title").focus();
}
async function deleteDead(queue, messageId) {
  const done = await guarded(async () => { await call("DELETE", `/dlq/${queue}/${encodeURIComponent(messageId)}`); return true; });
  if (done) { notice(`Message ${messageId} deleted.`); openDlq(queue); loadQueues(); }
}
$("dlq-title").tabIndex = -1;
$("dlq-redrive").addEventListener("click", async () => {
  const queue = state.dlq;
  const answer = await guarded(() => call("POST", `/dlq/${queue}/redrive`, {}));
  if (answer) { notice(`Redrive of ${queue}: ${answer.moved} moved, ${answer.kept} kept (bodies the service would refuse).`); openDlq(queue); loadQueues(); }
});
$("dlq-refresh").addEventListener("click", () => state.dlq && openDlq(state.dlq));
$("dlq-close").addEventListener("click", () => { $("dlq-panel").hidden = true; state.dlq = null; });
$("refresh-queues").addEventListener("click", loadQueues);

// --- live ----------------------------------------------------------------------
function listen() {
  const source = new EventSource("/events");
  source.addEventListener("open", () => { $("live").textContent = "live"; });
  source.addEventListener("job", (event) => {
    try { renderJob(JSON.parse(event.data)); } catch (err) { showError(`A live event could not be read: ${err}`); }
  });
  source.addEventListener("error", () => { $("live").textContent = "live view reconnecting…"; });
}

setToken(token());
loadJobs(false);
loadQueues();
listen();
setInterval(loadQueues, 5000);
setInterval(() => {
  const now = Date.now();
  const quiet = [...state.jobs.values()].filter(
    (job) => ACTIVE.includes(job.status) && now - (state.heard.get(job.exportId) || 0) > QUIET_MS,
  );
  for (const job of quiet.slice(0, 20)) refreshJob(job.exportId);
}, QUIET_MS);
