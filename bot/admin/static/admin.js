// Parley admin dashboard: one page per view, filled from /admin/api/*, refreshed by polling.
// The session is an HttpOnly cookie; every POST carries the CSRF token from /admin/api/session.
"use strict";

const PAGE = location.pathname.replace(/^\/admin\/?/, "").split("/")[0] || "documents";
const REFRESH = { documents: 2000, history: 3000, jobs: 2000, "dead-letters": 2500, channels: 5000, conversations: 3000 };
const $ = (id) => document.getElementById(id);
let csrf = null;

// --- helpers ------------------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else node[key] = value;
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (status) => el("span", { class: "badge s-" + status, "data-status": status, text: status });

function ago(iso) {
  if (!iso) return "—";
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return new Date(iso).toLocaleDateString();
}
const when = (iso) => el("span", { title: iso || "", text: ago(iso) });

function bytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KB";
  return (n / 1048576).toFixed(1) + " MB";
}

const ms = (v) => (v === null || v === undefined ? "—" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms");

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch("/admin/api/" + path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) {
    location.href = "/admin/login?next=" + encodeURIComponent(location.pathname);
    throw new Error("signed out");
  }
  if (!res.ok) {
    const err = new Error((body && body.detail) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return body;
}

function flash(text, isError) {
  const box = $("flash");
  box.textContent = text;
  box.className = "flash" + (isError ? " error" : "");
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

function fill(name, rows) {
  $(name + "-body").replaceChildren(...rows);
  $(name + "-empty").hidden = rows.length > 0;
}

function live(ok, detail) {
  const node = $("live");
  node.className = "live" + (ok ? "" : " down");
  node.textContent = ok ? "Live · updated " + new Date().toLocaleTimeString() : "Not updating: " + detail;
}

function poll(load, every) {
  let timer = null;
  const run = async () => {
    clearTimeout(timer);
    try { await load(); live(true); } catch (e) { live(false, e.message); }
    timer = setTimeout(run, every);
  };
  run();
  return run; // call it to refresh now
}

// --- views ----------------------------------------------------------------------------------

const views = {};

views.documents = () => {
  const refresh = poll(async () => {
    const { documents, counts } = await api("documents?limit=200");
    $("doc-counts").replaceChildren(...Object.entries(counts).map(([s, n]) => el("span", { class: "chip" }, s, el("b", { text: n }))));
    fill("documents", documents.map((d) => el("tr", { "data-id": d.id, "data-filename": d.filename, "data-status": d.status },
      el("td", {}, el("span", { class: "name", text: d.filename }), el("span", { class: "sub", text: "from " + d.source })),
      el("td", {}, badge(d.status)),
      el("td", { class: "num", text: d.status === "indexed" ? d.chunks : "" }),
      el("td", { class: "num", text: bytes(d.size) }),
      el("td", {}, when(d.updated_at)),
      el("td", { class: "reason" }, d.error || "", d.error_code ? el("span", { class: "sub", text: d.error_code }) : null))));
  }, REFRESH.documents);

  $("upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const files = $("upload-files").files;
    if (!files.length) { $("upload-msg").textContent = "Choose one or more files first."; return; }
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    $("upload-msg").textContent = "Uploading…";
    try {
      const r = await api("documents", { method: "POST", body: form });
      const rejected = r.rejected.map((x) => x.detail).join("; ");
      $("upload-msg").textContent = "Received " + r.documents.map((d) => d.filename).join(", ") +
        " — indexing in the background." + (rejected ? " Refused: " + rejected : "");
    } catch (err) { $("upload-msg").textContent = "Upload failed: " + err.message; }
    $("upload-files").value = "";
    refresh();
  });
};

const CHANNEL = { slack: "Slack", instagram: "Instagram", web: "Web chat and dashboard" };

views.history = () => {
  let refresh = null;
  let redraw = true; // the policy forms are redrawn after a change, else only while nobody types in them
  const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  async function restore(button, doc) {
    button.disabled = true;
    button.textContent = "Restoring…";
    try {
      await post("documents/" + doc.id + "/restore", {});
      flash(doc.filename + " restored: it is being indexed again and will take the place of the current version.");
    } catch (err) { flash("Restoring " + doc.filename + " failed: " + err.message, true); }
    refresh();
  }
  async function change(body, done) {
    try { await post("uploaders", body); flash(done); } catch (err) { flash("Not changed: " + err.message, true); }
    redraw = true;
    refresh();
  }
  async function remove(channel, userId) {
    try { await post("uploaders/remove", { channel, user_id: userId }); flash(userId + " may no longer add documents through " + CHANNEL[channel] + "."); }
    catch (err) { flash("Not removed: " + err.message, true); }
    redraw = true;
    refresh();
  }
  function policyCard(c, modes) {
    const select = el("select", { "data-channel": c.channel, class: "mode", on: { change: (e) => change({ channel: c.channel, mode: e.target.value }, CHANNEL[c.channel] + ": " + e.target.value + ".") } },
      modes.map((m) => el("option", { value: m, text: m, selected: m === c.mode })));
    const userId = el("input", { type: "text", placeholder: c.channel === "web" ? "api_key:…" : "user id", "aria-label": "user id" });
    const replace = el("input", { type: "checkbox" });
    const form = el("form", { class: "add-uploader", on: { submit: (e) => {
      e.preventDefault();
      if (!userId.value.trim()) return;
      change({ channel: c.channel, user_id: userId.value.trim(), may_replace: replace.checked }, userId.value.trim() + " may add documents through " + CHANNEL[c.channel] + ".");
    } } }, userId, el("label", {}, replace, " may replace"), el("button", { type: "submit", class: "small", text: "Add" }));
    return el("div", { class: "policy-channel", "data-channel": c.channel },
      el("h3", { text: CHANNEL[c.channel] || c.channel }),
      el("div", {}, select, el("span", { class: "sub", text: c.meaning })),
      el("ul", {}, c.uploaders.map((u) => el("li", { "data-user": u.user_id },
        el("code", { text: u.user_id }), u.may_replace ? el("span", { class: "badge", text: "may replace" }) : null,
        el("button", { class: "small", text: "Remove", on: { click: () => remove(c.channel, u.user_id) } })))),
      form);
  }
  const who = (a) => a.id ? a.channel + " · " + a.id : a.channel;
  refresh = poll(async () => {
    const [{ events }, policy] = await Promise.all([api("knowledge-events?limit=200"), api("uploaders")]);
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("#policy");
    if (redraw || !focused) $("policy").replaceChildren(...policy.channels.map((c) => policyCard(c, policy.modes)));
    redraw = false;
    fill("history", events.map((e) => {
      const target = (e.replaced_document && e.replaced_document.restorable) ? e.replaced_document
        : (e.document && e.document.restorable) ? e.document : null;
      const replaced = e.replaced_document ? el("span", { class: "sub", text: "in place of " + e.replaced_document.filename + " (" + e.replaced_document.status + ")" }) : null;
      return el("tr", { "data-id": e.id, "data-action": e.action, "data-document": e.document_id || "" },
        el("td", {}, when(e.at)),
        el("td", {}, el("span", { class: "badge a-" + e.action, text: e.action })),
        el("td", {}, el("span", { class: "name", text: e.filename }), e.document ? el("span", { class: "sub", text: "now " + e.document.status }) : null, replaced),
        el("td", {}, el("code", { text: who(e.actor) })),
        el("td", { class: e.action === "refused" ? "reason" : "" , text: e.detail || "" }),
        el("td", {}, target ? el("button", { class: "small primary restore", "data-id": target.id, text: target === e.document ? "Restore" : "Restore previous",
          on: { click: (ev) => restore(ev.target, target) } }) : null));
    }));
  }, REFRESH.history);
};

views.jobs = () => poll(async () => {
  const { jobs } = await api("jobs");
  fill("jobs", jobs.map((j) => {
    const total = Math.max(j.total, 1);
    const bar = el("div", { class: "bar", title: j.done + " done, " + j.failed + " failed of " + j.total },
      el("span", { class: "done" }), el("span", { class: "failed" }));
    bar.children[0].style.width = (100 * j.done / total) + "%";
    bar.children[1].style.width = (100 * j.failed / total) + "%";
    const pending = j.total - j.done - j.failed;
    return el("tr", { "data-id": j.id, "data-status": j.status, "data-done": j.done, "data-failed": j.failed, "data-total": j.total },
      el("td", {}, el("span", { class: "name", text: j.description || j.kind }), el("span", { class: "sub", text: j.kind })),
      el("td", {}, badge(j.status)),
      el("td", {}, bar, el("div", { class: "bar-label", text: j.done + " done · " + j.failed + " failed · " +
        pending + " pending · " + j.total + " total" })),
      el("td", { class: j.failed ? "reason" : "", text: j.report }),
      el("td", {}, when(j.created_at), j.finished_at ? el("span", { class: "sub", text: "finished " + ago(j.finished_at) }) : null));
  }));
}, REFRESH.jobs);

views["dead-letters"] = () => {
  let refresh = null;
  async function replay(button, id) {
    button.disabled = true;
    button.textContent = "Replaying…";
    try {
      await api("dead-letters/" + id + "/replay", { method: "POST" });
      flash("Dead letter #" + id + " replayed: a fresh copy is back in its queue.");
    } catch (err) { flash("Replay of #" + id + " failed: " + err.message, true); }
    refresh();
  }
  refresh = poll(async () => {
    const { dead_letters } = await api("dead-letters" + ($("dlq-all").checked ? "?all=1" : ""));
    fill("dead-letters", dead_letters.map((d) => el("tr", { "data-id": d.id, "data-status": d.status },
      el("td", { text: d.id }),
      el("td", { text: d.queue }),
      el("td", {}, el("span", { class: "name", text: d.subject || d.type }), el("span", { class: "sub", text: d.type })),
      el("td", { class: "reason" }, d.reason, el("span", { class: "sub", text: d.error_code })),
      el("td", { class: "num", text: d.attempts }),
      el("td", {}, when(d.dead_lettered_at)),
      el("td", {}, badge(d.status), d.replayed_at ? el("span", { class: "sub", text: "replayed " + ago(d.replayed_at) }) : null),
      el("td", {}, d.status === "dead"
        ? el("button", { class: "small primary replay", "data-id": d.id, text: "Replay", on: { click: (e) => replay(e.target, d.id) } })
        : null))));
  }, REFRESH["dead-letters"]);
  $("dlq-all").addEventListener("change", () => refresh());
};

const KIND = { slack: "Slack workspace", instagram: "Instagram account", shopify: "Shopify store", web: "Web" };

views.channels = () => poll(async () => {
  const { channels } = await api("channels");
  const order = ["slack", "instagram", "shopify"];
  channels.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind));
  $("channels-empty").hidden = channels.length > 0;
  $("channels-list").replaceChildren(...channels.map((c) => {
    const rows = [
      ["ID", c.external_id],
      ["Connection", badge(c.status)],
      ["Installed", when(c.installed_at)],
      ["Last event", c.last_event_at ? el("span", {}, c.last_event + " · ", when(c.last_event_at)) : "none yet"],
      ["Events", c.events_24h + " in 24 h · " + c.events_total + " in all"],
      ["Last success", when(c.last_ok_at)],
    ];
    if (c.last_sync) rows.push(["Last sync", el("span", {}, badge(c.last_sync.status), " " + c.last_sync.report)]);
    rows.push(["Last error", c.last_error ? el("span", { class: "error" }, c.last_error, " · ", when(c.last_error_at)) : "none"]);
    for (const [k, v] of Object.entries(c.details || {})) rows.push([k.replace(/_/g, " "), Array.isArray(v) ? v.join(", ") : String(v)]);
    return el("article", { class: "card channel", "data-kind": c.kind, "data-health": c.health },
      el("div", { class: "kind", text: KIND[c.kind] || c.kind }),
      el("h2", {}, c.display_name || c.external_id, badge(c.health)),
      el("dl", {}, rows.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)])));
  }));
}, REFRESH.channels);

