// Switchboard dashboard: one live WebSocket, plain DOM, no build step.
// Every string from a call (what the caller said, what the model said) is
// untrusted: it only ever reaches the page through textContent.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const calls = new Map(); // sid -> summary
let selected = null;
let socket = null;
let currentTab = "transcript";

function withToken(path) {
  if (!token) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
}

async function api(path) {
  const response = await fetch(withToken(path), { cache: "no-store" });
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clock(ms) {
  if (!ms) return "-";
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function plural(n, word) {
  return n + " " + word + (n === 1 ? "" : "s");
}

function fmt(ms) {
  return ms === null || ms === undefined ? "-" : Math.round(ms).toString();
}

// ------------------------------------------------------------------ call list

function callRow(c) {
  const li = el("li", "call-row" + (c.open ? " open" : "") + (c.problems.length ? " has-problems" : ""));
  li.dataset.call = c.call;
  if (c.call === selected) li.classList.add("selected");
  li.append(el("span", "sid", c.call));
  li.append(el("span", "who", (c.from || "?") + " \u2192 " + (c.to || "?")));
  const meta = el("span", "meta");
  meta.textContent = clock(c.start_ms) + " \u00b7 " + (c.duration_s ?? "-") + " s \u00b7 " +
    plural(c.turns, "turn") + " \u00b7 " + c.outcome;
  li.append(meta);
  if (c.problems.length) li.append(el("span", "problems", c.problems.join(", ")));
  li.addEventListener("click", () => select(c.call));
  return li;
}

function renderCalls() {
  const sorted = [...calls.values()].sort((a, b) => b.start_ms - a.start_ms);
  const open = document.getElementById("open-calls");
  const recent = document.getElementById("recent-calls");
  open.replaceChildren(...sorted.filter((c) => c.open).map(callRow));
  recent.replaceChildren(...sorted.filter((c) => !c.open).slice(0, 200).map(callRow));
  document.getElementById("open-count").textContent = String(open.children.length);
  // The system view's own figure comes every 2 s; the list knows sooner.
  document.getElementById("sys-open").textContent = String(open.children.length);
}

// ---------------------------------------------------------------- call detail

function select(sid) {
  selected = sid;
  document.getElementById("empty").hidden = true;
  document.getElementById("call").hidden = false;
  document.getElementById("call-sid").textContent = sid;
  document.getElementById("transcript").replaceChildren();
  document.querySelector("#timeline tbody").replaceChildren();
  renderCalls();
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ watch: sid }));
  if (currentTab === "timeline") loadTimeline();
}

function transcriptItem(item) {
  const li = el("li", "item " + item.kind);
  const stamp = el("span", "at", clock(item.at_ms));
  li.append(stamp);
  if (item.kind === "caller") {
    li.append(el("span", "who", "caller"), el("span", "text", item.text));
  } else if (item.kind === "agent") {
    li.append(el("span", "who", "agent"));
    if (item.barge_in) {
      li.classList.add("bargein");
      li.append(el("span", "badge", "barge-in"));
      li.append(el("span", "text heard", item.heard));
      if (item.cut && item.cut.trim()) li.append(el("span", "text cut", item.cut));
    } else {
      li.append(el("span", "text", item.text));
      if (!item.done) li.append(el("span", "streaming", "\u258d"));
    }
  } else if (item.kind === "dtmf") {
    li.append(el("span", "badge", "DTMF"), el("span", "text", item.text));
  } else if (item.kind === "reprompt") {
    li.append(el("span", "badge", "re-prompt"), el("span", "text", item.text));
  } else if (item.kind === "tool") {
    li.append(el("span", "badge", "tool"), el("span", "text", item.text));
    if (item.detail && item.detail.input !== undefined) {
      li.append(el("span", "detail", JSON.stringify(item.detail.input) + " \u2192 " + String(item.detail.result ?? "")));
    }
  } else if (item.kind === "end") {
    li.append(el("span", "badge", "ended"), el("span", "text", item.text));
  } else {
    li.append(el("span", "badge", item.kind), el("span", "text", item.text));
  }
  return li;
}

const STAGES = ["gateway_to_conversation", "conversation_to_llm", "llm_first_token", "to_caller"];

