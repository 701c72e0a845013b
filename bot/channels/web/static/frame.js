// The chat inside the widget's iframe (/chat/w/<widget id>, drawn by /chat/widget.js on the tenant's
// site). An anonymous visitor session: a signed token from POST /chat/w/<id>/session, kept in this
// frame's memory and sessionStorage (never visible to the host page), renewed when it expires.
// Visitors only ask: sources link to products' pages, never to the tenant's dashboard.
"use strict";
const $ = (id) => document.getElementById(id);
const WIDGET = decodeURIComponent(location.pathname.split("/")[3] || "");
const BASE = "/chat/w/" + encodeURIComponent(WIDGET);
const KEY = "parley-visitor:" + WIDGET;
const conversation = sessionStorage.getItem(KEY + ":conv") || crypto.randomUUID();
sessionStorage.setItem(KEY + ":conv", conversation);

// The page this chat is drawn on, as the browser says (the server checks it against the widget's sites).
function embedder() {
  if (window.parent === window) return null;
  if (location.ancestorOrigins && location.ancestorOrigins.length) return location.ancestorOrigins[0];
  try { return document.referrer ? new URL(document.referrer).origin : null; } catch (e) { return null; }
}

const post = (path, body, token) => ParleyChat.request(BASE + path, {
  method: "POST", credentials: "omit", body: JSON.stringify(body),
  headers: Object.assign({ "Content-Type": "application/json", Accept: "application/json" },
    token ? { Authorization: "Bearer " + token } : {}),
});

let visitor = null;
try { visitor = JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (e) { visitor = null; }

function welcome(name) {
  if (!name) return;
  $("tenant").textContent = name;
  $("hello-name").textContent = name + "'s";
  document.title = name + " · chat";
}

async function session(renew) {
  if (visitor && !renew && visitor.until > Date.now()) return visitor;
  const s = await post("/session", { embedder: embedder() });
  visitor = { token: s.token, until: Date.now() + (s.expires_in - 60) * 1000, name: s.tenant.display_name };
  sessionStorage.setItem(KEY, JSON.stringify(visitor));
  welcome(visitor.name);
  return visitor;
}

async function ask(message, clientId) {
  const body = { message, conversation_id: conversation, client_message_id: clientId };
  try {
    return await post("/chat", body, (await session(false)).token);
  } catch (err) {
    if (err.status !== 401) throw err;
    return post("/chat", body, (await session(true)).token); // expired: a new session, once
  }
}

// 👍/👎 on an answer to one of this visitor's questions (the same session renewal as ask)
async function rate(messageId, rating, comment) {
  const body = { message_id: messageId, rating, comment };
  try {
    return await post("/feedback", body, (await session(false)).token);
  } catch (err) {
    if (err.status !== 401) throw err;
    return post("/feedback", body, (await session(true)).token);
  }
}

// a person's replies once the conversation is handed off (bot/conversation/handoff.py)
async function updates(after) {
  const body = { conversation_id: conversation, after };
  try {
    return await post("/updates", body, (await session(false)).token);
  } catch (err) {
    if (err.status !== 401) throw err;
    return post("/updates", body, (await session(true)).token);
  }
}

const source = (c) => (c.kind === "product" && c.url ? c.url : null);
const chat = ParleyChat.create({
  log: $("log"), form: $("chat-form"), input: $("question"), send: $("send"), source, ask, rate, updates,
  expired: () => {
    const reload = ParleyChat.el("button", { type: "button", class: "small", text: "Start again" });
    reload.addEventListener("click", () => { sessionStorage.removeItem(KEY); location.reload(); });
    return reload;
  },
});

session(false).then((v) => welcome(v.name)).catch((err) => {
  chat.add(ParleyChat.el("div", { class: "msg err", role: "alert" }, ParleyChat.describe(err)));
});
