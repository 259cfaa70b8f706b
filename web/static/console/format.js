// How the console writes figures and times: shared by the fleet and device pages.
// Text comes from the page's catalog (<script type="application/json" id="i18n">, made by the
// server from the gettext catalogs): t("msgid", {name: value}) fills %(name)s as Python does.
"use strict";
window.ConsoleFormat = (function () {
  const block = document.getElementById("i18n");
  const catalog = block ? JSON.parse(block.textContent) : { lang: "en", locale: "en", messages: {}, plurals: {} };
  // The browser's own variant when it speaks the page's language (en-GB writes 24-hour times),
  // else the locale the server formats with (a language without locale data borrows one).
  const browser = navigator.language || "";
  const locale = browser.split("-")[0] === catalog.locale.split("-")[0] ? browser : catalog.locale;
  const plurals = new Intl.PluralRules(locale);

  function fill(text, vars) {
    if (!vars) return text;
    return text.replace(/%\(([a-z_]+)\)s|%%/g, (all, name) => (name ? String(vars[name]) : "%"));
  }

  function t(msgid, vars) {
    const text = Object.prototype.hasOwnProperty.call(catalog.messages, msgid) ? catalog.messages[msgid] : msgid;
    return fill(text || msgid, vars);
  }

  // Plural text: the form for n's plural category; `num` is n written for the locale.
  function nt(singular, plural, n, vars) {
    const forms = catalog.plurals[singular];
    const text = forms ? forms[plurals.select(n)] || forms.other || plural : n === 1 ? singular : plural;
    return fill(text, { num: number(n, 0), ...vars });
  }

  const formats = new Map();
  function number(v, digits) {
    if (!formats.has(digits)) {
      formats.set(digits, new Intl.NumberFormat(locale, { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false }));
    }
    return formats.get(digits).format(v);
  }

  // Up to `digits` decimals, trailing zeros dropped (what +v.toFixed(1) wrote before).
  function short(v, digits) {
    return new Intl.NumberFormat(locale, { maximumFractionDigits: digits, useGrouping: false }).format(v);
  }

  const metric = {
    cpu_pct: (v) => t("%(num)s %%", { num: number(v, 0) }),
    mem_pct: (v) => t("%(num)s %%", { num: number(v, 0) }),
    disk_pct: (v) => t("%(num)s %%", { num: number(v, 0) }),
    temp_c: (v) => t("%(num)s °C", { num: number(v, 1) }),
    load1: (v) => number(v, 2),
    uptime_s: (v) => {
      const d = Math.floor(v / 86400), h = Math.floor((v % 86400) / 3600), m = Math.floor((v % 3600) / 60);
      return d ? t("%(d)s d %(h)s h", { d, h }) : h ? t("%(h)s h %(m)s min", { h, m }) : t("%(num)s min", { num: m });
    },
  };

  function ago(seconds) {
    if (seconds < 90) return t("just now");
    if (seconds < 5400) return t("%(num)s min ago", { num: Math.round(seconds / 60) });
    if (seconds < 129600) return t("%(num)s h ago", { num: Math.round(seconds / 3600) });
    return t("%(num)s d ago", { num: Math.round(seconds / 86400) });
  }

  // A time as the page's language writes it, in the browser's time zone.
  function dateTime(seconds) {
    return new Date(seconds * 1000).toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
  }

  function time(date) {
    return date.toLocaleTimeString(locale, { timeStyle: "short" });
  }

  return Object.freeze({ metric, ago, t, nt, number, short, dateTime, time, locale, lang: catalog.lang });
})();
