// Backazon's console: one page, no framework. Routes live in the address's #fragment;
// job state arrives as server-sent events (/api/events); everything else is the JSON
// API. Text from the server is only ever put in the page as text (no innerHTML).
"use strict";

let status = null;        // the last /api/status payload
let route = [];           // the #fragment split on '/'

// ---- helpers -------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    // Through the CSSOM: the page's policy refuses style attributes.
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

async function api(method, path, body) {
  const opts = { method, headers: { "x-backazon": "1" } };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  if (!r.ok) {
    const e = new Error((data && data.error) || r.statusText);
    e.field = data && data.field;
    e.status = r.status;
    throw e;
  }
  return data;
}

function bytes(n) {
  if (n === null || n === undefined) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function when(t) {
  if (!t) return "-";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

function seconds(s) {
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.round(s - 60 * m) + " s";
}

const main = () => document.getElementById("main");
function show(...kids) { main().replaceChildren(...kids.filter(k => k !== null && k !== undefined && k !== false)); }
function enc(s) { return encodeURIComponent(s); }

// ---- dashboard -----------------------------------------------------------------------

const STATE_TEXT = {
  running: "running", failed: "failed", overdue: "overdue", partial: "warnings", retrying: "retrying",
  ok: "ok", never: "never run",
};

function chart(history) {
  const runs = history.filter(r => r.stats || r.result === "failed" || r.result === "interrupted");
  if (!runs.length) return h("div", { class: "chart small muted" }, "No history yet.");
  const W = 360, H = 48, n = Math.max(runs.length, 30), bw = W / n;
  const maxS = Math.max(...runs.map(r => (r.stats ? r.stats.seconds : 0)), 0.001);
  const maxA = Math.max(...runs.map(r => (r.stats ? r.stats.bytes_added : 0)), 1);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const sizes = runs.map(r => (r.stats && r.stats.repository_bytes) || null).filter(x => x !== null);
  const minR = Math.min(...sizes), spanR = Math.max(1, Math.max(...sizes) - minR);
  const start = n - runs.length;
  const pts = [], repo = [];
  runs.forEach((r, i) => {
    const x = (start + i) * bw;
    const bad = !r.stats;
    const hgt = bad ? H : Math.max(2, (r.stats.seconds / maxS) * (H - 4));
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", x + 0.5);
    rect.setAttribute("y", H - hgt);
    rect.setAttribute("width", Math.max(1, bw - 1));
    rect.setAttribute("height", hgt);
    rect.setAttribute("fill", bad ? "#c62828" : r.result === "partial" ? "#e0a040" : "#9fb8da");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${when(r.started)}: ${r.result}` +
      (r.stats ? `, ${seconds(r.stats.seconds)}, ${bytes(r.stats.bytes_added)} added, ${bytes(r.stats.bytes)} in all` : "") +
      (r.stats && r.stats.repository_bytes ? `, repository ${bytes(r.stats.repository_bytes)}` : "") +
      (r.error ? `: ${r.error}` : "");
    rect.append(title);
    svg.append(rect);
    if (r.stats) pts.push(`${x + bw / 2},${H - 2 - (r.stats.bytes_added / maxA) * (H - 6)}`);
    if (r.stats && r.stats.repository_bytes) repo.push(`${x + bw / 2},${H - 2 - ((r.stats.repository_bytes - minR) / spanR) * (H - 6)}`);
  });
  for (const [points, color] of [[pts, "#1d2330"], [repo, "#1f8a4c"]]) {
    if (points.length < 2) continue;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "1");
    svg.append(line);
  }
  const last = runs.filter(r => r.stats && r.stats.repository_bytes).pop();
  return h("div", { class: "chart" }, svg,
    h("div", { class: "small muted" }, `Last ${runs.length} runs: bars are durations (red: failed), the dark line data added, the green line the repository's size` +
      (last ? ` (now ${bytes(last.stats.repository_bytes)})` : "") + "."));
}

/// A prune's step, and how far it is.
function stepView(p) {
  const s = p.step;
  const pct = s.total ? Math.min(100, Math.floor((100 * s.done) / s.total)) : null;
  const amount = n => s.unit === "bytes" ? bytes(n) : String(n);
  return h("div", { class: "progress", "data-test": "progress" },
    h("div", { class: "bar" + (pct === null ? " busy" : "") }, h("div", { style: `width:${pct || 0}%` })),
    h("div", { class: "small" }, `Prune, step ${s.step_number}: ${s.step}` +
      (pct !== null ? ` — ${pct}% (${amount(s.done)} of ${amount(s.total)})` : "")));
}

function progressView(p) {
  if (!p) return h("div", { class: "progress small muted" }, "Starting…");
  if (p.step) return stepView(p);
  const pct = p.expected_bytes ? Math.min(99, Math.floor((100 * p.bytes_done) / p.expected_bytes)) : null;
  const elapsed = (Date.now() - new Date(p.started)) / 1000;
  let eta = "";
  if (pct && pct > 2 && elapsed > 2) {
    const left = (elapsed * (100 - pct)) / pct;
    eta = `, about ${seconds(left)} left`;
  }
  return h("div", { class: "progress", "data-test": "progress" },
    h("div", { class: "bar" + (pct === null ? " busy" : "") }, h("div", { style: `width:${pct || 0}%` })),
    h("div", { class: "small" },
      (pct !== null ? `${pct}% · ` : "") +
      `${p.files} files, ${bytes(p.bytes_done)} done, ${bytes(p.bytes_added)} added` +
      (p.errors ? `, ${p.errors} errors` : "") + eta),
    h("div", { class: "small muted", title: p.current }, p.current));
}

function jobCard(j) {
  const last = j.last_run;
  const running = j.state === "running";
  const lastText = last
    ? [when(last.started), " — ", h("b", {}, last.result),
       last.summary ? h("div", { class: "small" }, last.summary) : null,
       last.error ? h("div", { class: "small error-text" }, last.error) : null,
       last.retry_at && last.result === "retrying" ? h("div", { class: "small", "data-test": "retry" }, "The repository could not be reached: trying again at " + when(last.retry_at)) : null,
       (last.notify_errors || []).map(e => h("div", { class: "small error-text" }, "Notification failed: " + e))]
    : "never";
  return h("div", { class: "card " + j.state, "data-job": j.name, "data-state": j.state },
    h("div", { class: "top" },
      h("h2", {}, j.name),
      h("span", { class: "badge " + j.state, "data-test": "state" }, STATE_TEXT[j.state] || j.state)),
    h("dl", {},
      h("dt", {}, "Backs up"), h("dd", {}, j.job.paths.join(", ")),
      h("dt", {}, "To"), h("dd", {}, j.job.repository + (j.job.replica ? " + " + j.job.replica : "")),
      h("dt", {}, "Schedule"), h("dd", {}, j.job.schedule || "by hand"),
      h("dt", {}, "Last run"), h("dd", { "data-test": "last-run" }, lastText),
      h("dt", {}, "Next run"), h("dd", {}, j.next_run ? when(j.next_run) : "-")),
    running ? progressView(j.progress) : null,
    h("div", { class: "actions" },
      running
        ? h("button", { class: "danger", onclick: () => act(j.name, "cancel") }, "Cancel")
        : h("button", { class: "primary", "data-test": "run", onclick: () => act(j.name, "run") }, "Run now"),
      h("a", { class: "button", href: `#/job/${enc(j.name)}` }, "Edit"),
      h("a", { class: "button", href: `#/snapshots/${enc(j.name)}` }, "Snapshots")),
    h("div", { class: "actions maintenance" },
      h("button", { class: "small", onclick: () => task(j.name, "check", { read_data: false }) }, "Check"),
      h("button", { class: "small", onclick: () => task(j.name, "check", { read_data: true }) }, "Verify all data"),
      h("button", { class: "small", disabled: running, onclick: () => act(j.name, "prune") }, "Prune"),
      status.mounts && status.mounts[j.name]
        ? h("button", { class: "small", "data-test": "unmount", onclick: () => unmount(j.name) }, `Unmount ${status.mounts[j.name]}`)
        : h("button", { class: "small", "data-test": "mount", onclick: () => mountDialog(j.name) }, "Mount…")),
    j.last_prune ? h("div", { class: "small muted", "data-test": "last-prune" }, `Last prune: ${when(j.last_prune.started)} — ${j.last_prune.result}` +
      (j.last_prune.summary ? `: ${j.last_prune.summary}` : "") + (j.last_prune.error ? `: ${j.last_prune.error}` : "")) : null,
    chart(j.history || []));
}

async function task(name, what, body) {
  try { await api("POST", `/api/jobs/${enc(name)}/${what}`, body); }
  catch (e) { alert(e.message); }
}

function dialog(title, ...body) {
  const modal = document.getElementById("modal");
  const close = () => { modal.hidden = true; modal.replaceChildren(); };
  modal.replaceChildren(h("div", { class: "dialog" }, h("h2", {}, title), ...body));
  modal.hidden = false;
  return close;
}

function mountDialog(name) {
  const point = h("input", { type: "text", name: "mountpoint", placeholder: "an empty folder, or a drive letter (B:) on Windows" });
  const err = h("div", { class: "err error-text" });
  const go = h("button", { class: "primary", "data-test": "do-mount", onclick: async () => {
    go.disabled = true;
    try { await api("POST", `/api/jobs/${enc(name)}/mount`, { mountpoint: point.value }); close(); }
    catch (e) { err.textContent = e.message; }
    go.disabled = false;
  } }, "Mount");
  const close = dialog(`Mount every snapshot of ${name}`,
    h("p", { class: "small" }, "The snapshots appear read-only, by date and by job, with a latest per job; copy files out with your file manager."),
    point, h("button", { onclick: () => pickFolder(p => (point.value = p)) }, "Choose…"), err,
    h("div", { class: "actions" }, go, h("button", { onclick: () => close() }, "Cancel")));
}

async function unmount(name) {
  try { await api("DELETE", `/api/jobs/${enc(name)}/mount`); } catch (e) { alert(e.message); }
}

function drawTasks(tasks) {
  const el = document.getElementById("tasks");
  const shown = (tasks || []).slice().reverse();
  el.hidden = !shown.length;
  el.replaceChildren(...shown.map(t => {
    const pct = t.total ? Math.min(100, Math.floor((100 * t.done) / t.total)) : null;
    const amount = n => t.unit === "bytes" ? bytes(n) : String(n);
    const sofar = t.total ? `${amount(t.done)} of ${amount(t.total)} · ` : t.done ? `${amount(t.done)} · ` : "";
    return h("div", { class: "task" + (t.error ? " failed" : t.finished ? " done" : ""), "data-task": t.kind, "data-done": t.finished ? (t.error ? "failed" : "ok") : null },
      h("b", {}, t.title), " ",
      t.finished ? h("span", { class: t.error ? "error-text" : "ok-text" }, t.error || t.summary)
        : h("span", { class: "small", "data-test": "task-progress" }, (pct !== null ? `${pct}% · ` : "") + (t.files ? `${t.files} files, ` : "") + sofar + (t.step || "")),
      !t.finished ? h("div", { class: "bar" + (pct === null ? " busy" : "") }, h("div", { style: `width:${pct || 0}%` })) : null);
  }));
}

async function act(name, what) {
  try { await api("POST", `/api/jobs/${enc(name)}/${what}`); }
  catch (e) { alert(e.message); }
}

function dashboard() {
  if (!status) return;
  const bad = status.jobs.filter(j => ["failed", "overdue", "retrying"].includes(j.state));
  show(
    h("h1", {}, "Jobs", h("a", { class: "button", href: "#/job/new", "data-test": "new-job" }, "New job")),
    status.error ? h("div", { class: "banner" }, "The jobs file has an error: " + status.error) : null,
    bad.length ? h("div", { class: "banner", "data-test": "alert" },
      `${bad.length} job${bad.length > 1 ? "s need" : " needs"} attention: ` + bad.map(j => `${j.name} (${STATE_TEXT[j.state]})`).join(", ")) : null,
    status.jobs.length
      ? h("div", { class: "cards" }, status.jobs.map(jobCard))
      : h("p", { class: "muted" }, "No jobs yet. ", h("a", { href: "#/job/new" }, "Create one"), "."));
}

// ---- job editor ----------------------------------------------------------------------

const KEEP = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];

function field(name, label, input, hint) {
  return h("div", { class: "field", "data-field": name },
    h("label", {}, label), input, hint ? h("div", { class: "hint" }, hint) : null,
    h("div", { class: "err" }));
}

function lines(s) { return s.split("\n").map(x => x.trim()).filter(Boolean); }

async function editor(name) {
  let job = { repository: "", paths: [], exclude: [], keep: {} };
  let passwordCommandSet = false;
  if (name) {
    try {
      const r = await api("GET", `/api/jobs/${enc(name)}`);
      job = r.job;
      passwordCommandSet = !!job.password_command_set;
    } catch (e) { show(h("div", { class: "banner" }, e.message)); return; }
  }
  const paths = [...(job.paths || [])];
  const pathList = h("ul", {});
  const drawPaths = () => pathList.replaceChildren(...paths.map((p, i) =>
    h("li", {}, h("code", {}, p), h("button", { type: "button", onclick: () => { paths.splice(i, 1); drawPaths(); } }, "Remove"))));
  drawPaths();
  const inp = (k, v, extra) => h("input", Object.assign({ type: "text", name: k, value: v ?? "" }, extra || {}));
  const preview = h("div", { class: "hint", "data-test": "schedule-preview" });
  const schedule = inp("schedule", job.schedule, { placeholder: "daily 02:30", oninput: () => previewSchedule() });
  let timer = null;
  const previewSchedule = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const s = schedule.value.trim();
      setError("schedule", null);
      if (!s) { preview.textContent = "Runs only when started by hand."; return; }
      try {
        const r = await api("GET", `/api/schedule?schedule=${enc(s)}`);
        preview.textContent = "Next runs: " + r.next.join(" · ");
      } catch (e) { preview.textContent = ""; setError("schedule", e.message); }
    }, 250);
  };
  const keepInputs = KEEP.map(k => field("keep." + k, k, h("input", { type: "number", min: 0, name: "keep." + k, value: (job.keep || {})[k] ?? "", class: "narrow" })));
  const form = h("form", { class: "job", onsubmit: (e) => { e.preventDefault(); save(); } },
    field("name", "Name", inp("name", name, name ? { disabled: true } : {}), "Letters, digits, '-', '_' and '.'."),
    h("div", { class: "field paths", "data-field": "paths" },
      h("label", {}, "Folders and files to back up"), pathList,
      h("button", { type: "button", "data-test": "add-folder", onclick: () => pickFolder(p => { if (!paths.includes(p)) paths.push(p); drawPaths(); }) }, "Add a folder…"),
      h("div", { class: "err" })),
    field("exclude", "Exclude", h("textarea", { name: "exclude", rows: 3 }, (job.exclude || []).join("\n")), "One glob a line: *.tmp, node_modules, /home/*/Downloads"),
    field("schedule", "Schedule", schedule, "hourly, daily HH:MM, weekly DAY HH:MM, monthly DAY HH:MM, or a cron expression"),
    preview,
    h("div", { class: "field" }, h("label", {}, "Keep (retention, applied after each run)"), h("div", { class: "row" }, keepInputs)),
    notifyFields(job.notify || {}),
    field("repository", "Repository", inp("repository", job.repository, { placeholder: "/mnt/nas/backazon or s3://bucket/prefix" })),
    h("div", { class: "row" },
      field("s3_endpoint", "S3 endpoint", inp("s3_endpoint", job.s3_endpoint, { placeholder: "AWS when empty" })),
      field("s3_region", "S3 region", inp("s3_region", job.s3_region))),
    field("replica", "Replica (optional second copy)", inp("replica", job.replica)),
    h("div", { class: "actions field" },
      h("button", { type: "button", "data-test": "test-repository", onclick: testRepository }, "Test connection"),
      h("span", { class: "small", "data-test": "repository-result" })),
    h("div", { class: "row" },
      field("password_file", "Password file", inp("password_file", job.password_file)),
      field("password_command", "or password command", inp("password_command", "", { placeholder: passwordCommandSet ? "(set; leave empty to keep)" : "" }))),
    h("div", { class: "hint", style: "margin:-8px 0 14px" }, "The password itself is never shown here; saving opens the repository with it to check it."),
    advancedFields(job),
    h("div", { class: "row" },
      field("compression", "zstd level", h("input", { type: "number", name: "compression", min: 0, max: 22, value: job.compression ?? "", class: "narrow" })),
      field("tags", "Tags", inp("tags", (job.tags || []).join(" ")))),
    h("div", { class: "err form-err error-text" }),
    h("div", { class: "actions" },
      h("button", { class: "primary", type: "submit", "data-test": "save" }, name ? "Save" : "Create job"),
      name ? h("button", { type: "button", class: "danger", onclick: remove }, "Remove job") : null,
      h("a", { class: "button", href: "#/" }, "Cancel")));
  show(h("h1", {}, name ? `Job ${name}` : "New job"), form);
  previewSchedule();

  function setError(f, msg) {
    const el = form.querySelector(`[data-field="${CSS.escape(f)}"]`) || form.querySelector(".form-err").parentElement;
    const err = el.querySelector(".err") || form.querySelector(".form-err");
    el.classList.toggle("invalid", !!msg);
    err.textContent = msg || "";
    const folded = el.closest("details");
    if (msg && folded) folded.open = true;
  }

  async function testRepository() {
    const said = form.querySelector("[data-test=repository-result]");
    for (const f of ["repository", "replica", "password_file", "password_command"]) setError(f, null);
    said.textContent = "Opening…";
    said.className = "small";
    const v = k => form.elements[k].value.trim();
    const j = { repository: v("repository"), paths: ["/"] };
    for (const k of ["replica", "s3_endpoint", "s3_region", "password_file", "password_command"]) if (v(k)) j[k] = v(k);
    if (v("replica_s3_endpoint")) j.replica_s3_endpoint = v("replica_s3_endpoint");
    if (form.elements.s3_path_style.checked) j.s3_path_style = true;
    try {
      const r = await api("POST", "/api/test-repository", { name: name || v("name"), job: j });
      said.textContent = r.ok;
      said.className = "small ok-text";
    } catch (e) {
      said.textContent = "";
      setError(e.field || "repository", e.message);
    }
  }

  async function save() {
    form.querySelectorAll(".err").forEach(e => (e.textContent = ""));
    form.querySelectorAll(".invalid").forEach(e => e.classList.remove("invalid"));
    const v = k => form.elements[k].value.trim();
    const out = { repository: v("repository"), paths };
    for (const k of ["replica", "s3_endpoint", "s3_region", "password_file", "password_command"]) if (v(k)) out[k] = v(k);
    if (v("schedule")) out.schedule = v("schedule");
    const ex = lines(form.elements.exclude.value);
    if (ex.length) out.exclude = ex;
    const tags = v("tags").split(/\s+/).filter(Boolean);
    if (tags.length) out.tags = tags;
    if (v("compression")) out.compression = Number(v("compression"));
    const keep = {};
    for (const k of KEEP) if (v("keep." + k)) keep[k] = Number(v("keep." + k));
    if (v("keep.within")) keep.within = v("keep.within");
    if (Object.keys(keep).length) out.keep = keep;
    const notify = collectNotify(form);
    if (notify) out.notify = notify;
    for (const k of ["host", "prune_schedule", "replica_s3_endpoint", "exclude_larger_than"]) if (v(k)) out[k] = v(k);
    const present = lines(form.elements.exclude_if_present.value);
    if (present.length) out.exclude_if_present = present;
    for (const k of ["exclude_caches", "s3_path_style", "use_vss"]) if (form.elements[k] && form.elements[k].checked) out[k] = true;
    // Kept as the jobs file has it: a list of files of excludes.
    if (job.exclude_file !== undefined) out.exclude_file = job.exclude_file;
    const button = form.querySelector("[data-test=save]");
    button.disabled = true;
    try {
      if (name) await api("PUT", `/api/jobs/${enc(name)}`, { name, job: out });
      else await api("POST", "/api/jobs", { name: v("name"), job: out });
      location.hash = "#/";
    } catch (e) {
      setError(e.field && form.querySelector(`[data-field="${CSS.escape(e.field)}"]`) ? e.field : "", e.message);
    } finally { button.disabled = false; }
  }

  async function remove() {
    if (!confirm(`Remove job ${name}? Its snapshots stay in the repository.`)) return;
    try { await api("DELETE", `/api/jobs/${enc(name)}`); location.hash = "#/"; }
    catch (e) { alert(e.message); }
  }
}

