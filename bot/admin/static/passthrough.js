// Parley admin dashboard: the Pass-through page (bot/admin/passthrough.py): the tenant's API upload
// mode (index, or pass-through only), its endpoints for process.completed, and the recent requests
// (metadata only: the server keeps nothing else). Loaded after admin.js, whose helpers it uses.
"use strict";

REFRESH.passthrough = 3000;

views.passthrough = () => {
  let chosen = null; // the mode the person picked and has not saved yet
  const show = (r) => {
    if (chosen === null) for (const input of document.querySelectorAll('input[name="pt-mode"]')) input.checked = input.value === r.api_uploads;
    $("pt-meaning").textContent = r.meaning;
    $("pt-max").textContent = bytes(r.max_bytes);
    $("pt-endpoints").replaceChildren(...r.endpoints.map((e) => el("li", { "data-endpoint": e.id },
      el("code", { text: e.url }), e.enabled ? "" : el("span", { class: "badge s-failed", text: "disabled" }))));
    $("pt-endpoints-empty").hidden = r.endpoints.length > 0;
    fill("pt-requests", r.requests.map((q) => el("tr", { "data-request": q.id },
      el("td", {}, el("code", { text: q.id.slice(0, 12), title: q.id })),
      el("td", {}, badge(q.status), q.result === "unreadable" ? el("span", { class: "muted", text: " unreadable" }) : ""),
      el("td", { text: q.content_type }), el("td", { class: "num", text: bytes(q.size_bytes) }),
      el("td", { class: "num", text: q.chunks === null ? "—" : q.chunks }), el("td", { class: "num", text: q.attempts }),
      el("td", { text: q.error || "" }), el("td", {}, when(q.created_at)))));
  };
  const refresh = poll(async () => show(await api("passthrough")), REFRESH.passthrough);
  $("pt-mode").addEventListener("change", (ev) => { if (ev.target.name === "pt-mode") chosen = ev.target.value; });
  $("pt-mode").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const picked = document.querySelector('input[name="pt-mode"]:checked');
    if (!picked) return;
    $("pt-save").disabled = true;
    try {
      const r = await api("passthrough/api-uploads", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ mode: picked.value }) });
      chosen = null;
      show(r);
      flash("API uploads: " + r.api_uploads);
    } catch (e) {
      flash(e.message, true);
    } finally {
      $("pt-save").disabled = false;
      refresh();
    }
  });
};
