"use strict";
/* Shared by the zoo's pages: read the embedded JSON, make elements (text only: data never becomes
   markup), and show a long list a screenful at a time. Rendering on demand keeps opening a page with
   5,000 images as quick as one with 50: only the rows scrolled to exist in the DOM, and their thumbnails
   are decoded lazily. */
var Zoo = (function () {
  var BATCH = 50;

  function data() {
    return JSON.parse(document.getElementById("zoo-data").textContent);
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function thumb(uri, alt) {
    if (!uri) {
      return el("div", "nothumb", "no thumbnail");
    }
    var img = el("img", "thumb");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    img.src = uri;
    return img;
  }

  function refs(list) {
    var ul = el("ul", "refs");
    (list || []).forEach(function (r) { ul.appendChild(el("li", null, r)); });
    return ul;
  }

  function x100(v) {
    return (v === null || v === undefined) ? "—" : (v * 100).toFixed(1);
  }

  /* A list in `container`, rendered BATCH rows at a time while a sentinel below it is on screen. */
  function ListView(container, renderRow) {
    var self = this;
    this.container = container;
    this.renderRow = renderRow;
    this.items = [];
    this.shown = 0;
    this.sentinel = el("div", "sentinel");
    container.parentNode.insertBefore(this.sentinel, container.nextSibling);
    this.observer = new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) { self.more(); }
    }, { rootMargin: "600px" });
  }
  ListView.prototype.show = function (items, emptyText) {
    this.items = items;
    this.shown = 0;
    this.container.replaceChildren();
    if (!items.length && emptyText) {
      this.container.appendChild(el("div", "empty", emptyText));
    }
    this.more();
  };
  ListView.prototype.more = function () {
    var end = Math.min(this.shown + BATCH, this.items.length);
    var frag = document.createDocumentFragment();
    for (var i = this.shown; i < end; i++) { frag.appendChild(this.renderRow(this.items[i], i)); }
    this.container.appendChild(frag);
    this.shown = end;
    this.observer.unobserve(this.sentinel);
    if (this.shown < this.items.length) { this.observer.observe(this.sentinel); } /* re-checks at once */
  };

  /* Words of `query` that must all occur in `haystack` (both lower-cased). */
  function matches(haystack, query) {
    var words = query.toLowerCase().split(/\s+/).filter(Boolean);
    return words.every(function (w) { return haystack.indexOf(w) >= 0; });
  }

  /* A cell's sort value: its data-v, or its text where it has none (a name column); "" is missing. */
  function sortValue(cell) {
    var v = cell ? cell.dataset.v : undefined;
    return v === undefined ? (cell ? cell.textContent.trim() : "") : v;
  }

  /* Clicking a header of table.sortable sorts its rows by the cells' data-v, or their text where they
     carry none (numbers numerically, text by text, missing values last). */
  function sortableTables() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("th").forEach(function (th, col) {
        th.title = "click to sort";
        th.addEventListener("click", function () {
          var body = table.tBodies[0];
          var asc = !th.classList.contains("asc");
          table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
          th.classList.add(asc ? "asc" : "desc");
          var rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (a, b) {
            var x = sortValue(a.cells[col]), y = sortValue(b.cells[col]);
            if (x === "" || y === "") { return (x === "") - (y === ""); }
            var nx = parseFloat(x), ny = parseFloat(y);
            var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
            return asc ? c : -c;
          });
          rows.forEach(function (r) { body.appendChild(r); });
        });
      });
    });
  }

  function option(select, value, label) {
    var o = el("option", null, label);
    o.value = value;
    select.appendChild(o);
    return o;
  }

  return { data: data, el: el, thumb: thumb, refs: refs, x100: x100, ListView: ListView,
           matches: matches, sortableTables: sortableTables, option: option };
})();
