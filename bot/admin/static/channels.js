// The Channels page's connect forms and connection management (bot/admin/channels.py).
// Loaded after admin.js: it uses its helpers (el, api, flash, $, badge) and adds to views.channels.
"use strict";

(() => {
  const KIND_NAME = { slack: "Slack", instagram: "Instagram", shopify: "Shopify" };
  const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  const field = (id, label, props) => [el("label", { htmlFor: id, text: label }), el("input", Object.assign({ id, autocomplete: "off" }, props))];
  const value = (id) => ($(id) ? $(id).value.trim() : "");
  const words = (text) => text.split(/[\s,]+/).filter(Boolean);

  function copyable(label, text) {
    return el("div", { class: "setup-line" }, el("span", { class: "muted", text: label + " " }), el("code", { class: "setup-value", text: text || "(not set)" }));
  }

  function setupBox(instagram) {
    return el("div", { class: "setup", "data-setup": "instagram" },
      el("p", { class: "muted", text: "Then, in your Meta app (Instagram › API setup › Configure webhooks), paste:" }),
      copyable("Callback URL", instagram.webhook_url), copyable("Verify token", instagram.verify_token),
      el("p", { class: "muted", text: "and subscribe the account to the “messages” field." }));
  }

  async function submit(form, path, body, done) {
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const result = await post(path, body);
      form.reset();
      flash(done(result));
      await manage();
      return result;
    } catch (err) {
      flash("Not connected: " + err.message, true);
      return null;
    } finally { button.disabled = false; }
  }

  function slackCard(slack) {
    const form = el("form", { class: "stack", id: "slack-connect-form", on: { submit: (e) => {
      e.preventDefault();
      submit(form, "channels/slack", { bot_token: value("slack-token"), signing_secret: value("slack-signing-secret") || undefined },
        (r) => "Slack workspace " + r.display_name + " (" + r.external_id + ") connected.");
    } } },
      field("slack-token", "Bot User OAuth Token", { type: "password", placeholder: "xoxb-…", required: true }),
      field("slack-signing-secret", "Signing secret of your app (if it is your own app)", { type: "password", placeholder: "optional" }),
      el("button", { type: "submit", class: "primary", text: "Connect Slack" }));
    return el("article", { class: "card connect", "data-connect": "slack" },
      el("h3", { text: "Slack" }),
      slack.enabled ? null : el("p", { class: "error", text: "This gateway does not receive Slack events yet (PARLEY_SLACK_SIGNING_SECRET is not set): ask its operator." }),
      slack.install_link
        ? el("p", {}, el("a", { class: "button primary", href: slack.install_link, id: "slack-install-link", text: "Add to Slack" }),
          el("span", { class: "muted", text: " (the link works once and for a day)" }))
        : el("p", { class: "muted", text: "The platform's Slack app is not set up for OAuth here: paste your own app's bot token." }),
      el("p", { class: "muted", text: "Or paste the Bot User OAuth Token of a Slack app made for your workspace (its “OAuth & Permissions” page). "
        + "It is checked with Slack before it is stored. Your app's Event Subscriptions Request URL: " }, el("code", { text: slack.events_url })),
      form);
  }

  function instagramCard(instagram) {
    const form = el("form", { class: "stack", id: "instagram-connect-form", on: { submit: async (e) => {
      e.preventDefault();
      const result = await submit(form, "channels/instagram", {
        account_id: value("ig-account"), token: value("ig-token"), app_secret: value("ig-app-secret") || undefined,
        uploaders: words(value("ig-uploaders")),
      }, (r) => "Instagram account " + r.display_name + " (" + r.external_id + ") connected. " + (r.details.messages_subscribed
        ? "Meta sends its messages to the webhook (check the callback URL and verify token below in your Meta app)."
        : (r.details.subscribe_error || "Paste the webhook settings below into your Meta app.")));
      if (result) $("ig-setup-after").replaceChildren(setupBox(result.setup));
    } } },
      field("ig-account", "Instagram account id", { type: "text", placeholder: "17841…", required: true, inputMode: "numeric" }),
      field("ig-token", "Access token", { type: "password", placeholder: "IGAA…", required: true }),
      field("ig-app-secret", "App secret of your own Meta app (optional)", { type: "password", placeholder: "optional" }),
      field("ig-uploaders", "Who may add documents by DM (Instagram-scoped ids)", { type: "text", placeholder: "IGSID IGSID" }),
      el("button", { type: "submit", class: "primary", text: "Connect Instagram" }));
    return el("article", { class: "card connect", "data-connect": "instagram" },
      el("h3", { text: "Instagram" }),
      instagram.enabled ? null : el("p", { class: "error", text: "This gateway does not receive Instagram webhooks yet (PARLEY_INSTAGRAM_APP_SECRETS is not set): ask its operator." }),
      el("p", { class: "muted", text: "Your professional account's id and an access token (Meta app › Instagram › API setup › Generate token). "
        + "The token is checked with Instagram, and must belong to that account." }),
      form, el("div", { id: "ig-setup-after" }, setupBox(instagram)));
  }

  function shopifyCard(shopify) {
    const form = el("form", { class: "stack", id: "shopify-connect-form", on: { submit: (e) => {
      e.preventDefault();
      submit(form, "channels/shopify", { shop: value("shop-domain"), token: value("shop-token"), webhook_secret: value("shop-secret") || undefined },
        (r) => "Shopify store " + r.display_name + " connected; its catalog sync has started.");
    } } },
      field("shop-domain", "Store", { type: "text", placeholder: "my-shop.myshopify.com", required: true }),
      field("shop-token", "Admin API access token of a custom app", { type: "password", placeholder: "shpat_…", required: true }),
      field("shop-secret", "API secret key (registers product webhooks)", { type: "password", placeholder: "optional" }),
      el("button", { type: "submit", class: "primary", text: "Connect Shopify" }));
    return el("article", { class: "card connect", "data-connect": "shopify" },
      el("h3", { text: "Shopify" }),
      shopify.install_link ? el("p", {}, el("a", { class: "button primary", href: shopify.install_link, id: "shopify-install-link", text: "Install on Shopify" })) : null,
      el("p", { class: "muted", text: "Or a custom app's token (Shopify admin › Apps › Develop apps), with read_products." }),
      form);
  }

  function manageRow(c) {
    const token = el("input", { type: "password", placeholder: "new token", autocomplete: "off", "aria-label": "new token for " + c.external_id });
    const rotate = el("form", { class: "inline", on: { submit: async (e) => {
      e.preventDefault();
      try { await post("channels/" + c.kind + "/" + encodeURIComponent(c.id) + "/rotate", { token: token.value.trim() });
        token.value = ""; flash("New token of " + c.external_id + " checked and in use."); }
      catch (err) { flash("Token not changed: " + err.message, true); }
    } } }, token, el("button", { type: "submit", class: "small rotate", text: "Rotate token" }));
    const disconnect = el("button", { type: "button", class: "small danger disconnect", text: "Disconnect", on: { click: async () => {
      if (!confirm("Disconnect " + KIND_NAME[c.kind] + " " + (c.display_name || c.external_id) + "? It stops answering at once.")) return;
      try { const r = await post("channels/" + c.kind + "/" + encodeURIComponent(c.id) + "/disconnect");
        flash(KIND_NAME[c.kind] + " " + r.external_id + " disconnected."); }
      catch (err) { flash("Not disconnected: " + err.message, true); }
      manage();
    } } });
    let extra = null;
    if (c.kind === "instagram") {
      const people = el("input", { type: "text", value: ((c.details || {}).uploaders || []).join(" "), "aria-label": "uploaders of " + c.external_id });
      extra = el("form", { class: "inline", on: { submit: async (e) => {
        e.preventDefault();
        try { await post("channels/instagram/" + encodeURIComponent(c.id) + "/uploaders", { uploaders: words(people.value) });
          flash("Uploaders of " + c.external_id + " saved."); }
        catch (err) { flash("Uploaders not saved: " + err.message, true); }
      } } }, el("span", { class: "muted", text: "Uploaders " }), people, el("button", { type: "submit", class: "small", text: "Save" }));
    }
    return el("div", { class: "manage-row", "data-kind": c.kind, "data-external-id": c.external_id },
      el("div", { class: "manage-head" }, el("strong", { text: KIND_NAME[c.kind] + " · " + (c.display_name || c.external_id) }),
        el("code", { text: c.external_id }), badge(c.status)),
      el("div", { class: "manage-actions" }, rotate, extra, disconnect));
  }

  async function manage() {
    const { channels } = await api("channels");
    const active = channels.filter((c) => c.status === "active" && KIND_NAME[c.kind]);
    $("channel-manage").hidden = active.length === 0;
    $("channel-manage-list").replaceChildren(...active.map(manageRow));
  }

  async function connectSection() {
    const setup = await api("channels/setup");
    $("channel-connect-forms").replaceChildren(slackCard(setup.slack), instagramCard(setup.instagram), shopifyCard(setup.shopify));
    if (setup.slack.install_link) $("empty-slack-oauth").replaceChildren(el("a", { href: setup.slack.install_link, text: "open the “Add to Slack” link" }));
    if (setup.shopify.install_link) $("empty-shopify-link").replaceChildren(el("a", { href: setup.shopify.install_link, text: "open the install link" }));
    if (setup.handoff_settings) $("handoff-link").href = setup.handoff_settings;
    await manage();
  }

  const before = views.channels;
  views.channels = () => { before(); connectSection().catch((err) => flash("Channels: " + err.message, true)); };
})();
