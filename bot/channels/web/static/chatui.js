// The chat conversation, shared by the signed-in chat page (chat.js) and the widget's frame (frame.js):
// bubbles (the customer on the right, the agent on the left), sources as links, the answer's latency,
// a typing indicator while the answer is on its way, errors as readable bubbles, Enter to send and
// Shift+Enter for a new line, 👍/👎 under each answer (a 👎 offers a comment box). It knows nothing of
// sessions: the page gives it `ask(question)` and `rate(messageId, rating, comment)`.
"use strict";

const ParleyChat = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const seconds = (ms) => (ms >= 1000 ? (ms / 1000).toFixed(1) + " s" : Math.round(ms) + " ms");

  // What a failed question says to a person: never a stack trace, always what to do next.
  function describe(err) {
    if (err.status === 429) {
      const wait = Math.max(1, Math.ceil((err.body && err.body.retry_after) || 5));
      return "You're asking faster than I can answer. Please try again in " + wait + " second" + (wait > 1 ? "s" : "") + ".";
    }
    if (err.status === 401) return "Your session has expired.";
    if (err.status === 403) return "This chat can't be used here: " + err.message;
    if (err.status === 404) return "This chat is no longer available.";
    if (err.status === 503) return "I can't answer right now (" + err.message + "). Please try again in a moment.";
    if (err.status === undefined) return "I couldn't reach the server. Check your connection and try again.";
    return "Something went wrong: " + err.message;
  }

  // fetch + JSON, with the HTTP status (or none: the network) on the error it throws.
  async function request(path, options) {
    let res;
    try { res = await fetch(path, options); } catch (e) { throw Object.assign(new Error("network error"), { status: undefined }); }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw Object.assign(new Error((body && body.detail) || res.statusText), { status: res.status, body });
    return body;
  }

  function create({ log, form, input, send, ask, source, expired, rate, updates }) {
    // Keep the question in view: scroll to the end when the question and all after it fit,
    // else put the question at the top (a long answer is read from its start, under its question).
    function reveal(anchor) {
      const last = log.lastElementChild;
      if (!anchor || !last) return;
      const box = log.getBoundingClientRect();
      const span = last.getBoundingClientRect().bottom - anchor.getBoundingClientRect().top;
      if (span + 16 <= log.clientHeight) log.scrollTop = log.scrollHeight;
      else log.scrollTop += anchor.getBoundingClientRect().top - box.top - 8;
    }

    function add(node, anchor) {
      log.append(node);
      reveal(anchor || node);
      return node;
    }

    function sources(citations) {
      if (!citations || !citations.length) return null;
      return el("div", { class: "cite" }, el("span", { class: "cite-label", text: "Sources" }),
        el("ol", {}, citations.map((c) => {
          const href = source(c);
          const label = c.title + (c.heading_path && c.heading_path.length ? " › " + c.heading_path.join(" › ") : "");
          return el("li", { "data-n": c.n }, el("span", { class: "n", text: c.n }),
            href ? el("a", { href, target: "_blank", rel: "noopener", text: label, title: c.snippet || null }) : el("span", { text: label }));
        })));
    }

    // 👍/👎 under an answer: the rating is recorded at once (a second click on the same one changes
    // nothing, the other one replaces it); a 👎 opens a box for what was wrong.
    function rating(messageId) {
      const box = el("div", { class: "rate", role: "group", "aria-label": "Was this answer helpful?" });
      const up = el("button", { type: "button", class: "small rate-up", "data-rating": "up", "aria-pressed": "false",
        title: "Helpful", "aria-label": "Helpful", text: "👍" });
      const down = el("button", { type: "button", class: "small rate-down", "data-rating": "down", "aria-pressed": "false",
        title: "Not helpful", "aria-label": "Not helpful", text: "👎" });
      const status = el("span", { class: "rate-status meta", "aria-live": "polite" });
      let comment = null;
      box.append(up, down, status);
      const mark = (r) => {
        box.dataset.rating = r;
        up.setAttribute("aria-pressed", String(r === "up"));
        down.setAttribute("aria-pressed", String(r === "down"));
      };
      async function choose(r, text) {
        try {
          const res = await rate(messageId, r, text);
          mark(res.rating);
          status.textContent = text ? "Thanks, your comment was passed on." : "Thanks for the feedback!";
          return true;
        } catch (err) {
          status.textContent = "That wasn't recorded: " + describe(err);
          return false;
        }
      }
      up.addEventListener("click", async () => {
        if (await choose("up") && comment) { comment.remove(); comment = null; }
      });
      down.addEventListener("click", async () => {
        if (!(await choose("down")) || comment) return;
        const text = el("textarea", { class: "rate-text", rows: "2", maxlength: "2000", "aria-label": "What was wrong or missing?",
          placeholder: "What was wrong or missing? (optional)" });
        comment = el("form", { class: "rate-comment" }, text, el("button", { type: "submit", class: "small", text: "Send" }));
        comment.addEventListener("submit", async (e) => {
          e.preventDefault();
          if (text.value.trim() && await choose("down", text.value.trim())) { comment.remove(); comment = null; }
        });
        box.append(comment);
        text.focus();
      });
      return box;
    }

    function answer(result, question) {
      if (result.status === "ignored" && !result.answer) { // a person owns the conversation: the bot stays silent
        follow();
        return add(el("div", { class: "msg note handoff", text: "Sent to our team: a person will answer here." }), question);
      }
      follow();
      const latency = typeof result.answer_ms === "number"
        ? el("span", { class: "meta", title: "answered in " + seconds(result.answer_ms), text: seconds(result.answer_ms) }) : null;
      const rated = rate && result.message_id && result.answer && (!result.status || result.status === "answered")
        ? rating(result.message_id) : null;
      return add(el("div", { class: "msg bot answer", "data-message": result.message_id || null },
        el("div", { class: "text", text: result.answer || "(no answer yet)" }), sources(result.citations), latency, rated), question);
    }

    function problem(err, question, retry) {
      const node = el("div", { class: "msg err", role: "alert", "data-status": err.status === undefined ? "network" : err.status },
        el("div", { class: "text", text: describe(err) }));
      if (err.status === 401 && expired) node.append(expired());
      else if (retry && (err.status === undefined || err.status === 429 || err.status === 503)) {
        const again = el("button", { type: "button", class: "small retry", text: "Try again" });
        again.addEventListener("click", () => { node.remove(); retry(); });
        node.append(again);
      }
      return add(node, question);
    }

    function note(text, cls) {
      return add(el("div", { class: "msg note " + (cls || ""), text }));
    }

    // A conversation handed to a person: their replies (and notices: no reply yet, resolved) arrive
    // by polling `updates(after)` while a person owns it (the page has no push). Each shown once.
    let cursor = 0;
    let polling = null;
    const HUMAN = ["waiting_for_human", "with_human"];
    async function follow() {
      if (!updates || polling) return;
      polling = (async () => {
        for (let round = 0; ; round++) {
          let r = null;
          try { r = await updates(cursor); } catch (e) { r = null; }
          if (r) {
            for (const m of r.messages) {
              add(el("div", { class: "msg bot " + (m.author === "staff" ? "staff" : "note"), "data-relay": m.id },
                m.author === "staff" ? el("div", { class: "who meta", text: "Our team" }) : null, el("div", { class: "text", text: m.text })));
            }
            cursor = r.cursor;
            if (!HUMAN.includes(r.state) && round > 0) break;
          }
          await new Promise((done) => setTimeout(done, r && HUMAN.includes(r.state) ? 4000 : 1500));
          if (!r && round > 20) break;
        }
        polling = null;
      })();
    }

    let busy = false;
    async function submit(text) {
      const message = (text === undefined ? input.value : text).trim();
      if (!message || busy) return;
      busy = true;
      send.disabled = true;
      input.value = "";
      grow();
      const question = add(el("div", { class: "msg me", text: message }));
      const clientId = crypto.randomUUID(); // a retry of this question is a resend: answered once
      const attempt = async () => {
        busy = true;
        send.disabled = true;
        const typing = add(el("div", { class: "msg bot typing", "aria-label": "answering…" },
          el("span"), el("span"), el("span")), question);
        try {
          answer(await ask(message, clientId), question);
        } catch (err) {
          problem(err, question, attempt);
        } finally {
          typing.remove();
          busy = false;
          send.disabled = false;
          input.focus();
        }
      };
      await attempt();
    }

    function grow() { // the box grows with its text, up to a few lines
      input.style.height = "auto";
      const wanted = input.scrollHeight + input.offsetHeight - input.clientHeight; // + the borders
      input.style.height = Math.min(wanted, 160) + "px";
      input.style.overflowY = wanted > 160 ? "auto" : "hidden";
    }

    // Reading the latest message when the window changes size (a phone turned, a keyboard opened): still the latest.
    let pinned = true;
    log.addEventListener("scroll", () => { pinned = log.scrollHeight - log.scrollTop - log.clientHeight < 24; });
    new ResizeObserver(() => { if (pinned) log.scrollTop = log.scrollHeight; }).observe(log);

    form.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    });
    input.addEventListener("input", grow);
    // The conversation so far (after a reload): each question with its answer or what went wrong.
    function restore(turns) {
      for (const t of turns) {
        const question = add(el("div", { class: "msg me", text: t.text }));
        if (t.reply) answer({ answer: t.reply, citations: t.citations, answer_ms: t.answer_ms, message_id: t.id, status: t.status }, question);
        else if (t.status === "failed") problem(Object.assign(new Error(t.error || "the answer failed"), { status: 503 }), question);
      }
      log.scrollTop = log.scrollHeight;
    }

    return { note, add, submit, restore, follow };
  }

  return { create, el, request, describe };
})();