/// The settings fewer people need, folded away unless one of them is set.
function advancedFields(job) {
  const inp = (k, v, extra) => h("input", Object.assign({ type: "text", name: k, value: v ?? "" }, extra || {}));
  const box = (k, label, hint) => h("div", { class: "field", "data-field": k },
    h("label", {}, h("input", { type: "checkbox", name: k, checked: !!job[k] }), " ", label),
    hint ? h("div", { class: "hint" }, hint) : null, h("div", { class: "err" }));
  const set = ["exclude_if_present", "exclude_caches", "exclude_larger_than", "host", "prune_schedule",
    "replica_s3_endpoint", "s3_path_style", "use_vss"].some(k => job[k] !== undefined) || !!(job.keep || {}).within;
  return h("details", { class: "advanced", open: set, "data-test": "advanced" },
    h("summary", {}, "More settings"),
    h("div", { class: "row" },
      field("exclude_if_present", "Skip folders holding", h("textarea", { name: "exclude_if_present", rows: 2 }, (job.exclude_if_present || []).join("\n")), "A file name a line, such as .nobackup"),
      field("exclude_larger_than", "Skip files larger than", inp("exclude_larger_than", job.exclude_larger_than, { placeholder: "2G", class: "narrow" }))),
    box("exclude_caches", "Skip cache folders (CACHEDIR.TAG)"),
    h("div", { class: "row" },
      field("prune_schedule", "Prune schedule", inp("prune_schedule", job.prune_schedule, { placeholder: "monthly 1 04:00" }), "When unused data is deleted from the repository; empty: never by itself"),
      field("keep.within", "Keep all within", inp("keep.within", (job.keep || {}).within, { placeholder: "30d", class: "narrow" }))),
    h("div", { class: "row" },
      field("host", "Host name in snapshots", inp("host", job.host, { placeholder: "this computer's name" })),
      field("replica_s3_endpoint", "Replica's S3 endpoint", inp("replica_s3_endpoint", job.replica_s3_endpoint, { placeholder: "as the repository's" }))),
    box("s3_path_style", "S3 path-style addressing", "Most S3-compatible servers (MinIO, Garage) need it; AWS does not."),
    status && status.windows ? box("use_vss", "Read files from a shadow copy (VSS)", "Files held open by other programs are read whole; needs administrator rights.") : null);
}

