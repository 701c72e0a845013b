// Parley admin dashboard: one page per view, filled from /admin/api/*, refreshed by polling.
// The session is an HttpOnly cookie; every POST carries the CSRF token from /admin/api/session.
"use strict";

const PATH = location.pathname.replace(/^\/admin\/?/, "").split("/");
// /admin/documents/{id} is a document's page (documents.js); the nav marks "documents" for it
const PAGE = PATH[0] === "documents" && PATH[1] ? "document" : PATH[0] || "documents";
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

// views.documents, views.document and views.jobs: documents.js

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

async function resumeJob(button, id) {
  button.disabled = true;
  button.textContent = "Resuming…";
  try {
    const done = await api("jobs/" + id + "/resume", { method: "POST" });
    flash(done.already_running ? "The job is running again: nothing re-queued."
      : "Re-queued " + done.requeued.length + " pending item(s).");
  } catch (err) { flash("Resume failed: " + err.message, true); }
}

views.jobs = () => poll(async () => {
  const { jobs } = await api("jobs");
  fill("jobs", jobs.map((j) => {
    const total = Math.max(j.total, 1);
    const bar = el("div", { class: "bar", title: j.done + " done, " + j.failed + " failed of " + j.total },
      el("span", { class: "done" }), el("span", { class: "failed" }));
    bar.children[0].style.width = (100 * j.done / total) + "%";
    bar.children[1].style.width = (100 * j.failed / total) + "%";
    const pending = j.total - j.done - j.failed;
    return el("tr", { id: "job-" + j.id, class: location.hash === "#job-" + j.id ? "target" : "", // linked from a document's page
      "data-id": j.id, "data-status": j.status, "data-done": j.done, "data-failed": j.failed, "data-total": j.total },
      el("td", {}, el("span", { class: "name", text: j.description || j.kind }), el("span", { class: "sub", text: j.kind })),
      el("td", {}, badge(j.status), j.status === "stalled" ? el("div", {},
        el("span", { class: "sub stall-reason", text: j.stall_detail || "no progress" }),
        el("button", { class: "small primary resume", "data-id": j.id, text: "Resume " + pending + " pending",
          on: { click: (e) => resumeJob(e.target, j.id) } })) : null),
      el("td", {}, bar, el("div", { class: "bar-label", text: j.done + " done · " + j.failed + " failed · " +
        pending + " pending · " + j.total + " total" })),
      el("td", { class: "report" }, jobReport(j.id, j.breakdown)), // documents.js: success first, failures grouped
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
      el("td", { class: "replay-cell" }, d.status === "dead" && d.replayable
        ? el("button", { class: "small primary replay", "data-id": d.id, text: "Replay", title: d.replay_note || "",
            on: { click: (e) => replay(e.target, d.id) } })
        : d.status === "dead" ? el("span", { class: "sub why-not", text: "Replaying cannot help: " + d.replay_note }) : null))));
  }, REFRESH["dead-letters"]);
  $("dlq-all").addEventListener("change", () => refresh());
};

const KIND = { slack: "Slack workspace", instagram: "Instagram account", shopify: "Shopify store", web: "Web" };

