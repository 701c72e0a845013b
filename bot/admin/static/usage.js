// Parley admin dashboard: the "Plan & usage" page (bot/admin/usage.py): each limit of the tenant's
// plan with what is used, as a bar. Loaded after admin.js, whose helpers it uses.
"use strict";

REFRESH.usage = 5000;

views.usage = () => {
  const amount = (r, n) => (r.bytes ? bytes(n) : Number(n).toLocaleString());
  const row = (r) => {
    const share = r.share === null ? null : Math.round(r.share * 100);
    const level = share === null ? "" : share >= 100 ? " full" : share >= 80 ? " high" : "";
    const bar = el("div", { class: "bar usage-bar" + level, title: share === null ? "unlimited" : share + "% used" },
      el("span", { class: "done" }));
    bar.children[0].style.width = (share === null ? 0 : share) + "%";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", r.label);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", String(share === null ? 0 : share));
    return el("tr", { "data-resource": r.resource, "data-used": r.used, "data-limit": r.limit === null ? "" : r.limit },
      el("td", { text: r.label }),
      el("td", { class: "progress-col" }, bar),
      el("td", { class: "num", text: amount(r, r.used) }),
      el("td", { class: "num", text: r.limit === null ? "unlimited" : amount(r, r.limit) }),
      el("td", { class: "muted", text: r.default ? "default" : "set for this workspace" }));
  };
  poll(async () => {
    const u = await api("usage");
    $("usage-plan").textContent = u.plan ? "plan " + u.plan : "";
    $("usage-change").textContent = u.change;
    fill("usage", u.resources.map(row));
  }, REFRESH.usage);
};