const EVENTS = { failure: "fails", warning: "skips files", success: "succeeds" };

function notifyFields(n) {
  const m = n.email || {};
  const on = n.on && n.on.length ? n.on : ["failure", "warning"];
  const inp = (k, v, extra) => h("input", Object.assign({ type: "text", name: k, value: v ?? "" }, extra || {}));
  const result = h("span", { class: "small", "data-test": "notify-result" });
  const test = async (e) => {
    const form = e.target.form;
    result.textContent = "Sending…";
    result.className = "small";
    form.querySelectorAll(".notify .err").forEach(x => (x.textContent = ""));
    try {
      const r = await api("POST", "/api/notify-test", { name: form.elements.name.value || "test", notify: collectNotify(form) || {} });
      result.textContent = r.failed.length ? "Failed: " + r.failed.join("; ") : "Sent.";
      result.className = "small " + (r.failed.length ? "error-text" : "ok-text");
    } catch (err) {
      const f = err.field && form.querySelector(`[data-field="${CSS.escape(err.field)}"] .err`);
      if (f) f.textContent = err.message;
      result.textContent = err.message;
      result.className = "small error-text";
    }
  };
  return h("fieldset", { class: "notify" }, h("legend", {}, "Notifications"),
    h("div", { class: "field", "data-field": "notify.on" }, h("label", {}, "Tell me when a run"),
      Object.entries(EVENTS).map(([k, t]) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "notify.on." + k, checked: on.includes(k) }), " " + t)),
      h("div", { class: "err" })),
    field("notify.webhook", "Webhook URL", inp("notify.webhook", n.webhook, { placeholder: "https://hooks.example.com/…" }), "Receives a JSON summary of the run (POST)."),
    field("notify.healthchecks", "Healthchecks URL", inp("notify.healthchecks", n.healthchecks, { placeholder: "https://hc-ping.com/…" }), "Pinged when a run starts (/start), ends well, or fails (/fail)."),
    h("div", { class: "row" },
      field("notify.email.to", "Email to", inp("notify.email.to", (m.to || []).join(", "), { placeholder: "me@example.com" })),
      field("notify.email.from", "From", inp("notify.email.from", m.from, { placeholder: "backazon@example.com" }))),
    h("div", { class: "row" },
      field("notify.email.server", "SMTP server", inp("notify.email.server", m.server)),
      field("notify.email.port", "Port", h("input", { type: "number", name: "notify.email.port", min: 1, max: 65535, value: m.port ?? "", class: "narrow" })),
      field("notify.email.security", "Security", h("select", { name: "notify.email.security" },
        ["starttls", "tls", "none"].map(v => h("option", { value: v, selected: (m.security || "starttls") === v }, v))))),
    h("div", { class: "row" },
      field("notify.email.username", "SMTP user", inp("notify.email.username", m.username)),
      field("notify.email.password_file", "SMTP password file", inp("notify.email.password_file", m.password_file)),
      field("notify.email.ca_file", "Extra CA certificate (PEM)", inp("notify.email.ca_file", m.ca_file))),
    h("div", { class: "actions" }, h("button", { type: "button", "data-test": "notify-test", onclick: test }, "Send test"), result));
}

