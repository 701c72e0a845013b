// The web chat page: a client of the dashboard's session (bot/admin/session.py). Signing in happens
// on /admin/login (the API key in, an HttpOnly SameSite=Strict cookie out); this script never sees
// the key. Every POST carries the session's CSRF token from GET /admin/api/session.
"use strict";
const $ = (id) => document.getElementById(id);
const SIGN_IN = "/admin/login?next=/chat";
// The conversation id is no secret: it keeps follow-up questions in one conversation across reloads.
const conversation = sessionStorage.getItem("parley-conv") || crypto.randomUUID();
sessionStorage.setItem("parley-conv", conversation);
let csrf = null;
let poller = null;

function signIn() {
  clearInterval(poller);
  window.location.assign(SIGN_IN);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf;
  const res = await fetch(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) { signIn(); }
  if (!res.ok) { const err = new Error((body && body.detail) || res.statusText); err.status = res.status; err.body = body; throw err; }
  return body;
}

function say(text, cls, citations) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  div.textContent = text;
  if (citations && citations.length) {
    const c = document.createElement("div");
    c.className = "cite";
    c.textContent = "Sources: " + citations.map((x) => "[" + x.n + "] " + x.title).join(" · ");
    div.appendChild(c);
  }
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
}

async function refreshDocs() {
  try {
    const { documents } = await api("/admin/api/documents?limit=50");
    const rows = documents.map((d) => {
      const tr = document.createElement("tr");
      for (const [value, cls] of [[d.filename], [d.status, d.status], [d.chunks || ""], [d.error || ""]]) {
        const td = document.createElement("td");
        td.textContent = value;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      return tr;
    });
    $("docs").replaceChildren(...rows);
  } catch (e) { /* a 401 already went to the sign-in page; other errors: try again at the next tick */ }
}

async function start() {
  let session;
  try { session = await api("/admin/api/session"); } catch (e) {
    if (e.status !== 401) { $("login-error").textContent = e.message; $("login-error").hidden = false; }
    return;
  }
  csrf = session.csrf;
  $("login").hidden = true; $("app").hidden = false;
  refreshDocs();
  poller = setInterval(refreshDocs, 2000);
}

$("logout").addEventListener("click", async () => {
  try { await api("/admin/logout", { method: "POST" }); } catch (e) { /* signed out either way */ }
  signIn();
});

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const message = $("question").value.trim();
  if (!message) return;
  $("question").value = "";
  say(message, "me");
  try {
    const r = await api("/admin/api/chat", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ message, conversation_id: conversation, client_message_id: crypto.randomUUID() }) });
    say(r.answer || "(no answer yet)", "bot", r.citations);
  } catch (err) { say("Error: " + err.message, "err"); }
});

$("upload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const files = $("files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  $("upload-msg").textContent = "uploading…";
  try {
    const r = await api("/admin/api/documents", { method: "POST", body: form });
    const rejected = r.rejected.map((x) => x.detail).join("; ");
    $("upload-msg").textContent = "received " + r.documents.map((d) => d.filename).join(", ") + (rejected ? "; " + rejected : "");
  } catch (err) { $("upload-msg").textContent = "Error: " + err.message; }
  $("files").value = "";
  refreshDocs();
});

start();
