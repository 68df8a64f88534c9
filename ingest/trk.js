/*! trk.js: keeps a tracked click on the shop's site, reports the sale with it. */
(function (w, d) {
  "use strict";
  var P = "trk_click", K = "_trk_click", me = d.currentScript, base = "", sent = [];
  try { base = new URL(me.src).origin; } catch (e) {}
  function now() { return Math.floor(Date.now() / 1000); }
  // A token's expiry is in its clear header (version 2, then 4 bytes); the rest is sealed.
  // Longer than the pixel's 512 for click=: it would get the sale refused, so not kept.
  function expiry(t) {
    if (!/^[A-Za-z0-9_-]{44,512}$/.test(t)) return 0;
    var b = atob(t.slice(0, 8).replace(/-/g, "+").replace(/_/g, "/")), x = 0, i;
    if (b.charCodeAt(0) !== 2) return 0;
    for (i = 1; i < 5; i++) x = x * 256 + b.charCodeAt(i);
    return x;
  }
  function cookie() {
    var m = d.cookie.match(/(?:^|; )_trk_click=([^;]*)/);
    return m ? m[1] : "";
  }
  function stored() {
    var t = "";
    try { t = w.localStorage.getItem(K) || ""; } catch (e) {}
    if (!(expiry(t) > now())) t = cookie();
    return expiry(t) > now() ? t : "";
  }
  function keep(t, age) {
    try { w.localStorage.setItem(K, t); } catch (e) {}
    // On the widest domain the browser takes (the shop's site): www. and checkout. share it.
    var h = location.hostname.split("."), a = "=" + t + "; Max-Age=" + age +
      "; Path=/; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : ""), i;
    for (i = h.length - 2; i >= 0; i--) {
      d.cookie = K + a + "; Domain=" + h.slice(i).join(".");
      if (cookie() === t) return;
    }
    d.cookie = K + a;
  }
  function sale(o) {
    try {
      var q = [], f = ["universe", "amount", "id", "currency", "customer"], t = stored(), i, v;
      for (i = 0; i < f.length; i++) {
        v = o && o[f[i]];
        if (v !== undefined && v !== null && v !== "") {
          q.push(f[i] + "=" + encodeURIComponent(String(v)));
        }
      }
      if (t) q.push("click=" + t);
      var img = new Image(1, 1);
      sent.push(img); // held until loaded: a collected image may never be requested
      img.src = base + "/sales.php?" + q.join("&");
    } catch (e) {}
  }
  try {
    // The landing page: keep the click (the last one wins), take it off the address bar.
    var s = location.search, m = /[?&]trk_click=([^&#]*)/.exec(s), t, age;
    if (m) {
      s = s.slice(1).split("&").filter(function (p) { return p.split("=")[0] !== P; });
      history.replaceState(history.state, "",
        location.pathname + (s.length ? "?" + s.join("&") : "") + location.hash);
      t = decodeURIComponent(m[1]);
      age = expiry(t) - now();
      if (age > 0) keep(t, age);
    }
  } catch (x) {}
  var q = w.trk && w.trk.q;
  w.trk = { sale: sale };
  try {
    // Pages under a CSP without inline scripts: the sale in the tag's data-* attributes.
    if (me && me.dataset.amount) sale(me.dataset);
    for (var n = 0; q && n < q.length; n++) sale(q[n]);
  } catch (x) {}
})(window, document);