views.conversations = () => poll(async () => {
  const { messages, latency } = await api("conversations?limit=100");
  const stats = [["messages", latency.messages], ["answered", latency.answered], ["failed", latency.failed],
    ["median answer", ms(latency.answer_ms_p50)], ["95th pct answer", ms(latency.answer_ms_p95)], ["median ack", ms(latency.ack_ms_p50)]];
  $("latency").replaceChildren(...stats.map(([l, v]) => el("div", { class: "stat", "data-stat": l }, el("div", { class: "v", text: v }), el("div", { class: "l", text: l }))));
  fill("conversations", messages.map((m) => el("tr", { "data-id": m.id, "data-status": m.status },
    el("td", {}, when(m.received_at)),
    el("td", {}, el("span", { class: "badge", text: m.channel })),
    el("td", {}, el("div", { class: "clip", text: m.text })),
    el("td", {}, badge(m.status), m.error ? el("span", { class: "sub reason", text: m.error }) : null),
    el("td", {}, el("div", { class: "clip", text: m.reply || "" }),
      m.citations.length ? el("span", { class: "sub", text: m.citations.length + " source" + (m.citations.length > 1 ? "s" : "") }) : null),
    el("td", { class: "num", text: ms(m.ack_ms) }),
    el("td", { class: "num", text: ms(m.answer_ms) }))));
}, REFRESH.conversations);

