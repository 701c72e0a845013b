// Parley's chat widget for a tenant's own site:
//   <script src="https://GATEWAY/chat/widget.js" data-widget="wgt_..." async></script>
// Draws a floating button (bottom right; data-position="left" for bottom left, data-label for its
// name) that opens the tenant's chat in an iframe served by the gateway. Everything is built with DOM
// calls and CSSOM (no inline markup, no <style>), inside a shadow root, so it works under a strict
// CSP on the host page and neither side's styles leak into the other. The host page never holds a
// key or a session: the visitor's session lives inside the frame.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || !script.dataset.widget || window.__parleyWidget) return;
  window.__parleyWidget = true;
  const origin = new URL(script.src, location.href).origin;
  const id = script.dataset.widget;
  const label = script.dataset.label || "Chat with us";
  const side = script.dataset.position === "left" ? "left" : "right";
  const BRAND = "#3b5bdb";

  const css = (node, rules) => { for (const [k, v] of Object.entries(rules)) node.style.setProperty(k, v); return node; };
  const svg = (d) => {
    const ns = "http://www.w3.org/2000/svg";
    const icon = document.createElementNS(ns, "svg");
    icon.setAttribute("viewBox", "0 0 24 24");
    icon.setAttribute("width", "26");
    icon.setAttribute("height", "26");
    icon.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", "#fff");
    path.setAttribute("stroke-width", "2");
    path.setAttribute("stroke-linecap", "round");
    path.setAttribute("stroke-linejoin", "round");
    icon.append(path);
    return icon;
  };
  const BUBBLE = "M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z";
  const CLOSE = "M6 6l12 12M18 6L6 18";

  const host = css(document.createElement("div"), { position: "fixed", bottom: "0", [side]: "0", "z-index": "2147483000" });
  host.id = "parley-widget";
  const root = host.attachShadow({ mode: "open" });

  const panel = css(document.createElement("div"), {
    position: "fixed", bottom: "92px", [side]: "20px", width: "380px", height: "600px",
    "max-width": "calc(100vw - 24px)", "max-height": "calc(100vh - 112px)", display: "none",
    "border-radius": "14px", overflow: "hidden", background: "#fff",
    "box-shadow": "0 12px 40px rgba(16, 24, 40, .28)", border: "1px solid #e3e7ee",
  });
  panel.setAttribute("part", "panel");
  let frame = null;

  const button = css(document.createElement("button"), {
    position: "fixed", bottom: "20px", [side]: "20px", width: "60px", height: "60px", "border-radius": "50%",
    border: "0", background: BRAND, cursor: "pointer", display: "flex", "align-items": "center",
    "justify-content": "center", "box-shadow": "0 6px 20px rgba(59, 91, 219, .45)", padding: "0",
  });
  button.type = "button";
  button.setAttribute("aria-label", label);
  button.setAttribute("aria-expanded", "false");
  button.title = label;
  button.append(svg(BUBBLE));

  function phone() {
    const small = window.innerWidth <= 480;
    css(panel, small ? { width: "100vw", height: "calc(100vh - 90px)", bottom: "84px", [side]: "0", "max-width": "100vw",
      "border-radius": "0" } : { width: "380px", height: "600px", bottom: "92px", [side]: "20px", "border-radius": "14px" });
  }

  function toggle() {
    const open = panel.style.display === "none";
    if (open && !frame) {
      frame = css(document.createElement("iframe"), { width: "100%", height: "100%", border: "0", display: "block" });
      frame.title = label;
      frame.src = origin + "/chat/w/" + encodeURIComponent(id);
      frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms allow-popups allow-popups-to-escape-sandbox");
      frame.setAttribute("referrerpolicy", "strict-origin-when-cross-origin");
      panel.append(frame);
    }
    phone();
    panel.style.display = open ? "block" : "none";
    button.setAttribute("aria-expanded", String(open));
    button.replaceChildren(svg(open ? CLOSE : BUBBLE));
  }

  button.addEventListener("click", toggle);
  window.addEventListener("resize", () => { if (panel.style.display !== "none") phone(); });
  root.append(panel, button);
  (document.body || document.documentElement).append(host);
})();
