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

// Where a source links to: the document's page in the dashboard (a product: its page on the store).
const DOCUMENT_PAGE = (c) => "/admin/documents/" + encodeURIComponent(c.document_id);
const source = (c) => (c.kind === "product" ? c.url || null : DOCUMENT_PAGE(c));

function signIn() {
  window.location.assign(SIGN_IN);
}

function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf;
  return ParleyChat.request(path, Object.assign({ credentials: "same-origin" }, options, { headers }));
}

const chat = ParleyChat.create({
  log: $("log"), form: $("chat-form"), input: $("question"), send: $("send"), source,
  ask: (message, clientId) => api("/admin/api/chat", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ message, conversation_id: conversation, client_message_id: clientId }) }),
  // staff replies once the conversation is handed to a person (bot/conversation/handoff.py)
  updates: (after) => api("/admin/api/chat/updates?conversation_id=" + encodeURIComponent(conversation) + "&after=" + after),
  rate: (messageId, rating, comment) => api("/admin/api/chat/feedback", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ message_id: messageId, rating, comment }) }),
  // A session that ended mid-chat: say so and offer the sign-in (the conversation comes back after it).
  expired: () => ParleyChat.el("a", { class: "sign-in", href: SIGN_IN, text: "Sign in again" }),
});

// --- uploads: beside the input, reported in the conversation until each file is indexed or failed ---

async function follow(doc, line) {
  for (;;) {
    let d;
    try { d = await api("/admin/api/documents/" + encodeURIComponent(doc.id)); } catch (e) {
      if (e.status === 401) { line.textContent = doc.filename + ": sign in again to follow its indexing."; return; }
      await new Promise((r) => setTimeout(r, 4000));
      continue;
    }
    line.dataset.status = d.status;
    if (d.status === "indexed") { line.textContent = d.filename + " is indexed (" + d.chunks + " sections): ask away."; return; }
    if (d.status === "failed") { line.textContent = d.filename + " could not be indexed: " + (d.error || d.error_code); return; }
    line.textContent = d.filename + (d.status === "processing" ? ": received, indexing now…" : ": received, waiting to be indexed…");
    await new Promise((r) => setTimeout(r, 1500));
  }
}

$("attach").addEventListener("click", () => $("files").click());
$("files").addEventListener("change", async () => {
  const files = Array.from($("files").files);
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("file", f, f.name);
  const note = chat.note("Uploading " + files.map((f) => f.name).join(", ") + "…", "upload");
  try {
    const r = await api("/admin/api/documents", { method: "POST", body: form });
    note.textContent = "";
    for (const d of r.documents) {
      const line = ParleyChat.el("div", { class: "upload-line", "data-document": d.id, "data-status": d.status,
        text: d.filename + ": received, indexing…" });
      note.append(line);
      follow(d, line);
    }
    for (const x of r.rejected) note.append(ParleyChat.el("div", { class: "upload-line", "data-status": "refused", text: x.detail }));
  } catch (err) {
    note.classList.add("err");
    note.textContent = "Upload failed: " + (err.status === 401 ? "your session has expired; sign in again." : err.message);
  }
  $("files").value = "";
});

// --- the session ---------------------------------------------------------------------------

$("logout").addEventListener("click", async () => {
  try { await api("/admin/logout", { method: "POST" }); } catch (e) { /* signed out either way */ }
  signIn();
});

async function start() {
  let session;
  try { session = await api("/admin/api/session"); } catch (e) {
    if (e.status === 401) { signIn(); return; }
    $("login-error").textContent = ParleyChat.describe(e);
    $("login-error").hidden = false;
    $("login").hidden = false;
    return;
  }
  csrf = session.csrf;
  const name = session.tenant.display_name || session.tenant.name;
  $("tenant").textContent = name;
  $("tenant").hidden = false;
  $("key").textContent = session.key.prefix + "…";
  $("hello-name").textContent = name;
  document.title = name + " · Parley chat";
  $("logout").hidden = false;
  $("app").hidden = false;
  $("question").focus();
  // This tab's conversation so far (the answers are kept on the server; `chat` names it web:KEY:ID)
  try {
    const { messages } = await api("/admin/api/conversations?channel=web&limit=200");
    const mine = "web:" + session.key.id + ":" + conversation;
    chat.restore(messages.filter((m) => m.conversation_id === mine).reverse());
  } catch (e) { /* the conversation starts empty; questions still work */ }
  chat.follow(); // a person's replies in this conversation, if it was handed off
}

start();
