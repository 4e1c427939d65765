// The status page's script: no framework, no build step.
// - On the login page, a token in the URL fragment (/ui#token=...) is
//   posted to /ui/login and the page reloads: the fragment never reaches
//   the server, so the token appears in no request line or log.
// - On the status page, new events are polled from /v1/events (the
//   session cookie authorizes this read) and added at the top of the list.
"use strict";

(function () {
  var POLL_MS = 2000;
  var KEEP = 200;

  function loginFromFragment() {
    var hash = window.location.hash;
    if (hash.indexOf("#token=") !== 0) {
      return false;
    }
    var token = decodeURIComponent(hash.slice("#token=".length));
    // Out of the address bar and the history before anything else.
    history.replaceState(null, "", window.location.pathname);
    if (!token) {
      return false;
    }
    fetch("/ui/login", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "token=" + encodeURIComponent(token),
      credentials: "same-origin",
    }).then(function () {
      window.location.replace("/ui");
    });
    return true;
  }

  function eventItem(e) {
    var li = document.createElement("li");
    li.className = "event level-" + e.level;
    li.dataset.seq = String(e.seq);
    var parts = [
      ["time", e.at],
      ["span", e.kind, "kind"],
      ["span", [e.manifest, e.node].filter(Boolean).join("/"), "subject"],
      ["span", e.message, "message"],
    ];
    parts.forEach(function (p) {
      var el = document.createElement(p[0]);
      el.textContent = p[1] || "";
      if (p[2]) {
        el.className = p[2];
      }
      li.appendChild(el);
    });
    return li;
  }

  function poll(list) {
    var next = list.dataset.next || "0";
    fetch("/v1/events?since=" + encodeURIComponent(next) + "&limit=100", {
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.json();
      })
      .then(function (body) {
        body.events.forEach(function (e) {
          list.insertBefore(eventItem(e), list.firstChild);
        });
        while (list.children.length > KEEP) {
          list.removeChild(list.lastChild);
        }
        list.dataset.next = String(body.next);
        list.classList.remove("stale");
        // More waiting: ask again at once.
        setTimeout(function () { poll(list); }, body.next < body.last ? 0 : POLL_MS);
      })
      .catch(function () {
        list.classList.add("stale");
        setTimeout(function () { poll(list); }, POLL_MS * 2);
      });
  }

  // A fragment typed into an open page does not load it again.
  window.addEventListener("hashchange", loginFromFragment);

  document.addEventListener("DOMContentLoaded", function () {
    if (loginFromFragment()) {
      return;
    }
    var list = document.getElementById("events");
    if (list) {
      setTimeout(function () { poll(list); }, POLL_MS);
    }
  });
})();