function collectNotify(form) {
  const v = k => (form.elements[k] ? form.elements[k].value.trim() : "");
  const n = {};
  const on = Object.keys(EVENTS).filter(k => form.elements["notify.on." + k].checked);
  if (on.join() !== "failure,warning") n.on = on;
  if (v("notify.webhook")) n.webhook = v("notify.webhook");
  if (v("notify.healthchecks")) n.healthchecks = v("notify.healthchecks");
  if (v("notify.email.to") || v("notify.email.server")) {
    const m = { to: v("notify.email.to").split(/[,\s]+/).filter(Boolean), from: v("notify.email.from"), server: v("notify.email.server") };
    if (v("notify.email.port")) m.port = Number(v("notify.email.port"));
    if (v("notify.email.security") !== "starttls") m.security = v("notify.email.security");
    for (const k of ["username", "password_file", "ca_file"]) if (v("notify.email." + k)) m[k] = v("notify.email." + k);
    n.email = m;
  }
  return Object.keys(n).length ? n : null;
}

function pickFolder(done) {
  const modal = document.getElementById("modal");
  const list = h("div", { class: "list", "data-test": "folders" });
  const here = h("div", { class: "small" });
  let current = "";
  const close = () => { modal.hidden = true; modal.replaceChildren(); };
  const choose = h("button", { class: "primary", "data-test": "choose-folder", onclick: () => { if (current) { done(current); close(); } } }, "Choose this folder");
  async function go(path) {
    try {
      const r = await api("GET", `/api/folders?path=${enc(path)}`);
      current = r.path;
      here.textContent = r.path || "Start: your home folder and this computer's drives";
      choose.disabled = !r.path;
      list.replaceChildren(
        r.parent ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); go(r.parent); } }, "⬑ up") : (r.path ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); go(""); } }, "⬑ start") : null),
        ...r.folders.map(f => h("a", { href: "#", "data-name": f.name, onclick: (e) => { e.preventDefault(); go(f.path); } }, "📁 " + f.name)));
    } catch (e) { here.textContent = e.message; }
  }
  modal.replaceChildren(h("div", { class: "dialog" }, h("h2", {}, "Choose a folder"), here, list,
    h("div", { class: "actions" }, choose, h("button", { onclick: close }, "Close"))));
  modal.hidden = false;
  go("");
}

