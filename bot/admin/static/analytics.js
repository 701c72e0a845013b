// Parley admin dashboard: the Analytics page (bot/admin/analytics.py): the figures of a window, each
// with its definition from the report itself, the to-do list and its CSV.
// Loaded after admin.js, whose helpers (el, api, poll, fill, when, ms, $) it uses.
"use strict";

REFRESH.analytics = 30000;

const pct = (v) => (v === null || v === undefined ? "—" : (Math.round(v * 1000) / 10) + " %");
const secs = (v) => (v === null || v === undefined ? "—" : v >= 3600 ? (v / 3600).toFixed(1) + " h" : v >= 60 ? Math.round(v / 60) + " min" : Math.round(v) + " s");
const WHY = { refused: "not found", thumbs_down: "rated 👎" };
const DEFINITION_NAMES = { window: "Window", questions: "Questions", answered_rate: "Answered, refused, handed off",
  resolution_rate: "Resolution rate", automation_rate: "Automation rate", feedback: "👍 rate", reply_latency: "Reply latency",
  first_human_reply: "First human reply", delivery_failures: "Not delivered", todo: "To-do list" };

views.analytics = () => {
  const since = () => $("analytics-since").value;
  const refresh = poll(async () => {
    const r = await api("analytics?since=" + encodeURIComponent(since()));
    $("analytics-csv").href = "/admin/api/analytics.csv?since=" + encodeURIComponent(since());
    $("analytics-range").textContent = r.window.label + " · " + new Date(r.window.since).toLocaleString() + " to now";
    $("analytics-empty").hidden = r.messages > 0;
    $("analytics-body").hidden = r.messages === 0;
    const d = r.definitions;
    const stats = [
      ["conversations", r.conversations, d.window],
      ["questions", r.questions, d.questions],
      ["answered", pct(r.answered_rate) + " · " + r.answered, d.answered_rate],
      ["refused", pct(r.refused_rate) + " · " + r.refused, d.answered_rate],
      ["handed off", pct(r.handed_off_rate) + " · " + r.handed_off, d.answered_rate],
      ["resolution rate", pct(r.resolution.rate), r.resolution.definition],
      ["automation rate", pct(r.automation_rate), d.automation_rate],
      ["👍 rate", pct(r.feedback.up_rate) + " · " + r.feedback.up + " 👍 " + r.feedback.down + " 👎", d.feedback],
      ["median reply", ms(r.reply_latency.p50_ms), d.reply_latency],
      ["p95 reply", ms(r.reply_latency.p95_ms), d.reply_latency],
      ["median first human reply", secs(r.first_human_reply.p50_seconds), d.first_human_reply],
      ["to do", r.todo.length + " topics", d.todo],
    ];
    $("analytics-stats").replaceChildren(...stats.map(([l, v, title]) => el("div", { class: "stat", "data-stat": l, title },
      el("div", { class: "v", text: v }), el("div", { class: "l", text: l }))));
    $("analytics-resolution").textContent = pct(r.resolution.rate) + " (" + r.resolution.resolved + " of " + r.resolution.conversations + " conversations with a question)";
    $("analytics-resolution-definition").textContent = r.resolution.definition;
    fill("analytics-channels", r.channels.map((c) => el("tr", { "data-channel": c.channel },
      el("td", {}, el("span", { class: "badge", text: c.channel })),
      el("td", { class: "num", text: c.conversations }), el("td", { class: "num", text: c.questions }),
      el("td", { class: "num", text: c.answered }), el("td", { class: "num", text: c.refused }),
      el("td", { class: "num", text: c.handed_off }), el("td", { class: "num", text: c.resolved + " of " + c.conversations_with_questions + " · " + pct(c.resolution_rate) }),
      el("td", { class: "num", text: ms(c.reply_latency.p50_ms) }), el("td", { class: "num", text: ms(c.reply_latency.p95_ms) }))));
    const h = r.first_human_reply;
    const people = [["Conversations handed off", r.handed_off_conversations], ["Handed off in the window", h.handed_off],
      ["Got a human reply", h.replied], ["Still waiting", h.waiting], ["Median first human reply", secs(h.p50_seconds)],
      ["p95 first human reply", secs(h.p95_seconds)], ["Messages while a person owned it", r.with_person]];
    $("analytics-people").replaceChildren(...people.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    fill("analytics-failures", r.delivery_failures.map((f) => el("tr", { "data-reason": f.reason },
      el("td", { text: f.reason.replace(/_/g, " ") }), el("td", { text: f.by === "human" ? "a person" : "the bot" }),
      el("td", { class: "num", text: f.count }))));
    $("analytics-todo-count").textContent = r.todo_questions + " questions in " + r.todo.length + " topics" +
      (r.todo_truncated ? " (the newest grouped)" : "");
    $("analytics-todo-definition").textContent = d.todo;
    fill("analytics-todo", r.todo.map((g) => el("tr", { "data-count": g.count },
      el("td", { class: "num", text: g.count }),
      el("td", {}, el("span", { class: "name", text: g.representative || "(empty)" }),
        el("span", { class: "todo-words", text: g.key_words.length ? "key words: " + g.key_words.join(", ") : "" })),
      el("td", {}, g.examples.filter((e) => e !== g.representative).map((e) => el("span", { class: "sub", text: e }))),
      el("td", {}, g.refused ? el("span", { class: "sub", text: g.refused + " " + WHY.refused }) : null,
        g.thumbs_down ? el("span", { class: "sub", text: g.thumbs_down + " " + WHY.thumbs_down }) : null,
        g.comments.map((c) => el("span", { class: "sub reason", text: "“" + c + "”" }))),
      el("td", { text: g.sources.join(", ") || "nothing relevant" }),
      el("td", {}, when(g.last_asked), el("span", { class: "sub", text: g.channels.join(", ") })))));
    $("analytics-definitions").replaceChildren(...Object.entries(d).flatMap(([k, v]) => [el("dt", { text: DEFINITION_NAMES[k] || k }), el("dd", { text: v })]));
  }, REFRESH.analytics);
  $("analytics-since").addEventListener("change", () => refresh());
  $("analytics-window").addEventListener("submit", (e) => e.preventDefault());
};
