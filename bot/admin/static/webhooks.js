// Parley admin dashboard: the Webhooks page (bot/admin/webhooks.py): the tenant's endpoints and their
// events, enable / disable, rotate the secret (shown once), a test delivery, remove, and the delivery
// log of the endpoint picked. Loaded after admin.js, whose helpers it uses.
"use strict";

REFRESH.webhooks = 3000;

views.webhooks = () => {
  let picked = null; // the endpoint whose delivery log is shown
  let types = [];
  const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}) });
  const showSecret = (r, note) => {
    $("wh-secret-for").textContent = r.url;
    $("wh-secret").textContent = r.secret;
    $("wh-secret-note").textContent = note || "";
    $("wh-secret-card").hidden = false;
  };
  const act = async (what, work) => {
    try { await work(); } catch (e) { flash(what + ": " + e.message, true); }
    refresh();
  };
  const row = (e) => el("tr", { "data-endpoint": e.id, class: e.id === picked ? "selected" : "" },
    el("td", {}, el("code", { text: e.url }), e.description ? el("div", { class: "muted", text: e.description }) : ""),
    el("td", { text: e.events.length === types.length ? "all" : e.events.join(", ") }),
    el("td", {}, el("span", { class: "badge " + (e.enabled ? "s-active" : "s-failed"), "data-status": e.enabled ? "enabled" : "disabled", text: e.enabled ? "enabled" : "disabled" }), e.enabled ? "" : el("div", { class: "muted", text: e.disabled_reason || "disabled" })),
    el("td", {}, e.failing_since ? when(e.failing_since) : "—"),
    el("td", { class: "actions" },
      el("button", { type: "button", "data-action": "log", text: "Deliveries" }),
      el("button", { type: "button", "data-action": e.enabled ? "disable" : "enable", text: e.enabled ? "Disable" : "Enable" }),
      el("button", { type: "button", "data-action": "test", text: "Send test" }),
      el("button", { type: "button", "data-action": "rotate", text: "Rotate secret" }),
      el("button", { type: "button", "data-action": "remove", class: "danger", text: "Remove" })));
  const logRow = (d) => el("tr", { "data-delivery": d.webhook_id },
    el("td", {}, el("code", { text: d.webhook_id.slice(0, 16), title: d.webhook_id })),
    el("td", { text: d.event_type }), el("td", {}, badge(d.status)),
    el("td", { class: "num", text: d.attempts }), el("td", { text: d.last_status_code === null ? "—" : d.last_status_code }),
    el("td", { text: d.last_error || "" }),
    el("td", {}, el("code", { text: (d.response_excerpt || "").slice(0, 120), title: d.response_excerpt || "" })),
    el("td", {}, when(d.created_at)));
  const refresh = poll(async () => {
    const r = await api("webhooks");
    if (!types.length) {
      types = r.event_types;
      $("wh-events").replaceChildren(el("legend", { text: "Events" }), ...types.map((t) => el("label", {},
        el("input", { type: "checkbox", name: "wh-event", value: t }), " " + t)));
    }
    fill("wh-endpoints", r.endpoints.map(row));
    if (picked && !r.endpoints.some((e) => e.id === picked)) picked = null;
    $("wh-log-card").hidden = !picked;
    if (picked) {
      const log = await api("webhooks/" + picked + "?limit=50");
      $("wh-log-for").textContent = log.endpoint.url;
      fill("wh-log", log.deliveries.map(logRow));
    }
  }, REFRESH.webhooks);
  $("wh-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const events = [...document.querySelectorAll('input[name="wh-event"]:checked')].map((i) => i.value);
    if (!events.length) { flash("choose at least one event", true); return; }
    act("add", async () => {
      const r = await post("webhooks", { url: $("wh-url").value, events, description: $("wh-description").value });
      $("wh-form").reset();
      showSecret(r);
      flash("added " + r.url);
    });
  });
  $("wh-secret-done").addEventListener("click", () => {
    $("wh-secret").textContent = "";
    $("wh-secret-card").hidden = true;
  });
  $("wh-endpoints-body").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const id = button.closest("tr").dataset.endpoint;
    const action = button.dataset.action;
    if (action === "log") { picked = id; refresh(); return; }
    if (action === "remove" && !confirm("Remove this endpoint and its delivery log?")) return;
    act(action, async () => {
      if (action === "remove") await api("webhooks/" + id, { method: "DELETE" });
      else if (action === "rotate") {
        const r = await post("webhooks/" + id + "/rotate");
        showSecret(r, r.previous_secret_until ? "The previous secret signs too until " + new Date(r.previous_secret_until).toLocaleString() + "." : "");
      } else if (action === "test") { await post("webhooks/" + id + "/test"); picked = id; flash("test delivery queued"); }
      else await post("webhooks/" + id + "/" + action);
    });
  });
};