views.chat = () => {
  const conversation = sessionStorage.getItem("parley-admin-conv") || crypto.randomUUID();
  sessionStorage.setItem("parley-admin-conv", conversation);
  const log = $("chat-log");
  const say = (cls, text, extra) => {
    const node = el("div", { class: "msg " + cls, text }, extra);
    log.append(node);
    log.scrollTop = log.scrollHeight;
    return node;
  };
  $("chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const message = $("question").value.trim();
    if (!message) return;
    $("question").value = "";
    $("ask").disabled = true;
    say("me", message);
    try {
      const r = await api("chat", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ message, conversation_id: conversation, client_message_id: crypto.randomUUID() }) });
      const sources = (r.citations || []).map((c) => "[" + c.n + "] " + c.title).join(" · ");
      say("bot answer", r.answer || "(no answer yet)", [
        sources ? el("span", { class: "cite", text: "Sources: " + sources }) : null,
        el("span", { class: "meta", text: "answered in " + ms(r.answer_ms) })]);
    } catch (err) { say("err", "Error: " + err.message); }
    $("ask").disabled = false;
    $("question").focus();
  });
  live(true);
};

// --- start ----------------------------------------------------------------------------------

async function session() {
  const me = await api("session");
  csrf = me.csrf;
  $("logout-csrf").value = csrf;
  $("logout").disabled = false;
  $("dlq-count").textContent = me.dead_letters;
  $("dlq-count").hidden = !me.dead_letters;
  return me;
}

async function start() {
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === PAGE);
  const view = document.querySelector('[data-view="' + PAGE + '"]');
  if (!view || !views[PAGE]) { location.href = "/admin/documents"; return; }
  const me = await session();
  $("tenant").textContent = me.tenant.display_name || me.tenant.name;
  $("key").textContent = me.key.prefix + "…";
  $("key").title = "signed in with API key " + (me.key.name ? "'" + me.key.name + "' " : "") + me.key.prefix + "…";
  setInterval(() => session().catch(() => {}), 5000); // keeps the dead-letter count current
  document.title = view.querySelector("h1").textContent + " · " + (me.tenant.display_name || me.tenant.name) + " · Parley admin";
  view.hidden = false;
  views[PAGE]();
}

start().catch((e) => live(false, e.message));
