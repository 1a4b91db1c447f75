// Convoy dashboard: confirmations, the host filter, and live updates of a
// rollout page from /rollouts/ID/events (server-sent events carrying only
// what changed). Hand-written, no build step; served from the binary.
"use strict";

(function () {
  function text(el, value) {
    if (el && el.textContent !== value) el.textContent = value;
  }

  function badge(el, state) {
    if (!el) return;
    var b = el.querySelector(".badge");
    if (!b) {
      b = document.createElement("span");
      el.insertBefore(b, el.firstChild);
    }
    b.className = "badge s-" + state;
    b.textContent = state;
  }

  // Abort and rollback ask first; the server asks again if this did not run.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        ev.preventDefault();
        return;
      }
      var c = form.querySelector("input[name=confirmed]");
      if (c) c.value = "yes";
    });
  });

  // The host filter works without reloading (the server filters too).
  var filter = document.getElementById("state-filter");
  function applyFilter() {
    if (!filter) return;
    var want = filter.value;
    document.querySelectorAll("#hosts tbody tr").forEach(function (row) {
      row.hidden = want !== "" && row.getAttribute("data-phase") !== want;
    });
  }
  if (filter) filter.addEventListener("change", applyFilter);

  var head = document.getElementById("rollout");
  if (!head || head.getAttribute("data-terminal") === "true" || !window.EventSource) return;

  var source = new EventSource(head.getAttribute("data-events"));
  var terminal = ["succeeded", "failed", "aborted", "rolled_back"];

  function updateRollout(r) {
    badge(document.getElementById("rollout-state"), r.state);
    text(document.getElementById("rollout-message"), r.message);
    text(document.getElementById("rollout-progress"), r.done + "/" + r.total);
    if (terminal.indexOf(r.state) >= 0) {
      source.close();
      var actions = document.getElementById("actions");
      if (actions) {
        actions.querySelectorAll("form").forEach(function (f) {
          if (!/\/rollback$/.test(f.getAttribute("action"))) f.remove();
        });
      }
    }
  }

  function updateGroup(g) {
    var row = document.querySelector('#groups tr[data-group="' + CSS.escape(g.name) + '"]');
    if (row) {
      badge(row.querySelector(".g-state"), g.state);
      ["done", "running", "failed", "rolled_back", "pending"].forEach(function (k) {
        text(row.querySelector(".g-" + k), String(g[k]));
      });
      // Waiting for a window: its next opening; in an open one: time left.
      if (g.window) text(row.querySelector(".g-window .w-status"), g.window);
    }
    var node = document.querySelector('svg.dag g[data-group="' + CSS.escape(g.name) + '"]');
    if (node) {
      node.setAttribute("class", "node s-" + g.state);
      text(node.querySelector(".g-state"), g.state);
      var counts = g.done + "/" + g.total + " done";
      if (g.running) counts += " · " + g.running + " running";
      if (g.failed) counts += " · " + g.failed + " failed";
      if (g.rolled_back) counts += " · " + g.rolled_back + " rolled back";
      text(node.querySelector(".g-counts"), counts);
      var track = node.querySelector(".track");
      var bar = node.querySelector(".bar");
      if (track && bar && g.total > 0) {
        var w = Number(track.getAttribute("width"));
        bar.setAttribute("width", String(Math.floor((w * g.done) / g.total)));
      }
    }
  }

  function updateHost(h) {
    var row = document.querySelector('#hosts tr[data-key="' + CSS.escape(h.key) + '"]');
    if (!row) return;
    row.setAttribute("data-phase", h.state);
    badge(row.querySelector(".h-state"), h.state);
    text(row.querySelector(".h-version"), h.version);
    text(row.querySelector(".h-step"), h.step);
    text(row.querySelector(".h-message"), h.message);
  }

  source.addEventListener("change", function (ev) {
    var c;
    try {
      c = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    (c.groups || []).forEach(updateGroup);
    (c.hosts || []).forEach(updateHost);
    if (c.rollout) updateRollout(c.rollout);
    applyFilter();
    document.body.setAttribute("data-live-events", String(Number(document.body.getAttribute("data-live-events") || 0) + 1));
  });
})();
