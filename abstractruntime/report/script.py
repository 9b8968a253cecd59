"""The page's only script: draws the timeline from the embedded JSON, one page of rows at a time.

Data reaches the DOM through ``textContent`` and ``createElement`` only (never ``innerHTML``),
so text from a ledger cannot become markup. A row's detail is built the first time it is
opened, which keeps a 500-row page cheap however large the records are.
"""

SCRIPT = r"""(function () {
"use strict";
var data = JSON.parse(document.getElementById("report-data").textContent);
var rows = data.rows, size = data.page_size || 500, bySeq = {};
rows.forEach(function (r) { if (r.seq !== null && r.seq !== undefined) { bySeq[r.seq] = r; } });
var maxMs = data.stats.max_ms || 0, maxWait = data.stats.max_wait_ms || 0;
var shown = rows, page = 0;
var box = document.getElementById("rows"), info = document.getElementById("page-info");
var kindSel = document.getElementById("filter-kind"), find = document.getElementById("filter-text");
var prev = document.getElementById("prev"), next = document.getElementById("next");

function el(tag, cls, txt) {
  var e = document.createElement(tag);
  if (cls) { e.className = cls; }
  if (txt !== undefined && txt !== null) { e.textContent = String(txt); }
  return e;
}
function dur(ms) {
  if (ms === undefined || ms === null) { return ""; }
  if (ms < 1) { return ms.toFixed(3) + " ms"; }
  if (ms < 1000) { return ms.toFixed(1) + " ms"; }
  if (ms < 60000) { return (ms / 1000).toFixed(2) + " s"; }
  var s = Math.round(ms / 1000);
  if (s < 3600) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function str(v) {
  if (typeof v === "string") { return v; }
  try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
}
function block(parent, title, cls) {
  var d = el("div", "block" + (cls ? " " + cls : ""));
  d.appendChild(el("h4", null, title));
  parent.appendChild(d);
  return d;
}
function pre(parent, v, cls) { var p = el("pre", cls, str(v)); parent.appendChild(p); return p; }
function truncated(v) { return v && typeof v === "object" && v.truncated === true && "preview" in v; }
function big(parent, v) {
  if (truncated(v)) {
    parent.appendChild(el("p", "muted", "Too large for the page (" + v.chars + " characters): the first " +
      v.preview.length + " are shown. The whole record: abstractruntime ledger show " + data.run_id));
    pre(parent, v.preview);
    return true;
  }
  return false;
}
function calls(parent, list, title) {
  if (!Array.isArray(list) || !list.length) { return; }
  var b = block(parent, title, "calls");
  list.forEach(function (c) {
    var d = el("div", "call");
    d.appendChild(el("span", "call-name", (c && c.name) || "?"));
    if (c && c.call_id) { d.appendChild(el("span", "muted", " " + c.call_id)); }
    pre(d, c && c.arguments !== undefined ? c.arguments : c, "args");
    b.appendChild(d);
  });
}
function messages(parent, payload) {
  var b = block(parent, "Request", "request");
  if (payload.system_prompt) { message(b, {role: "system", content: payload.system_prompt}); }
  (Array.isArray(payload.messages) ? payload.messages : []).forEach(function (m) { message(b, m); });
  if (typeof payload.prompt === "string") { message(b, {role: "prompt", content: payload.prompt}); }
  var rest = {}, any = false;
  Object.keys(payload).forEach(function (k) {
    if (k !== "messages" && k !== "system_prompt" && k !== "prompt") { rest[k] = payload[k]; any = true; }
  });
  if (any) {
    var d = el("details", "params");
    d.appendChild(el("summary", null, "parameters (" + Object.keys(rest).join(", ") + ")"));
    pre(d, rest);
    b.appendChild(d);
  }
}
function message(parent, m) {
  m = m || {};
  var d = el("div", "msg role-" + String(m.role || "other").replace(/[^a-z_]/gi, ""));
  var who = String(m.role || "?") + (m.name ? " · " + m.name : "") + (m.tool_call_id ? " · " + m.tool_call_id : "");
  d.appendChild(el("div", "who", who));
  if (m.content !== undefined && m.content !== null && m.content !== "") { pre(d, m.content, "content"); }
  if (Array.isArray(m.tool_calls)) { calls(d, m.tool_calls, "tool calls"); }
  parent.appendChild(d);
}
function llmResult(parent, res) {
  var b = block(parent, "Response", "response");
  if (!res || typeof res !== "object") { pre(b, res); return; }
  if (res.content !== undefined && res.content !== null) { pre(b, res.content, "content"); }
  calls(b, res.tool_calls, "tool calls requested");
  var meta = [];
  ["model", "finish_reason"].forEach(function (k) { if (res[k]) { meta.push(k + ": " + res[k]); } });
  if (res.usage) { meta.push("usage: " + JSON.stringify(res.usage)); }
  if (meta.length) { b.appendChild(el("p", "muted", meta.join(" · "))); }
}
function toolResults(parent, res) {
  var b = block(parent, "Results", "results");
  if (!res || !Array.isArray(res.results)) { pre(b, res); return; }
  res.results.forEach(function (x) {
    var d = el("div", "call " + (x && x.success ? "ok" : "bad"));
    d.appendChild(el("span", "call-name", ((x && (x.name || x.call_id)) || "?") + (x && x.success ? " ✔" : " ✘")));
    pre(d, x && x.success ? x.output : (x && x.error), "args");
    b.appendChild(d);
  });
}
function waitBlock(parent, w) {
  var b = block(parent, "Wait", "wait");
  if (w.prompt) { b.appendChild(el("p", "prompt", w.prompt)); }
  if (Array.isArray(w.choices)) {
    var ul = el("ul", "choices");
    w.choices.forEach(function (c) { ul.appendChild(el("li", null, c)); });
    b.appendChild(ul);
  }
  calls(b, w.tool_calls, "tool calls waiting for approval");
  var rest = {};
  ["reason", "wait_key", "wait_id", "until", "resume_to", "calls_sha256"].forEach(function (k) {
    if (w[k] !== undefined) { rest[k] = w[k]; }
  });
  pre(b, rest, "small");
}
function answerBlock(parent, r) {
  var b = block(parent, "Answer", "answer");
  var a = r.answer;
  if (big(b, a)) { return; }
  if (a && typeof a === "object" && a.approval) {
    var ap = a.approval;
    b.appendChild(el("p", "decision", "decision: " + ap.decision + " · approved: " +
      JSON.stringify(ap.approved || []) +
      " · denied: " + JSON.stringify(ap.denied || []) + (ap.reason ? " · reason: " + ap.reason : "")));
    b.appendChild(el("p", "muted", "calls sha256: " + (ap.calls_sha256 || a.calls_sha256 || "?")));
    if (Array.isArray(a.results)) { toolResults(b, a); }
  } else if (a && typeof a === "object" && Object.keys(a).length === 1 && "answer" in a) {
    b.appendChild(el("p", "prompt", str(a.answer)));
  } else { pre(b, a); }
  b.appendChild(el("p", "muted", "by " + (r.by || "no actor recorded") + (r.wait_ms !== undefined ?
    " · after waiting " + dur(r.wait_ms) : "")));
}
function detail(r, host) {
  var box = el("div", "detail");
  var eff = r.eff !== undefined ? r.eff
    : (r.eff_ref !== undefined && bySeq[r.eff_ref] ? bySeq[r.eff_ref].eff : undefined);
  if (r.err !== undefined) { var e = block(box, "Error", "error"); if (!big(e, r.err)) { pre(e, r.err); } }
  if (r.bad) {
    var p = block(box, "Verification problem", "error");
    r.bad.forEach(function (t) { p.appendChild(el("p", null, t)); });
  }
  if (eff !== undefined && !big(box, eff)) {
    var payload = (eff && eff.payload) || {};
    if (r.eff_ref !== undefined) { box.appendChild(el("p", "muted", "effect as requested at seq " + r.eff_ref)); }
    if (r.etype === "llm_call") { messages(box, payload); }
    else if (r.etype === "tool_calls") { calls(box, payload.tool_calls, "Tool calls"); }
    else { pre(block(box, "Effect " + (r.etype || ""), "effect"), payload); }
    if (eff && eff.result_key) { box.appendChild(el("p", "muted", "result stored under vars." + eff.result_key)); }
  }
  if (r.wait) { waitBlock(box, r.wait); }
  if (r.answer !== undefined) { answerBlock(box, r); }
  if (r.res !== undefined && !r.wait) {
    if (truncated(r.res)) { big(block(box, "Result", "result"), r.res); }
    else if (r.etype === "llm_call" && r.status !== "started") { llmResult(box, r.res); }
    else if (r.etype === "tool_calls" && r.res && Array.isArray(r.res.results)) { toolResults(box, r.res); }
    else { pre(block(box, "Result", "result"), r.res); }
  }
  if (r.extra !== undefined) { var x = block(box, "Other fields", "extra"); if (!big(x, r.extra)) { pre(x, r.extra); } }
  var m = block(box, "Record", "meta");
  var dl = el("dl");
  Object.keys(r.meta || {}).forEach(function (k) {
    dl.appendChild(el("dt", null, {hash: "record hash", prev: "prev hash", step: "step id", key: "idempotency key",
      actor: "actor", t0: "started", t1: "ended", sig: "signature"}[k] || k));
    dl.appendChild(el("dd", null, str(r.meta[k])));
  });
  m.appendChild(dl);
  host.appendChild(box);
}
function rowEl(r) {
  var d = el("details", "row kind-" + r.kind + " st-" + r.status + (r.bad ? " bad" : ""));
  if (r.seq !== null && r.seq !== undefined) { d.id = "seq-" + r.seq; }
  if (r.etype) { d.setAttribute("data-etype", r.etype); }
  var s = el("summary");
  s.appendChild(el("span", "seq", r.seq === null || r.seq === undefined ? "—" : r.seq));
  s.appendChild(el("span", "time", r.off === undefined ? "" : "+" + dur(r.off)));
  s.appendChild(el("span", "node", r.node));
  s.appendChild(el("span", "what", (r.etype ? r.etype + " " : "") + r.kind + (r.status ? " · " + r.status : "") +
    (r.att > 1 ? " · attempt " + r.att : "")));
  var sum = el("span", "sum");
  (r.marks || []).forEach(function (m) { sum.appendChild(el("span", "mark " + m.type, m.type + " " + m.name)); });
  (r.bad || []).forEach(function (t) { sum.appendChild(el("span", "mark problem", "✘ " + t.split(":")[0])); });
  sum.appendChild(document.createTextNode(r.sum || ""));
  s.appendChild(sum);
  var cell = el("span", "dur"), bar = el("span", "bar"), ms = r.ms;
  if (r.wait_ms !== undefined) { bar.className = "bar waitbar"; ms = r.wait_ms; }
  var top = r.wait_ms !== undefined ? maxWait : maxMs;
  if (ms !== undefined && top > 0) { bar.style.width = Math.max(ms > 0 ? 1 : 0, 100 * ms / top) + "%"; }
  cell.appendChild(bar);
  cell.appendChild(el("span", "lbl", r.wait_ms !== undefined ? "waited " + dur(r.wait_ms) : dur(ms)));
  s.appendChild(cell);
  d.appendChild(s);
  d.addEventListener("toggle", function () {
    if (d.open && !d.getAttribute("data-built")) { d.setAttribute("data-built", "1"); detail(r, d); }
  });
  return d;
}
function render() {
  var pages = Math.max(1, Math.ceil(shown.length / size));
  page = Math.min(Math.max(0, page), pages - 1);
  var frag = document.createDocumentFragment();
  shown.slice(page * size, (page + 1) * size).forEach(function (r) { frag.appendChild(rowEl(r)); });
  box.textContent = "";
  box.appendChild(frag);
  info.textContent = "page " + (page + 1) + " of " + pages + " · " + shown.length +
    (shown.length === rows.length ? "" : " of " + rows.length) + " records";
  prev.disabled = page === 0;
  next.disabled = page >= pages - 1;
}
function keep(r, kind, q) {
  if (kind === "llm_call" || kind === "tool_calls") { if (r.etype !== kind) { return false; } }
  else if (kind === "wait") { if (!(r.wait || r.kind === "resume" || r.status === "waiting")) { return false; } }
  else if (kind === "failed") {
    if (!(r.err !== undefined || r.bad || r.att > 1 || r.status === "failed" || r.kind === "fail" ||
      r.kind === "unreadable")) { return false; }
  } else if (kind === "marked") { if (!r.marks) { return false; } }
  if (!q) { return true; }
  return (String(r.seq) + " " + (r.node || "") + " " + r.kind + " " + (r.etype || "") + " " + (r.sum || ""))
    .toLowerCase().indexOf(q) >= 0;
}
function filter() {
  var kind = kindSel.value, q = find.value.trim().toLowerCase();
  shown = !kind && !q ? rows : rows.filter(function (r) { return keep(r, kind, q); });
  page = 0;
  render();
}
function reveal() {
  var m = /^#seq-(\d+)$/.exec(window.location.hash);
  if (!m) { return; }
  var seq = Number(m[1]), at = -1, i;
  for (i = 0; i < shown.length; i++) { if (shown[i].seq === seq) { at = i; break; } }
  if (at < 0 && shown !== rows) { kindSel.value = ""; find.value = ""; shown = rows; return reveal(); }
  if (at < 0) { return; }
  page = Math.floor(at / size);
  render();
  var e = document.getElementById("seq-" + seq);
  if (e) { e.open = true; e.scrollIntoView(); }
}
prev.addEventListener("click", function () { page -= 1; render(); });
next.addEventListener("click", function () { page += 1; render(); });
kindSel.addEventListener("change", filter);
find.addEventListener("input", filter);
window.addEventListener("hashchange", reveal);
render();
reveal();
document.body.setAttribute("data-ready", "1");
})();
"""

__all__ = ["SCRIPT"]