// ---- snapshots -----------------------------------------------------------------------

async function snapshotsView(job) {
  const jobs = status ? status.jobs.map(j => j.name) : [];
  if (!job && jobs.length) job = jobs[0];
  const picker = h("select", { onchange: (e) => (location.hash = `#/snapshots/${enc(e.target.value)}`) },
    jobs.map(n => h("option", { value: n, selected: n === job }, n)));
  if (!job) { show(h("h1", {}, "Snapshots"), h("p", { class: "muted" }, "No jobs yet.")); return; }
  show(h("h1", {}, "Snapshots of ", picker), h("p", { class: "muted" }, "Opening the repository…"));
  let r;
  try { r = await api("GET", `/api/jobs/${enc(job)}/snapshots`); }
  catch (e) { show(h("h1", {}, "Snapshots of ", picker), h("div", { class: "banner" }, e.message)); return; }
  const text = h("input", { type: "search", placeholder: "id, host, tag or path", "data-test": "filter" });
  const onlyJob = h("input", { type: "checkbox", checked: true });
  const choice = (what, values) => h("select", { "data-test": "filter-" + what },
    h("option", { value: "" }, `any ${what}`), [...new Set(values)].sort().map(v => h("option", { value: v }, v)));
  const host = choice("host", r.snapshots.map(s => s.host));
  const tag = choice("tag", r.snapshots.flatMap(s => s.tags || []));
  const from = h("input", { type: "date", title: "taken on or after", "data-test": "filter-from" });
  const until = h("input", { type: "date", title: "taken on or before", "data-test": "filter-until" });
  const body = h("tbody", {});
  const draw = () => {
    const q = text.value.trim().toLowerCase();
    // The days are this computer's: from its midnight to the end of the day.
    const after = from.value ? new Date(from.value + "T00:00:00") : null;
    const before = until.value ? new Date(until.value + "T23:59:59.999") : null;
    const rows = r.snapshots.filter(s => (!onlyJob.checked || s.job === job) &&
      (!host.value || s.host === host.value) && (!tag.value || (s.tags || []).includes(tag.value)) &&
      (!after || new Date(s.time) >= after) && (!before || new Date(s.time) <= before) &&
      (!q || [s.short, s.host, s.time, when(s.time), ...(s.tags || []), ...(s.paths || [])].join(" ").toLowerCase().includes(q)));
    body.replaceChildren(...rows.slice(0, 1000).map(s => h("tr", { "data-snapshot": s.short },
      h("td", {}, h("input", { type: "checkbox", "data-test": "pick", value: s.short, onchange: pickChanged })),
      h("td", {}, h("a", { href: `#/browse/${enc(job)}/${s.short}/` }, s.short)),
      h("td", {}, when(s.time)), h("td", {}, s.host), h("td", {}, s.job || "-"),
      h("td", {}, (s.tags || []).join(", ")), h("td", { class: "num" }, s.files),
      h("td", { class: "num" }, bytes(s.bytes)), h("td", { class: "num" }, bytes(s.added)),
      h("td", { class: "name" }, (s.paths || []).join(", ")))));
    count.textContent = `${rows.length} of ${r.snapshots.length} snapshots` + (rows.length > 1000 ? " (first 1,000 shown)" : "");
  };
  const count = h("span", { class: "muted" });
  const compare = h("button", { disabled: true, "data-test": "compare", onclick: () => {
    const picked = [...body.querySelectorAll("[data-test=pick]:checked")].map(x => x.value);
    const byTime = picked.map(id => r.snapshots.find(s => s.short === id)).sort((x, y) => x.time.localeCompare(y.time));
    location.hash = `#/diff/${enc(job)}/${byTime[0].short}/${byTime[1].short}`;
  } }, "Compare the two ticked");
  function pickChanged() { compare.disabled = body.querySelectorAll("[data-test=pick]:checked").length !== 2; }
  const find = h("input", { type: "search", placeholder: "a file name, in every snapshot", "data-test": "search" });
  const findForm = h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); if (find.value.trim()) location.hash = `#/search/${enc(job)}/${enc(find.value.trim())}`; } },
    find, h("button", { type: "submit" }, "Find"));
  text.addEventListener("input", draw);
  for (const el of [onlyJob, host, tag, from, until]) el.addEventListener("change", draw);
  show(h("h1", {}, "Snapshots of ", picker),
    h("div", { class: "filters" }, text, host, tag, h("label", { class: "small" }, "from ", from), h("label", { class: "small" }, "to ", until),
      h("label", {}, onlyJob, " only this job's"), h("span", { "data-test": "count" }, count), compare, findForm),
    h("table", {}, h("thead", {}, h("tr", {}, ["", "Snapshot", "Time", "Host", "Job", "Tags"].map(t => h("th", {}, t)),
      ["Files", "Size", "Added"].map(t => h("th", { class: "num" }, t)), h("th", {}, "Paths"))), body));
  draw();
}

