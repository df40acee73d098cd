"use strict";
/* The leaderboard page: the ranked table, and below it the images behind the scores. Clicking a system
   shows its captions image by image (worst first); choosing a second one shows both systems' captions
   side by side, the images where their CIDEr-D differs most first: the images that make (or break) the
   difference the bootstrap interval describes. */
(function () {
  var D = Zoo.data();
  var n = D.ids.length;
  var $ = function (id) { return document.getElementById(id); };
  var selA = $("sys-a"), selB = $("sys-b"), order = $("order"), filter = $("filter"), count = $("count");
  var drill = $("drill"), title = $("drill-title"), note = $("drill-note");
  Zoo.option(selA, "", "— choose a system —");
  Zoo.option(selB, "", "— nobody —");
  var ORDERS = {
    one: [["worst", "worst CIDEr-D first"], ["best", "best CIDEr-D first"], ["data", "data set order"]],
    pair: [["diff", "largest difference first"], ["a", "first system better first"],
           ["b", "second system better first"], ["data", "data set order"]]
  };
  var mode = null;

  function label(s) { return (s.rank ? s.rank + ". " : "") + s.name; }
  D.systems.forEach(function (s, i) {
    Zoo.option(selA, String(i), label(s));
    Zoo.option(selB, String(i), label(s));
  });

  function setOrders(m) {
    if (mode === m) { return; }
    mode = m;
    order.replaceChildren();
    ORDERS[m].forEach(function (o) { Zoo.option(order, o[0], o[1]); });
  }

  function caption(s, i) { return s.captions ? s.captions[i] : null; }
  function score(s, i) { var v = s.scores ? s.scores[i] : null; return v === undefined ? null : v; }

  function capBlock(s, i, other) {
    var box = Zoo.el("div", "cap");
    var c = caption(s, i), v = score(s, i);
    var who = Zoo.el("span", "who", s.name + (s.shown ? " (" + s.shown + ")" : ""));
    box.appendChild(who);
    box.appendChild(Zoo.el("span", "caption", c === null ? "(no caption recorded)" : c));
    var b = Zoo.el("b", null, " " + Zoo.x100(v));
    if (other !== undefined && v !== null && other !== null && v !== other) {
      b.className = v > other ? "better" : "worse";
    }
    box.appendChild(b);
    return box;
  }

  function renderOne(s) {
    return function (i) {
      var row = Zoo.el("div", "row");
      row.dataset.id = D.ids[i];
      row.appendChild(Zoo.thumb(D.thumbs[i], "image " + D.ids[i]));
      var sc = Zoo.el("div", "score", Zoo.x100(score(s, i)));
      sc.appendChild(Zoo.el("small", null, "CIDEr-D"));
      row.appendChild(sc);
      var text = Zoo.el("div");
      var c = caption(s, i);
      text.appendChild(Zoo.el("div", "caption", c === null ? "(no caption recorded)" : c));
      text.appendChild(Zoo.refs(D.refs[i]));
      text.appendChild(Zoo.el("div", "id", "image " + D.ids[i]));
      row.appendChild(text);
      return row;
    };
  }

  function renderPair(s, t) {
    return function (i) {
      var row = Zoo.el("div", "row pair");
      row.dataset.id = D.ids[i];
      row.appendChild(Zoo.thumb(D.thumbs[i], "image " + D.ids[i]));
      var va = score(s, i), vb = score(t, i);
      var left = capBlock(s, i, vb), right = capBlock(t, i, va);
      left.classList.add("cap-a");
      right.classList.add("cap-b");
      row.appendChild(left);
      row.appendChild(right);
      var below = Zoo.el("div", "below");
      var d = (va === null || vb === null) ? "—" : ((va - vb) * 100).toFixed(1);
      below.appendChild(Zoo.el("div", "id", "image " + D.ids[i] + " · difference " + d));
      below.appendChild(Zoo.refs(D.refs[i]));
      row.appendChild(below);
      return row;
    };
  }

  var view = new Zoo.ListView($("rows"), function (i) { return view.render(i); });

  function haystack(i, systems) {
    var parts = [D.ids[i]].concat(D.refs[i] || []);
    systems.forEach(function (s) { var c = caption(s, i); if (c) { parts.push(c); } });
    return parts.join("\n").toLowerCase();
  }

  function key(v, missing) { return v === null ? missing : v; }

  function update() {
    if (selA.value === "") {
      count.textContent = "";
      showIdentity([]);
      view.show([], "Click a system in the table above (or choose one here) to see its images.");
      return;
    }
    var s = D.systems[+selA.value];
    var t = selB.value === "" || selB.value === selA.value ? null : D.systems[+selB.value];
    setOrders(t ? "pair" : "one");
    var systems = t ? [s, t] : [s];
    var q = filter.value;
    var idx = [];
    for (var i = 0; i < n; i++) {
      if (!q || Zoo.matches(haystack(i, systems), q)) { idx.push(i); }
    }
    var how = order.value;
    var f;
    if (!t) {
      f = how === "worst" ? function (i) { return key(score(s, i), Infinity); }
        : how === "best" ? function (i) { return -key(score(s, i), -Infinity); } : null;
    } else {
      var diff = function (i) {
        var a = score(s, i), b = score(t, i);
        return (a === null || b === null) ? null : a - b;
      };
      f = how === "diff" ? function (i) { var d = diff(i); return d === null ? Infinity : -Math.abs(d); }
        : how === "a" ? function (i) { return -key(diff(i), -Infinity); }
        : how === "b" ? function (i) { return key(diff(i), Infinity); } : null;
    }
    if (f) { idx.sort(function (x, y) { return (f(x) - f(y)) || (x - y); }); }
    view.render = t ? renderPair(s, t) : renderOne(s);
    title.textContent = t ? s.name + " vs " + t.name + ": the same images side by side" : s.name + ": its images";
    showIdentity(systems);
    var missing = systems.filter(function (x) { return !x.captions; }).map(function (x) { return x.name; });
    note.textContent = missing.length
      ? "No captions were recorded for " + missing.join(", ") + " (evaluated before caption-zoo stored them; run zoo eval again)."
      : (t ? "Scores are each image's CIDEr-D ×100; green marks the better caption of the two." : "");
    count.textContent = idx.length + " of " + n + " images";
    document.querySelectorAll("table.board tbody tr").forEach(function (tr) {
      var b = tr.querySelector("button.sys");
      var k = b ? b.dataset.system : null;
      tr.classList.toggle("picked", k === selA.value || (t !== null && k === selB.value));
    });
    view.show(idx, "no image matches the filter");
  }

  /* The full identity of the systems shown (the table's names show only what tells rows apart). */
  function showIdentity(systems) {
    var box = $("drill-identity");
    box.replaceChildren();
    systems.forEach(function (s) {
      if (!s.identity || !s.identity.length) { return; }
      var d = Zoo.el("details", "identity");
      d.open = systems.length === 1;
      d.appendChild(Zoo.el("summary", null, "identity of " + s.name + ": " + s.identity[0]));
      var ul = Zoo.el("ul");
      s.identity.slice(1).forEach(function (line) { ul.appendChild(Zoo.el("li", null, line)); });
      d.appendChild(ul);
      box.appendChild(d);
    });
  }

  function show(a, b) {
    selA.value = String(a);
    selB.value = b === null || b === undefined ? "" : String(b);
    update();
  }

  document.querySelectorAll("button.sys").forEach(function (btn) {
    btn.addEventListener("click", function () {
      show(+btn.dataset.system, null);
      drill.scrollIntoView();
    });
  });
  selA.addEventListener("change", update);
  selB.addEventListener("change", update);
  order.addEventListener("change", update);
  filter.addEventListener("input", update);
  Zoo.sortableTables();

  /* #system=I or #compare=I,J opens that view (a link someone can share) */
  var m = /^#(system|compare)=(\d+)(?:,(\d+))?$/.exec(location.hash);
  if (m && +m[2] < D.systems.length) {
    show(+m[2], m[3] !== undefined && +m[3] < D.systems.length ? +m[3] : null);
  } else {
    setOrders("one");
    update();
  }
})();