function turnRow(t) {
  const tr = el("tr");
  tr.append(el("td", "", t.turn), el("td", "num", fmt(t.first_token_ms)));
  const bar = el("div", "bar");
  const total = STAGES.reduce((sum, s) => sum + (t.stages_ms[s] || 0), 0) || 1;
  for (const s of STAGES) {
    const ms = t.stages_ms[s];
    if (ms === undefined) continue;
    const part = el("span", "seg s-" + s);
    part.style.width = Math.max(0.5, (100 * ms) / total) + "%";
    part.title = s.replaceAll("_", " ") + ": " + ms.toFixed(1) + " ms";
    bar.append(part);
  }
  const td = el("td");
  td.append(bar, el("span", "stage-text", STAGES.map((s) => fmt(t.stages_ms[s])).join(" / ") + " ms"));
  tr.append(td);
  return tr;
}

function renderCall(call) {
  if (!call || call.call !== selected) return;
  calls.set(call.call, call);
  document.getElementById("call-meta").textContent =
    (call.from || "?") + " \u2192 " + (call.to || "?") + " \u00b7 started " + clock(call.start_ms) +
    " \u00b7 " + (call.duration_s ?? "-") + " s \u00b7 " + plural(call.turns, "turn") + " \u00b7 " +
    plural(call.interruptions, "barge-in") + " \u00b7 " + plural(call.tool_calls, "tool call") +
    " \u00b7 " + call.outcome;
  document.getElementById("call-problems").textContent = call.problems.join(", ");
  const list = document.getElementById("transcript");
  list.replaceChildren(...call.transcript.map(transcriptItem));
  document.querySelector("#turns tbody").replaceChildren(...call.turn_timings.map(turnRow));
}

async function loadTimeline() {
  if (!selected) return;
  const body = document.querySelector("#timeline tbody");
  const data = await api("/api/timeline?sid=" + encodeURIComponent(selected));
  body.replaceChildren(...data.entries.map((e) => {
    const tr = el("tr", "src-" + e.source);
    tr.append(el("td", "num", e.rel_ms.toFixed(1)), el("td", "num", e.turn), el("td", "", e.source),
      el("td", "", e.label), el("td", "detail", e.detail));
    return tr;
  }));
}

for (const button of document.querySelectorAll(".tabs button")) {
  button.addEventListener("click", () => {
    currentTab = button.dataset.tab;
    for (const b of document.querySelectorAll(".tabs button")) {
      b.setAttribute("aria-selected", String(b === button));
    }
    for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== "tab-" + currentTab;
    if (currentTab === "timeline") loadTimeline();
  });
}

// --------------------------------------------------------------------- system

function renderSystem(s) {
  document.getElementById("sys-open").textContent = String(s.calls_open);
  const p = s.latency.first_token_ms;
  document.getElementById("sys-latency").textContent =
    fmt(p.p50) + " / " + fmt(p.p95) + " / " + fmt(p.p99) + " ms (" + s.latency.turns + " turns)";
  document.getElementById("sys-pending").textContent =
    Object.entries(s.pending).map(([g, n]) => g + " " + (n ?? "-")).join(" \u00b7 ");
  document.getElementById("sys-workers").textContent =
    Object.entries(s.workers).map(([r, w]) => r + " " + w.length).join(" \u00b7 ");
}

// ----------------------------------------------------------------------- feed

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + withToken("/dashboard/live"));
  const conn = document.getElementById("conn");
  socket.addEventListener("open", () => {
    conn.textContent = "live";
    conn.className = "conn up";
    if (selected) socket.send(JSON.stringify({ watch: selected }));
  });
  socket.addEventListener("message", (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "snapshot") {
      calls.clear();
      for (const c of msg.calls) calls.set(c.call, c);
      renderCalls();
    } else if (msg.type === "calls") {
      for (const c of msg.calls) calls.set(c.call, { ...(calls.get(c.call) || {}), ...c });
      renderCalls();
    } else if (msg.type === "call") {
      renderCall(msg.call);
    } else if (msg.type === "system") {
      renderSystem(msg);
    }
  });
  socket.addEventListener("close", () => {
    conn.textContent = "reconnecting";
    conn.className = "conn down";
    setTimeout(connect, 1000);
  });
}

connect();