views.channels = () => poll(async () => {
  let { channels } = await api("channels");
  const order = ["slack", "instagram", "shopify"];
  channels = channels.filter((c) => c.kind !== "web"); // widgets have their own section, below
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

// --- the web chat widget (a section of the channels page; bot/admin/widgets.py) --------------

const channelCards = views.channels;
views.channels = () => { channelCards(); widgetSection(); };

function widgetSection() {
  const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  const sites = (text) => text.split(/[\s,]+/).filter(Boolean);
  async function act(promise, done) {
    try { await promise; flash(done); } catch (err) { flash("Not changed: " + err.message, true); }
    draw();
  }
  function copy(button, text) {
    const done = () => { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 2000); };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, () => flash("Select the snippet and copy it.", true));
    else { const range = document.createRange(); range.selectNodeContents(button.previousSibling); getSelection().removeAllRanges(); getSelection().addRange(range); flash("Snippet selected: press Ctrl+C (or ⌘C) to copy it."); }
  }
  function card(w) {
    const origins = el("input", { type: "text", value: w.allowed_origins.join(" "), title: "sites that may show it" });
    const live = w.status === "active";
    return el("div", { class: "widget", "data-widget": w.id, "data-status": w.status },
      el("div", { class: "widget-head" }, el("span", { class: "name", text: w.name }), el("code", { text: w.id }), badge(w.status),
        live ? el("a", { href: w.frame_url, target: "_blank", rel: "noopener", text: "Open the chat" }) : null),
      live ? el("div", { class: "snippet" }, el("code", { class: "snippet-code", text: w.snippet }),
        el("button", { type: "button", class: "small copy", text: "Copy", on: { click: (e) => copy(e.target, w.snippet) } })) : null,
      live ? el("form", { class: "widget-form", on: { submit: (e) => {
        e.preventDefault();
        act(post("widgets/" + w.id + "/origins", { origins: sites(origins.value) }), "Sites of " + w.id + " saved.");
      } } }, el("label", { text: "Sites" }), origins, el("button", { type: "submit", class: "small", text: "Save" }),
        el("button", { type: "button", class: "small revoke", text: "Switch off", on: { click: () =>
          act(post("widgets/" + w.id + "/revoke"), w.id + " switched off: it no longer shows on any site.") } })) : null);
  }
  async function draw() {
    const { widgets } = await api("widgets");
    $("widgets-list").replaceChildren(...widgets.map(card));
  }
  $("widget-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act(post("widgets", { origins: sites($("widget-origins").value) }), "Widget created: copy its snippet into your site.")
      .then(() => { $("widget-origins").value = ""; });
  });
  draw().catch((err) => flash("Widgets: " + err.message, true));
}

views.conversations = () => poll(async () => {
  const { messages, latency } = await api("conversations?limit=100");
  const stats = [["messages", latency.messages], ["answered", latency.answered], ["failed", latency.failed],
    ["median answer", ms(latency.answer_ms_p50)], ["95th pct answer", ms(latency.answer_ms_p95)], ["median ack", ms(latency.ack_ms_p50)]];
  $("latency").replaceChildren(...stats.map(([l, v]) => el("div", { class: "stat", "data-stat": l }, el("div", { class: "v", text: v }), el("div", { class: "l", text: l }))));
  fill("conversations", messages.map((m) => el("tr", { "data-id": m.id, "data-status": m.status },
    el("td", {}, when(m.received_at)),
    el("td", {}, el("span", { class: "badge", text: m.channel })),
    el("td", {}, el("div", { class: "clip", text: m.text })),
    el("td", {}, badge(m.status), m.error ? el("span", { class: "sub reason", text: m.error }) : null,
      // sends that did not reach the customer (outside Instagram's window, refused by Graph): never silent
      (m.delivery_failures || []).map((f) => el("span", { class: "sub reason undelivered", "data-reason": f.reason_code,
        text: "not delivered (" + (f.by === "human" ? "a person's reply" : "the bot's reply") + "): " + f.detail }))),
    el("td", {}, el("div", { class: "clip", text: m.reply || "" }),
      m.citations.length ? el("span", { class: "sub", text: m.citations.length + " source" + (m.citations.length > 1 ? "s" : "") }) : null,
      (m.feedback || []).map((f) => el("span", { class: "sub rating", "data-rating": f.rating,
        text: (f.rating === "up" ? "👍" : "👎") + (f.comment ? " “" + f.comment + "”" : "") }))),
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
  const section = PAGE === "document" ? "documents" : PAGE;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === section);
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

// After every deferred script (documents.js adds its views), not as soon as this one has run.
document.addEventListener("DOMContentLoaded", () => start().catch((e) => live(false, e.message)));
