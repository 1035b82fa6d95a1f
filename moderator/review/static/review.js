// The review screen: a queue per policy, the claimed item, and allow/block/next/release.
// Talks to the JSON API with the session cookie; every POST carries the session's CSRF token.
// DOM is built with textContent only, so post text can never become markup.
"use strict";

const csrf = document.body.dataset.csrf;
const $ = (id) => document.getElementById(id);
const state = { policy: null, item: null, leaseTimer: null };

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { window.location.assign("/"); throw new Error("signed out"); }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`);
  return data;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function toast(message, kind) {
  const box = $("toast");
  box.textContent = message;
  box.className = `toast show ${kind || ""}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = "toast"; }, 2500);
}

function duration(iso) {
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} days`;
}

// Times as the audit log shows them: UTC, ISO date and time.
const utc = (iso) => (iso ? `${new Date(iso).toISOString().slice(0, 19).replace("T", " ")} UTC` : "unknown");

const imageUrl = (itemId) => `/api/items/${itemId}/image`;

async function loadPolicies() {
  const queues = await api("GET", "/api/queues");
  const select = $("policy");
  const chosen = state.policy || (queues.find((q) => q.policy === "default") || queues[0] || {}).policy;
  select.replaceChildren(...queues.map((q) => {
    const option = el("option", `${q.policy} (${q.queued} waiting, ${q.claimed} claimed)`);
    option.value = q.policy;
    return option;
  }));
  state.policy = chosen || null;
  if (state.policy) select.value = state.policy;
}

async function loadQueue() {
  await loadPolicies();
  const list = $("queue");
  if (!state.policy) { list.replaceChildren(); $("count").textContent = "0"; return; }
  const entries = await api("GET", `/api/queues/${encodeURIComponent(state.policy)}/items?limit=100`);
  $("count").textContent = String(entries.length);
  // Reposts carry the same text (and an image or not): mark them, so the list tells them apart.
  const same = new Map();
  for (const entry of entries) {
    const key = `${entry.has_image}|${entry.text || ""}`;
    same.set(key, (same.get(key) || 0) + 1);
  }
  list.replaceChildren(...entries.map((entry) => {
    const row = el("li", null, "queue-entry");
    row.dataset.itemId = entry.item_id;
    row.classList.toggle("current", Boolean(state.item) && state.item.item.item_id === entry.item_id);
    if (entry.has_image) {
      const thumb = el("img", null, "thumb");
      thumb.src = imageUrl(entry.item_id);
      thumb.alt = "";
      thumb.loading = "lazy";
      row.append(thumb);
    } else {  // no stored image: a text post, or an image we only know by its URL
      row.append(el("div", entry.image_url ? "URL" : "Aa", "thumb text-thumb"));
    }
    const body = el("div", null, "entry-body");
    body.append(el("p", entry.text || "(image only)", entry.text ? "entry-text" : "entry-text dim"));
    const who = el("p", `${entry.post_id} · ${entry.user_id} · posted ${utc(entry.created_at)} `, "dim mono entry-id");
    const copies = same.get(`${entry.has_image}|${entry.text || ""}`);
    if (copies > 1) who.append(el("span", `1 of ${copies} alike`, "badge"));
    body.append(who);
    body.append(el("p", `${entry.rules.join(", ") || "no rule"} · ${Math.round(entry.severity * 100)}% · waiting ${duration(entry.entered_at)}`, "dim"));
    row.append(body);
    row.addEventListener("click", () => claim(entry.item_id));
    return row;
  }));
}

function showEmpty(message) {
  state.item = null;
  clearInterval(state.leaseTimer);
  $("item").hidden = true;
  $("empty").hidden = false;
  $("empty-text").textContent = message;
}

function fillSelect(select, labels, preferred) {
  select.replaceChildren(...labels.map((label) => {
    const option = el("option", label);
    option.value = label;
    return option;
  }));
  if (preferred && labels.includes(preferred)) select.value = preferred;
}

function showItem(view) {
  state.item = view;
  const { item } = view;
  const decision = item.decision;
  $("empty").hidden = true;
  $("item").hidden = false;
  const image = $("item-image");
  const { post } = item;
  image.hidden = !post.has_image;
  $("no-image").hidden = post.has_image || !post.text;
  $("image-only").hidden = Boolean(post.text);
  if (post.has_image) image.src = imageUrl(item.item_id);
  else image.removeAttribute("src");
  $("item-text").textContent = post.text || "";
  $("item-text").hidden = !post.text;
  $("meta-post").textContent = post.post_id;
  $("meta-user").textContent = post.user_id;
  $("meta-created").textContent = utc(post.created_at);
  $("meta-image-url").textContent = post.image_url || (post.has_image ? "sent inline" : "none");
  $("meta-policy").textContent = `${decision.policy.name} v${decision.policy.version}`;
  $("meta-model").textContent = `${decision.model.name} ${decision.model.version}`;
  $("meta-waited").textContent = `${duration(item.entered_at)} (since ${utc(item.entered_at)})`;
  const metadata = Object.entries(post.metadata || {});
  $("metadata").replaceChildren(...(metadata.length ? metadata.flatMap(([key, value]) =>
    [el("dt", key), el("dd", typeof value === "string" ? value : JSON.stringify(value))])
    : [el("dt", "none", "dim")]));

  const fired = new Map(decision.reasons.map((r) => [r.category, r]));
  $("rules").replaceChildren(...(decision.reasons.length ? decision.reasons.map((r) =>
    el("li", `${r.rule}: ${r.category} ${r.score.toFixed(2)} ≥ ${r.threshold.toFixed(2)} → ${r.action}`, `rule ${r.action}`))
    : [el("li", "none", "dim")]));
  const rows = Object.entries(decision.scores).sort((a, b) => b[1] - a[1]).map(([category, score]) => {
    const row = el("tr", null, fired.has(category) ? "fired" : "");
    row.append(el("th", category));
    const barCell = el("td", null, "bar-cell");
    const meter = el("span", null, "meter");
    meter.style.width = `${Math.round(score * 100)}%`;
    barCell.append(meter);
    row.append(barCell, el("td", score.toFixed(3), "num"));
    return row;
  });
  $("scores").tBodies[0].replaceChildren(...rows);

  const top = decision.reasons.slice().sort((a, b) => b.score - a.score)[0];
  fillSelect($("block-label"), view.block_labels, top && top.category);
  fillSelect($("allow-label"), view.allow_labels, "benign");
  $("note").value = "";
  clearInterval(state.leaseTimer);
  const tick = () => {
    const left = view.lease_until ? Math.round((Date.parse(view.lease_until) - Date.now()) / 1000) : 0;
    $("meta-lease").textContent = left > 0 ? `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left` : "expired: claim again";
  };
  tick();
  state.leaseTimer = setInterval(tick, 1000);
  for (const row of document.querySelectorAll(".queue-entry")) {
    row.classList.toggle("current", row.dataset.itemId === item.item_id);
  }
  run(() => loadHistory(item.item_id));
  run(() => loadUserPosts(item.item_id));
}

async function loadHistory(itemId) {
  const entries = await api("GET", `/api/items/${itemId}/history`);
  $("history").replaceChildren(...entries.map((e) =>
    el("li", `${utc(e.at)} ${e.actor} ${e.action}${e.outcome ? ` → ${e.outcome}` : ""}${e.detail ? `: ${e.detail}` : ""}`)));
}

async function loadUserPosts(itemId) {
  const posts = await api("GET", `/api/items/${itemId}/user-posts`);
  $("user-posts").replaceChildren(...(posts.length ? posts.map((p) => {
    const row = el("li", null, "user-post");
    row.dataset.itemId = p.item_id;
    row.append(el("span", `${utc(p.created_at)} `, "dim"), el("span", `${p.post_id} `, "mono"),
      el("span", `“${p.text || "(image only)"}” `),
      el("span", `policy: ${p.policy_action} · ${p.outcome ? `reviewed: ${p.outcome}` : p.status}`, "dim"));
    return row;
  }) : [el("li", "none", "dim")]));
}

async function run(action) {
  try { await action(); } catch (error) { toast(error.message, "error"); await loadQueue().catch(() => {}); }
}

const claimNext = () => run(async () => {
  if (!state.policy) { showEmpty("Nothing to review."); return; }
  if (state.item) await api("POST", `/api/items/${state.item.item.item_id}/release`).catch(() => {});
  const view = await api("POST", `/api/queues/${encodeURIComponent(state.policy)}/claim`);
  await loadQueue();
  if (view) showItem(view); else showEmpty("The queue is empty.");
});

const claim = (itemId) => run(async () => {
  if (state.item && state.item.item.item_id !== itemId) {
    await api("POST", `/api/items/${state.item.item.item_id}/release`).catch(() => {});
  }
  const view = await api("POST", `/api/items/${itemId}/claim`);
  await loadQueue();
  showItem(view);
});

const decide = (action) => run(async () => {
  if (!state.item) return;
  const label = $(action === "block" ? "block-label" : "allow-label").value;
  const result = await api("POST", `/api/items/${state.item.item.item_id}/decide`, { action, label, note: $("note").value });
  toast(`${action === "block" ? "Blocked" : "Allowed"} ${result.decision.post_id} (${label})`, action);
  state.item = null;
  await loadQueue();
  showEmpty("Decided. Press N for the next item.");
});

const release = () => run(async () => {
  if (!state.item) return;
  await api("POST", `/api/items/${state.item.item.item_id}/release`);
  toast("Released", "");
  await loadQueue();
  showEmpty("Released. Press N for the next item.");
});

$("policy").addEventListener("change", (event) => {
  state.policy = event.target.value;
  showEmpty("Press N to claim the next item.");
  run(loadQueue);
});
// Choosing a label hands the keys back to the shortcuts.
for (const id of ["block-label", "allow-label"]) $(id).addEventListener("change", (event) => event.target.blur());
$("allow").addEventListener("click", () => decide("allow"));
$("block").addEventListener("click", () => decide("block"));
$("release").addEventListener("click", release);
$("next").addEventListener("click", claimNext);
$("next-empty").addEventListener("click", claimNext);
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) return;
  const key = event.key.toLowerCase();
  const actions = { a: () => decide("allow"), b: () => decide("block"), n: claimNext, r: release };
  if (actions[key]) { event.preventDefault(); actions[key](); }
});

run(loadQueue);
setInterval(() => { if (!document.hidden) run(loadQueue); }, 10000);