async function browse(job, snap, path) {
  const parts = path.split("/").filter(Boolean);
  const crumbs = h("div", { class: "crumbs" },
    h("a", { href: `#/snapshots/${enc(job)}` }, "Snapshots"), " / ",
    h("a", { href: `#/browse/${enc(job)}/${snap}/` }, snap),
    parts.map((p, i) => [" / ", h("a", { href: `#/browse/${enc(job)}/${snap}/${parts.slice(0, i + 1).map(enc).join("/")}` }, p)]));
  const base = "/" + parts.join("/");
  const body = h("tbody", {});
  const more = h("button", { hidden: true, "data-test": "more" }, "Show more");
  const info = h("span", { class: "muted small" });
  const restoreButton = h("button", { "data-test": "restore", onclick: () => restoreDialog(job, snap, base === "/" ? "" : base) }, "Restore this folder…");
  const zipLink = h("a", { class: "button", "data-test": "zip", download: "", href: `/api/jobs/${enc(job)}/zip?snapshot=${enc(snap)}&path=${enc(base === "/" ? "" : base)}` }, "Download as zip");
  show(h("h1", {}, `Snapshot ${snap}`, restoreButton, zipLink), crumbs,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Size"), h("th", {}, "Modified"), h("th", {}, ""))), body),
    h("div", { class: "actions", style: "margin-top:10px" }, more, info));
  let offset = 0;
  async function page() {
    more.disabled = true;
    try {
      const r = await api("GET", `/api/jobs/${enc(job)}/ls?snapshot=${enc(snap)}&path=${enc(base === "/" ? "" : base)}&offset=${offset}&limit=500`);
      offset += r.entries.length;
      body.append(...r.entries.map(e => {
        const p = (base === "/" ? "" : base) + "/" + e.name;
        const link = e.type === "dir"
          ? h("a", { href: `#/browse/${enc(job)}/${snap}${p.split("/").map(enc).join("/")}` }, "📁 " + e.name)
          : h("span", {}, e.name);
        const dl = e.type === "file"
          ? h("a", { href: `/api/jobs/${enc(job)}/download?snapshot=${enc(snap)}&path=${enc(p)}`, download: e.name, "data-test": "download" }, "Download")
          : null;
        return h("tr", { "data-entry": e.name }, h("td", { class: "name" }, link),
          h("td", { class: "num" }, e.type === "file" ? bytes(e.size) : ""), h("td", {}, when(e.mtime)), h("td", {}, dl));
      }));
      more.hidden = !r.more;
      info.textContent = `${offset} ${offset === 1 ? "entry" : "entries"}` + (r.more ? " so far" : "");
    } catch (e) { info.textContent = e.message; }
    more.disabled = false;
  }
  more.addEventListener("click", page);
  await page();
}

