// Parley admin dashboard: the documents list (search, status filter, pages, delete), a document's page
// (versions, history, jobs, questions, sections; new version, retry with password, delete, restore)
// and the job report (success first, failures grouped, each group opening onto its files).
// Loaded after admin.js, whose helpers (el, api, poll, fill, badge, when, ago, bytes, flash, $) it uses.
"use strict";

REFRESH.documents = 2500;
REFRESH.document = 2500;

const docLink = (id, text) => el("a", { href: "/admin/documents/" + encodeURIComponent(id), class: "doc-link", text });
const postJSON = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// A button that asks once more before it acts ("Delete" -> "Really delete?" for a few seconds). The
// question stays up across a refresh that draws the button again (``key`` names what it acts on).
const armedUntil = new Map();

function confirming(label, question, action, cls, key) {
  const button = el("button", { type: "button", class: "small " + (cls || ""), text: label });
  const armed = () => (armedUntil.get(key) || 0) > Date.now();
  const show = () => { button.textContent = armed() ? question : label; button.classList.toggle("armed", armed()); };
  show();
  button.addEventListener("click", () => {
    if (!armed()) {
      armedUntil.set(key, Date.now() + 4000);
      show();
      setTimeout(show, 4050);
      return;
    }
    armedUntil.delete(key);
    button.disabled = true;
    action(button);
  });
  return button;
}

async function deleteDocument(doc, after) {
  try {
    await api("documents/" + doc.id, { method: "DELETE" });
    flash(doc.filename + " deleted: it no longer answers questions. It can be restored from its page or the History.");
  } catch (err) { flash("Deleting " + doc.filename + " failed: " + err.message, true); }
  after();
}

function uploadForm(files, password) {
  const form = new FormData();
  if (password) form.append("password", password); // before the files: the server reads it as it streams them
  for (const f of files) form.append("file", f, f.name);
  return form;
}

// --- the list -------------------------------------------------------------------------------

views.documents = () => {
  const params = new URLSearchParams(location.search);
  if (params.get("id")) { location.replace("/admin/documents/" + encodeURIComponent(params.get("id"))); return; } // an older link form
  const state = { q: params.get("q") || "", status: params.get("status") || "", offset: Number(params.get("offset")) || 0, limit: 25 };
  $("doc-search").value = state.q;
  $("doc-status").value = state.status;
  let refresh = null;

  function remember() {
    const query = new URLSearchParams();
    if (state.q) query.set("q", state.q);
    if (state.status) query.set("status", state.status);
    if (state.offset) query.set("offset", String(state.offset));
    history.replaceState(null, "", "/admin/documents" + (query.toString() ? "?" + query : ""));
  }
  function row(d) {
    return el("tr", { "data-id": d.id, "data-filename": d.filename, "data-status": d.status },
      el("td", {}, docLink(d.id, d.filename), el("span", { class: "sub", text: "from " + d.source })),
      el("td", {}, badge(d.status), d.original_kept === false ? el("span", { class: "sub", text: "original not kept" }) : null),
      el("td", { class: "num", text: d.status === "indexed" ? d.chunks : "" }),
      el("td", { class: "num", text: bytes(d.size) }),
      el("td", {}, when(d.updated_at)),
      el("td", { class: "reason" }, d.error || "", d.error_code ? el("span", { class: "sub", text: d.error_code }) : null),
      el("td", { class: "row-actions" }, d.status === "deleted" ? null
        : confirming("Delete", "Really delete?", () => deleteDocument(d, refresh), "danger delete", "delete:" + d.id)));
  }
  refresh = poll(async () => {
    const query = new URLSearchParams({ limit: String(state.limit), offset: String(state.offset) });
    if (state.q) query.set("q", state.q);
    if (state.status) query.set("status", state.status);
    const { documents, counts, total } = await api("documents?" + query);
    if (!documents.length && state.offset && total) { state.offset = Math.max(0, total - state.limit); remember(); return refresh(); }
    $("doc-counts").replaceChildren(...Object.entries(counts).map(([s, n]) => el("button", {
      type: "button", class: "chip" + (state.status === s ? " on" : ""), "data-status": s,
      on: { click: () => { state.status = state.status === s ? "" : s; $("doc-status").value = state.status; state.offset = 0; remember(); refresh(); } },
    }, s, el("b", { text: n }))));
    fill("documents", documents.map(row));
    const first = total ? state.offset + 1 : 0;
    $("doc-range").textContent = total ? first + "–" + (state.offset + documents.length) + " of " + total : "none match";
    $("doc-prev").disabled = state.offset === 0;
    $("doc-next").disabled = state.offset + documents.length >= total;
    $("documents-empty").textContent = state.q || state.status
      ? "No document matches." : "No documents yet. Upload one above, or send a file to the bot in a DM.";
  }, REFRESH.documents);

  let typing = null;
  $("doc-search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = $("doc-search").value.trim(); state.offset = 0; remember(); refresh(); }, 250);
  });
  $("doc-filter").addEventListener("submit", (e) => { e.preventDefault(); state.q = $("doc-search").value.trim(); state.offset = 0; remember(); refresh(); });
  $("doc-status").addEventListener("change", () => { state.status = $("doc-status").value; state.offset = 0; remember(); refresh(); });
  $("doc-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); remember(); refresh(); });
  $("doc-next").addEventListener("click", () => { state.offset += state.limit; remember(); refresh(); });

  $("upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const files = $("upload-files").files;
    if (!files.length) { $("upload-msg").textContent = "Choose one or more files first."; return; }
    $("upload-msg").textContent = "Uploading…";
    try {
      const r = await api("documents", { method: "POST", body: uploadForm(files, $("upload-password").value) });
      const rejected = r.rejected.map((x) => x.detail).join("; ");
      $("upload-msg").textContent = "Received " + r.documents.map((d) => d.filename).join(", ") +
        " — indexing in the background." + (rejected ? " Refused: " + rejected : "");
    } catch (err) { $("upload-msg").textContent = "Upload failed: " + err.message; }
    $("upload-files").value = "";
    $("upload-password").value = "";
    refresh();
  });
};

