// Parley admin dashboard: the Handoff page (bot/admin/handoff.py): the settings, the conversations
// handed to a person with their state, one conversation's transcript, and Take / Resolve / Hand back.
// Loaded after admin.js, whose helpers (el, api, poll, fill, when, flash, $) it uses.
"use strict";

REFRESH.handoff = 4000;

const HANDOFF_STATE = { bot: "back with the bot", waiting_for_human: "waiting for a person", with_human: "with a person",
  closed: "closed" };
const HANDOFF_WHY = { asked: "asked for a person", keyword: "a keyword", refusals: "unanswered questions",
  thumbs_down: "👎 then asked again", staff: "taken by staff" };
const HANDOFF_CHANNEL = { slack: "Slack DM", instagram: "Instagram DM", web: "Web chat" };

views.handoff = () => {
  const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}) });
  let open = null; // the conversation shown below the list
  let formLoaded = false;

  async function loadSettings() {
    const s = await api("handoff/settings");
    $("handoff-setup").hidden = s.active;
    const team = $("handoff-team");
    team.replaceChildren(el("option", { value: "", text: "the connected one" }),
      ...s.slack_workspaces.map((w) => el("option", { value: w.team_id, text: w.name + " (" + w.team_id + ")" })));
    team.value = s.staff_team_id || "";
    $("handoff-channel").value = s.staff_channel_id || "";
    $("handoff-hours").value = s.hours;
    $("handoff-wait").value = s.expected_wait;
    $("handoff-timeout").value = s.timeout_minutes;
    $("handoff-refusals").value = s.after_refusals;
    $("handoff-keywords").value = s.keywords.join(", ");
    $("handoff-enabled").checked = s.configured ? s.enabled : true;
    formLoaded = true;
  }

  $("handoff-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!formLoaded) return;
    const body = {
      staff_channel_id: $("handoff-channel").value.trim(), staff_team_id: $("handoff-team").value,
      hours: $("handoff-hours").value, expected_wait: $("handoff-wait").value,
      timeout_minutes: Number($("handoff-timeout").value), after_refusals: Number($("handoff-refusals").value),
      keywords: $("handoff-keywords").value, enabled: $("handoff-enabled").checked,
    };
    try {
      const s = await post("handoff/settings", body);
      flash(s.active ? "Saved: conversations are handed to your staff channel." : "Saved. Handoff is off until a staff channel is set and it is switched on.");
      await loadSettings();
    } catch (err) { flash("Not saved: " + err.message, true); }
  });

  async function act(c, action, button) {
    button.disabled = true;
    try {
      const r = await post("handoff/conversations/" + encodeURIComponent(c.id) + "/" + action);
      flash(r.changed ? "Conversation " + HANDOFF_STATE[r.state] + "." : "Nothing to do: it is " + HANDOFF_STATE[r.state] + ".");
    } catch (err) { flash("Not done: " + err.message, true); }
    refresh();
  }

  function buttons(c) {
    const b = (action, label) => el("button", { type: "button", "data-action": action, text: label,
      on: { click: (ev) => act(c, action, ev.target) } });
    const out = [];
    if (c.state !== "with_human") out.push(b("take", "Take"));
    if (c.state === "waiting_for_human" || c.state === "with_human") out.push(b("resolve", "Resolve"), b("hand_back", "Hand back"));
    return out;
  }

  async function detail(id) {
    const c = await api("handoff/conversations/" + encodeURIComponent(id));
    const lines = [];
    for (const m of c.messages) {
      lines.push(el("div", { class: "turn customer" }, el("b", { text: "Customer: " }), m.text, " ", when(m.at)));
      if (m.reply) lines.push(el("div", { class: "turn bot" }, el("b", { text: "Bot: " }), m.reply,
        m.sources.length ? el("div", { class: "muted", text: "Sources: " + m.sources.join(", ") }) : null));
    }
    for (const m of c.relayed) lines.push(el("div", { class: "turn staff" }, el("b", { text: (m.author === "staff" ? "Staff" : "Notice") + ": " }),
      m.text, " ", el("span", { class: "muted", text: "(" + m.status + (m.error ? ": " + m.error : "") + ")" })));
    const events = c.events.map((e) => el("li", {}, when(e.at), " ", (HANDOFF_STATE[e.from] || e.from) + " → " +
      (HANDOFF_STATE[e.to] || e.to) + " (" + e.trigger.replace(/_/g, " ") + (e.actor ? ", " + e.actor : "") + ")"));
    $("handoff-detail").replaceChildren(
      el("h2", { class: "card-title", text: (HANDOFF_CHANNEL[c.channel] || c.channel) + " · " + c.customer_id + " · " +
        HANDOFF_STATE[c.state] + (c.flagged ? " · no reply in time" : "") }),
      el("div", { class: "actions" }, buttons(c)),
      el("div", { class: "transcript" }, lines.length ? lines : el("p", { class: "empty", text: "No messages." })),
      el("h3", { text: "What happened" }), el("ul", { class: "events" }, events));
    $("handoff-detail").hidden = false;
  }

  const refresh = poll(async () => {
    if (!formLoaded) await loadSettings();
    const state = $("handoff-state").value;
    const r = await api("handoff/conversations" + (state ? "?state=" + encodeURIComponent(state) : ""));
    const waiting = r.conversations.filter((c) => c.state === "waiting_for_human").length;
    $("handoff-count").textContent = waiting;
    $("handoff-count").hidden = !waiting;
    fill("handoff", r.conversations.map((c) => el("tr", { "data-id": c.id, class: c.flagged ? "flagged" : "" },
      el("td", {}, el("span", { class: "badge s-" + c.state, "data-status": c.state, text: HANDOFF_STATE[c.state] || c.state }),
        c.flagged ? el("span", { class: "badge s-failed", text: "no reply in time" }) : null),
      el("td", { text: HANDOFF_CHANNEL[c.channel] || c.channel }), el("td", { text: c.customer_id }),
      el("td", { text: HANDOFF_WHY[c.handoff_reason] || c.handoff_reason || "" }), el("td", {}, when(c.handed_off_at)),
      el("td", {}, c.first_human_reply_at ? when(c.first_human_reply_at) : "—"),
      el("td", {}, el("button", { type: "button", text: "Open", on: { click: () => { open = c.id; detail(c.id).catch((e) => flash(e.message, true)); } } }),
        ...buttons(c)))));
    if (open) await detail(open);
  }, REFRESH.handoff);
  $("handoff-state").addEventListener("change", () => refresh());
};
