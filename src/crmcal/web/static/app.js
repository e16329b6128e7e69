// crmcal's own script: settings that save as they change, live sync state, confirmations.
"use strict";
(function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function api(method, url, body) {
    var init = { method: method, credentials: "same-origin",
                 headers: { "Accept": "application/json", "X-CSRF-Token": csrf() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var detail = data && data.detail ? data.detail : response.statusText;
          throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
        }
        return data;
      });
    });
  }

  // A form marked data-autosave PATCHes its fields as JSON on every change.
  function autosave(form) {
    var status = form.querySelector("[data-save-state]");
    var pending = null;
    function say(text, bad) {
      if (!status) { return; }
      status.textContent = text;
      status.classList.toggle("error", !!bad);
      status.classList.toggle("saved", !bad);
    }
    function collect() {
      var body = { options: {} };
      form.querySelectorAll("[data-field]").forEach(function (el) {
        var path = el.getAttribute("data-field");
        var value;
        if (el.type === "checkbox" && el.hasAttribute("data-list")) {
          if (!el.checked) { return; }
          value = el.value;
        } else if (el.type === "checkbox") {
          value = el.checked;
        } else if (el.type === "radio") {
          if (!el.checked) { return; }
          value = el.value;
        } else if (el.type === "number") {
          value = el.value === "" ? null : Number(el.value);
        } else {
          value = el.value;
        }
        var target = body;
        var key = path;
        if (path.indexOf("options.") === 0) { target = body.options; key = path.slice(8); }
        if (el.hasAttribute("data-list")) {
          (target[key] = target[key] || []).push(value);
        } else {
          target[key] = value;
        }
      });
      form.querySelectorAll("[data-list-field]").forEach(function (group) {
        var key = group.getAttribute("data-list-field").replace(/^options\./, "");
        if (!body.options[key]) { body.options[key] = []; }
      });
      return body;
    }
    function save() {
      say(form.getAttribute("data-saving-text") || "Saving…");
      api("PATCH", form.getAttribute("data-autosave"), collect()).then(function (data) {
        say(form.getAttribute("data-saved-text") || "Saved");
        document.dispatchEvent(new CustomEvent("crmcal:saved", { detail: data }));
      }).catch(function (err) {
        say((form.getAttribute("data-failed-text") || "Not saved:") + " " + err.message, true);
      });
    }
    form.addEventListener("change", function () {
      clearTimeout(pending);
      pending = setTimeout(save, 150);
    });
    form.addEventListener("submit", function (event) { event.preventDefault(); save(); });
  }

  // Elements with data-status-url show a connection's state, refreshed every few seconds.
  function liveStatus(el) {
    var url = el.getAttribute("data-status-url");
    function show(data) {
      el.querySelectorAll("[data-status]").forEach(function (slot) {
        var key = slot.getAttribute("data-status");
        var value = data[key];
        if (key === "state") {
          slot.textContent = slot.getAttribute("data-label-" + value) || value;
          slot.className = "badge " + value;
        } else if (key === "last_sync_at") {
          slot.textContent = value ? new Date(value).toLocaleString(document.documentElement.lang || undefined) : (slot.getAttribute("data-never") || "never");
        } else if (key === "last_error") {
          slot.textContent = value || "";
          slot.hidden = !value;
        }
      });
    }
    function tick() {
      api("GET", url).then(show).catch(function () { /* a missed poll shows the last state */ })
        .then(function () { setTimeout(tick, 3000); });
    }
    setTimeout(tick, 1500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-autosave]").forEach(autosave);
    document.querySelectorAll("[data-status-url]").forEach(liveStatus);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
    document.querySelectorAll("[data-show-when]").forEach(function (el) {
      // "name=value": shown only while that control has that value.
      var parts = el.getAttribute("data-show-when").split("=");
      var control = document.getElementById(parts[0]);
      if (!control) { return; }
      function update() {
        var value = control.type === "checkbox" ? String(control.checked) : control.value;
        el.hidden = value !== parts[1];
      }
      control.addEventListener("change", update);
      update();
    });
  });
})();