function restoreDialog(job, snap, path) {
  const target = h("input", { type: "text", name: "target", placeholder: "a folder of this computer, like /home/alice/restored" });
  const overwrite = h("input", { type: "checkbox", name: "overwrite" });
  const err = h("div", { class: "err error-text" });
  const go = h("button", { class: "primary", "data-test": "do-restore", onclick: async () => {
    go.disabled = true;
    try {
      await api("POST", `/api/jobs/${enc(job)}/restore`, { snapshot: snap, path, target: target.value, overwrite: overwrite.checked });
      close();
    } catch (e) { err.textContent = e.message; }
    go.disabled = false;
  } }, "Restore");
  const close = dialog(`Restore ${path || "/"} from ${snap}`,
    h("p", { class: "small" }, "Its contents go into the folder you choose; files already there whole are left as they are unless you tick the box."),
    target, h("button", { onclick: () => pickFolder(p => (target.value = p)) }, "Choose…"),
    h("label", { class: "check" }, overwrite, " rewrite files that are already there"), err,
    h("div", { class: "actions" }, go, h("button", { onclick: () => close() }, "Cancel")));
}

// ---- comparing and searching -----------------------------------------------------

async function diffView(job, a, b) {
  show(h("h1", {}, `Changes from ${a} to ${b}`), h("p", { class: "muted" }, "Comparing…"));
  let r;
  try { r = await api("GET", `/api/jobs/${enc(job)}/diff?a=${enc(a)}&b=${enc(b)}`); }
  catch (e) { show(h("h1", {}, "Compare"), h("div", { class: "banner" }, e.message)); return; }
  const part = (key, title) => h("section", { class: "diff", "data-diff": key },
    h("h2", {}, `${title}: ${r.counts[key]}`),
    r.counts[key] > r[key].length ? h("p", { class: "small muted" }, `The first ${r[key].length} are listed.`) : null,
    h("ul", {}, r[key].map(p => h("li", {}, h("code", {}, p)))));
  show(h("h1", {}, `Changes from ${r.a.id} (${when(r.a.time)}) to ${r.b.id} (${when(r.b.time)})`),
    h("div", { class: "crumbs" }, h("a", { href: `#/snapshots/${enc(job)}` }, "Snapshots")),
    part("added", "Added"), part("removed", "Removed"), part("changed", "Changed"));
}

