/*
 * closedloop website tracker. One tag, no dependencies:
 *
 *   <script async src="https://collect.example.com/tracker.js" data-key="YOUR-WRITE-KEY"></script>
 *
 * Attributes: data-key (required, the site's write key), data-collector (default: where this script came from),
 * data-cookie-domain (e.g. .example.com to share the visitor id across subdomains), data-consent="required"
 * (send nothing until closedloop.consent(true)), data-respect-dnt="false" (ignore Do-Not-Track; default honours
 * it), data-spa="false" (no page views on history navigation), data-ads-consent="granted|denied" (the visitor's
 * consent to share their conversions with ad platforms, when the page knows it at load; docs/ADS.md).
 *
 * Forms marked with the attribute data-closedloop (its value, if any, is the form id) send an identify event
 * with the email field (type=email, else a field whose name contains "email") when submitted; the submit itself
 * is never blocked or changed.
 *
 * API: closedloop.track({url?, title?}) sends a page view; closedloop.identify(email, {field: value}, formId);
 * closedloop.consent(true|false); closedloop.adsConsent(true|false) (from the consent banner: every later event
 * carries ads_consent "granted" or "denied"; without it nothing is fed back to ad platforms);
 * closedloop.optOut(); closedloop.visitorId(). With data-respect-dnt="false", events of a browser that sends
 * Do-Not-Track or Global Privacy Control carry do_not_track: true, and such a lead is never fed back to ad platforms.
 *
 * Build: collector/static/build.sh writes tracker.min.js (what GET /tracker.js serves).
 */