// --- a document's page ------------------------------------------------------------------------

const ACTION_TEXT = { uploaded: "uploaded", replaced: "replaced the previous version", deleted: "deleted", restored: "restored", refused: "refused" };

views.document = () => {
  const id = decodeURIComponent(PATH[1]);
  let refresh = null;
  let doc = null;
  const say = (text, isError) => { $("doc-msg").textContent = text; $("doc-msg").className = isError ? "error" : "muted"; };

  function facts(d) {
    const who = d.uploader ? d.uploader.channel + (d.uploader.id ? " · " + d.uploader.id : "") : "not recorded";
    const rows = [["Status", badge(d.status)], ["Sections", d.status === "indexed" ? String(d.chunks) : "—"], ["Size", bytes(d.size)],
      ["Type", d.mime_type || "—"], ["Source", d.source], ["Uploaded by", who], ["Uploaded", when(d.created_at)],
      ["Indexed", when(d.indexed_at)], ["Attempts", String(d.attempts)]];
    if (d.original_kept === false) rows.push(["Original file", el("span", { "data-original": "not-kept",
      text: "not kept: deleted once indexed (this workspace's retention setting); upload it again to re-index it" })]);
    if (d.error) rows.push(["Reason", el("span", { class: "reason", text: d.error + (d.error_code ? " (" + d.error_code + ")" : "") })]);
    return rows.map(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]);
  }
  refresh = poll(async () => {
    const page = await api("documents/" + encodeURIComponent(id) + "/page");
    doc = page.document;
    $("doc-title").textContent = doc.filename;
    $("doc-badge").replaceChildren(badge(doc.status));
    document.querySelector('[data-view="document"]').dataset.status = doc.status;
    $("doc-facts").replaceChildren(...facts(doc).flat());
    const newer = page.replaced_by;
    $("doc-replaced").hidden = !newer;
    if (newer) $("doc-replaced").replaceChildren("A newer version replaced this one: ", docLink(newer.id, newer.filename), " (" + newer.status + ").");
    $("doc-delete").hidden = !page.actions.delete;
    $("doc-restore").hidden = !page.actions.restore;
    $("retry-form").hidden = !page.actions.retry_with_password;
    $("version-form").hidden = !page.actions.new_version;
    $("versions-body").replaceChildren(...page.versions.map((v, i) => el("tr", { "data-id": v.id, "data-status": v.status, class: v.this ? "this" : "" },
      el("td", {}, v.this ? el("b", { text: "this version" }) : docLink(v.id, i === 0 ? "newest" : "older version"), el("span", { class: "sub", text: v.id })),
      el("td", {}, badge(v.status)), el("td", { class: "num", text: v.status === "indexed" ? v.chunks : "" }),
      el("td", { class: "num", text: bytes(v.size) }), el("td", {}, when(v.created_at)))));
    fill("doc-history", page.events.map((e) => el("tr", { "data-action": e.action, "data-document": e.document_id || "" },
      el("td", {}, when(e.at)), el("td", {}, el("span", { class: "badge a-" + e.action, text: ACTION_TEXT[e.action] || e.action })),
      el("td", {}, el("code", { text: e.actor.id ? e.actor.channel + " · " + e.actor.id : e.actor.channel })),
      el("td", { class: e.action === "refused" ? "reason" : "" }, e.detail || "",
        e.document_id && e.document_id !== doc.id ? el("span", { class: "sub" }, "version ", docLink(e.document_id, e.document_id.slice(0, 8))) : null))));
    fill("doc-jobs", page.jobs.map((j) => el("tr", { "data-job": j.id, "data-item-status": j.item.status },
      el("td", {}, el("a", { href: "/admin/jobs#job-" + j.id, class: "name", text: j.description || j.kind }), el("span", { class: "sub", text: j.kind })),
      el("td", {}, badge(j.item.status), j.item.error ? el("span", { class: "sub reason", text: j.item.error }) : null),
      el("td", { class: "report" }, jobReport("doc-" + j.id, j.breakdown)),
      el("td", {}, when(j.created_at)))));
    fill("doc-questions", page.questions.map((q) => el("tr", { "data-id": q.id, "data-status": q.status },
      el("td", {}, when(q.received_at)), el("td", {}, el("span", { class: "badge", text: q.channel })),
      el("td", {}, el("div", { class: "clip", text: q.text })),
      el("td", {}, el("div", { class: "clip", text: q.reply }), el("span", { class: "sub", text: "cited as [" + q.cited_as.join("], [") + "]" })))));
    $("doc-chunk-count").textContent = page.chunks.total ? "(first " + page.chunks.shown.length + " of " + page.chunks.total + ")" : "";
    $("doc-chunks").replaceChildren(...page.chunks.shown.map((c) => el("li", { "data-ordinal": c.ordinal },
      c.heading_path.length ? el("div", { class: "sub", text: c.heading_path.join(" › ") }) : null,
      el("div", { class: "chunk-text", text: c.text }))));
    $("doc-chunks-empty").hidden = page.chunks.shown.length > 0;
  }, REFRESH.document);

  const remove = confirming("Delete", "Really delete?", () => deleteDocument(doc, () => { remove.disabled = false; refresh(); }), "danger", "page-delete:" + id);
  remove.id = "doc-delete";
  remove.hidden = true;
  $("doc-delete").replaceWith(remove);
  $("doc-restore").addEventListener("click", async () => {
    try { await postJSON("documents/" + doc.id + "/restore", {}); flash(doc.filename + " restored: it is being indexed again."); }
    catch (err) { flash("Restoring failed: " + err.message, true); }
    refresh();
  });
  $("retry-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const password = $("retry-password").value;
    $("retry-password").value = "";
    say("Retrying…");
    try { await postJSON("documents/" + doc.id + "/retry", { password }); say("Queued again with its password: indexing in the background."); }
    catch (err) { say("Retry failed: " + err.message, true); }
    refresh();
  });
  $("version-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const files = $("version-file").files;
    if (!files.length) { say("Choose the file of the new version first.", true); return; }
    say("Uploading…");
    try {
      const r = await api("documents/" + doc.id + "/versions", { method: "POST", body: uploadForm([files[0]], $("version-password").value) });
      const [next] = r.documents;
      if (next && next.id !== doc.id) location.href = "/admin/documents/" + next.id;
      else say("Received: the same content is being indexed again.");
    } catch (err) { say("Upload failed: " + err.message, true); }
    $("version-file").value = "";
    $("version-password").value = "";
    refresh();
  });
};

