// Parley admin dashboard: the "Privacy" page (bot/privacy/routes.py): the tenant's retention settings,
// and erasing one end customer, previewed first (a dry run) and then done. Loaded after admin.js.
"use strict";

views.privacy = () => {
  const send = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) });
  const SETTINGS = { raw_files: "Uploaded files", transcript_days: "Transcripts", dead_letter_days: "Dead letters" };

  let current = null;
  const show = (r) => {
    current = r;
    $("retention-raw-files").value = r.raw_files;
    $("retention-transcript-days").value = r.transcript_days;
    $("retention-dead-letter-days").value = r.dead_letter_days;
    const facts = Object.entries(SETTINGS).map(([key, label]) => [
      el("dt", { text: label }),
      el("dd", { "data-setting": key, text: Object.values(r.meaning)[Object.keys(SETTINGS).indexOf(key)]
                  + (r.source[key] === "default" ? " (platform default)" : " (set for this workspace)") })]);
    $("retention-now").replaceChildren(...facts.flat());
  };
  api("retention").then(show).catch((e) => flash("Could not load the retention settings: " + e.message, true));

  $("retention-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = { raw_files: $("retention-raw-files").value,
                   transcript_days: Number($("retention-transcript-days").value),
                   dead_letter_days: Number($("retention-dead-letter-days").value) };
    // Only what was changed: a value left alone keeps following the platform default
    const body = Object.fromEntries(Object.entries(form).filter(([k, v]) => !current || current[k] !== v));
    if (!Object.keys(body).length) { flash("Nothing changed."); return; }
    try { show(await send("retention", body)); flash("Retention settings saved."); }
    catch (err) { flash("Not saved: " + err.message, true); }
  });

  const report = (r) => {
    const rows = Object.entries(r.counts).filter(([k, n]) => n && k !== "vectors_queued")
      .map(([k, n]) => el("tr", { "data-kind": k }, el("td", { text: k.replace(/_/g, " ") }), el("td", { class: "num", text: n })));
    $("erasure-title").textContent = (r.dry_run ? "Would remove, for " : "Removed, for ") + r.customer;
    fill("erasure", rows);
    $("erasure-notes").replaceChildren(...r.notes.map((n) => el("li", { text: n })));
    $("erasure-result").hidden = false;
    $("erasure-confirm").hidden = !r.dry_run || r.total === 0;
  };
  const erase = async (dryRun) => {
    const customer = $("erasure-customer").value.trim();
    try { report(await send("erasure", { customer, dry_run: dryRun })); if (!dryRun) flash(customer + " was erased."); }
    catch (err) { flash((dryRun ? "Cannot preview: " : "Not erased: ") + err.message, true); }
  };
  $("erasure-form").addEventListener("submit", (ev) => { ev.preventDefault(); erase(true); });
  $("erasure-confirm").addEventListener("click", () => {
    if (confirm("Erase everything of " + $("erasure-customer").value.trim() + "? This cannot be undone.")) erase(false);
  });
};