(function (window, document) {
  "use strict";
  if (window.closedloop && window.closedloop.loaded) return;

  var script = document.currentScript || document.querySelector("script[data-key]");
  var attr = function (name, fallback) {
    var value = script && script.getAttribute("data-" + name);
    return value === null || value === undefined || value === "" ? fallback : value;
  };
  var key = attr("key", "");
  var endpoint = (attr("collector", "") || (script && script.src ? new URL(script.src).origin : "")).replace(/\/+$/, "") +
    "/v1/events?key=" + encodeURIComponent(key);
  var cookieDomain = attr("cookie-domain", "");
  var VISITOR = "_cl_vid", SESSION = "_cl_sid", OPTOUT = "_cl_optout";
  var TWO_YEARS = 63072000, THIRTY_MINUTES = 1800;
  var CAMPAIGN = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "gclid", "gbraid", "wbraid", "msclkid",
    "fbclid", "li_fat_id"];

  var dntSignal = navigator.doNotTrack === "1" || window.doNotTrack === "1" || navigator.globalPrivacyControl === true;
  var dnt = attr("respect-dnt", "true") !== "false" && dntSignal;
  var adsConsent = attr("ads-consent", null);
  if (adsConsent !== "granted" && adsConsent !== "denied") adsConsent = null;
  var consented = attr("consent", "") !== "required";

  function readCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function writeCookie(name, value, maxAge) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + maxAge + "; Path=/; SameSite=Lax" +
      (cookieDomain ? "; Domain=" + cookieDomain : "") + (location.protocol === "https:" ? "; Secure" : "");
  }

  function randomId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    var out = "";
    for (var i = 0; i < 32; i++) out += Math.floor(Math.random() * 16).toString(16);
    return out;
  }

  function enabled() {
    return key && consented && !dnt && readCookie(OPTOUT) !== "1";
  }

  // The visitor id lives two years; the session id expires after 30 minutes without an event.
  function visitorId() {
    var id = readCookie(VISITOR);
    if (!id) id = randomId();
    writeCookie(VISITOR, id, TWO_YEARS);
    return id;
  }

  function sessionId() {
    var id = readCookie(SESSION) || randomId();
    writeCookie(SESSION, id, THIRTY_MINUTES);
    return id;
  }

  function send(event) {
    if (!enabled()) return false;
    var now = new Date().toISOString();
    event.event_id = randomId();
    event.occurred_at = event.occurred_at || now;
    event.sent_at = now;
    if (adsConsent) event.ads_consent = adsConsent;
    if (dntSignal) event.do_not_track = true;
    var body = JSON.stringify(event);
    // text/plain keeps it a "simple" cross-origin request: no preflight, and sendBeacon accepts it.
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(endpoint, new Blob([body], { type: "text/plain" }))) return true;
    } catch (e) { /* fall through to fetch */ }
    try {
      fetch(endpoint, { method: "POST", body: body, keepalive: true, mode: "cors", credentials: "omit",
        headers: { "Content-Type": "text/plain" } })["catch"](function () {});
      return true;
    } catch (e) {
      return false;
    }
  }

  var lastUrl = null;

  function pageView(overrides) {
    if (!enabled()) return false;
    overrides = overrides || {};
    var url = overrides.url || location.href;
    var params = new URL(url, location.href).searchParams;
    var event = {
      type: "page_view",
      visitor_id: visitorId(),
      session_id: sessionId(),
      url: new URL(url, location.href).href,
      title: (overrides.title || document.title || "").slice(0, 512) || null,
      referrer: lastUrl || document.referrer || null,
      screen: window.screen ? screen.width + "x" + screen.height : null
    };
    for (var i = 0; i < CAMPAIGN.length; i++) {
      var value = params.get(CAMPAIGN[i]);
      if (value) event[CAMPAIGN[i]] = value.slice(0, 512);
    }
    lastUrl = event.url;
    return send(event);
  }

  function identify(email, fields, formId) {
    if (!email || !enabled()) return false;
    return send({
      type: "identify",
      visitor_id: visitorId(),
      email: String(email).slice(0, 320),
      form_id: formId || null,
      url: location.href,
      fields: fields || {}
    });
  }

  function onSubmit(e) {
    var form = e.target;
    if (!form || form.tagName !== "FORM" || !form.hasAttribute("data-closedloop")) return;
    try {
      var email = null, fields = {}, count = 0;
      for (var i = 0; i < form.elements.length; i++) {
        var input = form.elements[i], name = input.name || input.id, type = (input.type || "").toLowerCase();
        if (!name || !input.value || /^(password|file|submit|button|reset|hidden)$/.test(type)) continue;
        if ((type === "checkbox" || type === "radio") && !input.checked) continue;
        if (!email && (type === "email" || /e-?mail/i.test(name))) { email = input.value; continue; }
        if (count < 50) { fields[name.slice(0, 128)] = String(input.value).slice(0, 512); count++; }
      }
      identify(email, fields, form.getAttribute("data-closedloop") || form.id || form.getAttribute("name") || null);
    } catch (err) { /* never break the form */ }
  }

  function onNavigation() {
    if (location.href !== lastUrl) pageView();
  }

  if (attr("spa", "true") !== "false" && window.history && history.pushState) {
    var push = history.pushState, replace = history.replaceState;
    history.pushState = function () { var r = push.apply(this, arguments); onNavigation(); return r; };
    history.replaceState = function () { var r = replace.apply(this, arguments); onNavigation(); return r; };
    window.addEventListener("popstate", onNavigation);
  }
  document.addEventListener("submit", onSubmit, true);

  window.closedloop = {
    loaded: true,
    track: pageView,
    identify: identify,
    visitorId: function () { return enabled() ? visitorId() : null; },
    consent: function (granted) {
      var was = consented;
      consented = !!granted;
      if (consented && !was) pageView();
    },
    adsConsent: function (granted) {
      adsConsent = granted ? "granted" : "denied";
    },
    optOut: function () {
      writeCookie(OPTOUT, "1", TWO_YEARS);
      writeCookie(VISITOR, "", 0);
      writeCookie(SESSION, "", 0);
    }
  };

  pageView();
})(window, document);