async function searchView(job, q) {
  show(h("h1", {}, `Files named like “${q}”`), h("p", { class: "muted" }, "Searching every snapshot…"));
  let r;
  try { r = await api("GET", `/api/jobs/${enc(job)}/search?q=${enc(q)}`); }
  catch (e) { show(h("h1", {}, "Search"), h("div", { class: "banner" }, e.message)); return; }
  const rows = r.hits.map(x => {
    const dir = x.path.split("/").slice(0, -1).map(enc).join("/");
    return h("tr", { "data-hit": x.path },
      h("td", { class: "name" }, h("a", { href: `#/browse/${enc(job)}/${x.snapshot}${dir}` }, x.path)),
      h("td", {}, x.snapshot), h("td", {}, when(x.time)),
      h("td", { class: "num" }, x.type === "file" ? bytes(x.size) : "folder"),
      h("td", {}, x.type === "file" ? h("a", { href: `/api/jobs/${enc(job)}/download?snapshot=${x.snapshot}&path=${enc(x.path)}`, download: "" }, "Download") : ""));
  });
  show(h("h1", {}, `Files named like “${q}”`),
    h("div", { class: "crumbs" }, h("a", { href: `#/snapshots/${enc(job)}` }, "Snapshots")),
    h("p", { class: "small muted" }, `${r.hits.length} found` + (r.complete ? " in every snapshot." : " (the search stopped early; narrow it down).")),
    h("table", {}, h("thead", {}, h("tr", {}, ["Path", "Snapshot", "Time", "Size", ""].map(t => h("th", {}, t)))), h("tbody", {}, rows)));
}

// ---- log -----------------------------------------------------------------------------

async function logView() {
  const jobs = status ? status.jobs.map(j => j.name) : [];
  const job = h("select", {}, h("option", { value: "" }, "all jobs"), jobs.map(n => h("option", { value: n }, n)));
  const level = h("select", {}, h("option", { value: "" }, "everything"), h("option", { value: "error" }, "failures only"));
  const pre = h("pre", { class: "log" });
  const load = async () => {
    const r = await api("GET", `/api/log?job=${enc(job.value)}&level=${level.value}`);
    pre.textContent = r.lines.join("\n") || "(nothing logged)";
    pre.scrollTop = pre.scrollHeight;
  };
  job.addEventListener("change", load);
  level.addEventListener("change", load);
  show(h("h1", {}, "Log"), h("div", { class: "filters" }, job, level, h("button", { onclick: load }, "Refresh")), pre);
  await load();
}

// ---- routing and live state ----------------------------------------------------------

function render() {
  route = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [view, a, b, ...rest] = route;
  document.querySelectorAll("[data-nav]").forEach(n =>
    n.classList.toggle("active", n.dataset.nav === (view || "dashboard") || (view === "browse" && n.dataset.nav === "snapshots")));
  if (!view) return dashboard();
  if (view === "job") return editor(a === "new" ? null : a);
  if (view === "snapshots") return snapshotsView(a);
  if (view === "browse") return browse(a, b, rest.join("/"));
  if (view === "log") return logView();
  if (view === "diff") return diffView(a, b, rest[0]);
  if (view === "search") return searchView(a, b);
  show(h("p", {}, "Unknown page. ", h("a", { href: "#/" }, "Back to the dashboard")));
}

function setStatus(s) {
  // Events carry a job's history only when it changed: keep the one we have.
  const before = new Map((status ? status.jobs : []).map(j => [j.name, j.history]));
  for (const j of s.jobs) if (!j.history) j.history = before.get(j.name) || [];
  status = s;
  const d = document.getElementById("daemon");
  d.textContent = s.daemon ? `daemon running (${s.daemon})` : "daemon not running: scheduled jobs wait until it runs";
  // Served to other computers: a session opened with the password can be closed.
  document.getElementById("signout").hidden = !s.remote;
  drawTasks(s.tasks);
  if (!route[0]) dashboard();
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", () => {
  let heard = false;
  const events = new EventSource("/api/events");
  events.addEventListener("status", (e) => {
    const first = !heard;
    heard = true;
    setStatus(JSON.parse(e.data));
    // Pages other than the dashboard (which setStatus draws) wait for the jobs' list.
    if (first && route[0]) render();
  });
  // The first event renders the page; a console that cannot be reached says why.
  events.addEventListener("error", async () => {
    try { await api("GET", "/api/status"); } catch (e) {
      // The session ended (signed out elsewhere, or idle too long): sign in again.
      if (e.status === 401 && status && status.remote) { location.href = "/login"; return; }
      if (!heard) show(h("div", { class: "banner" }, e.message));
    }
  });
  document.getElementById("signout").addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } finally { location.href = "/login"; }
  });
  route = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
});