// --- the job report (the jobs page and a document's page) ---------------------------------------

const openGroups = new Set(); // which failure groups a person opened, kept across refreshes

function jobReport(key, b) {
  if (!b) return "";
  const head = el("div", { class: "headline" + (b.done ? " ok" : ""), text: b.headline });
  const tail = [];
  if (b.pending) tail.push(el("span", { class: "sub", text: b.pending + " still in progress" }));
  if (!b.failed) return el("div", { class: "job-report" }, head, tail);
  const groups = b.groups.map((g) => {
    const id = key + "|" + g.reason;
    const files = el("ul", { class: "files" }, g.items.map((item) => el("li", {},
      item.document_id ? docLink(item.document_id, item.label) : el("span", { text: item.label }))));
    const box = el("details", { class: "failure", "data-code": g.code || "", open: openGroups.has(id) },
      el("summary", {}, el("span", { class: "reason", text: g.reason }), el("b", { class: "count", text: g.count })), files);
    box.addEventListener("toggle", () => { if (box.open) openGroups.add(id); else openGroups.delete(id); });
    return box;
  });
  return el("div", { class: "job-report" }, head,
    el("div", { class: "failed-line", text: b.failed + " failed" + (b.groups.length > 1 ? ", for " + b.groups.length + " reasons:" : ":") }),
    groups, tail);
}
