"use strict";
/* The evaluation report: every image with its generated caption, references and own CIDEr-D, sorted
   worst-first (where a model's mistakes are), best-first or in data set order, filtered by words. */
(function () {
  var D = Zoo.data();
  var images = D.images;
  images.forEach(function (im, i) {
    im.order = i;
    im.haystack = (im.caption + "\n" + im.refs.join("\n") + "\n" + im.id).toLowerCase();
  });
  var order = document.getElementById("order");
  var filter = document.getElementById("filter");
  var count = document.getElementById("count");

  function scoreOf(im) { return im.score === null ? -Infinity : im.score; }

  function renderRow(im) {
    var row = Zoo.el("div", "row");
    row.dataset.id = im.id;
    row.appendChild(Zoo.thumb(im.thumb, "image " + im.id));
    var score = Zoo.el("div", "score", Zoo.x100(im.score));
    score.appendChild(Zoo.el("small", null, "CIDEr-D"));
    row.appendChild(score);
    var text = Zoo.el("div");
    text.appendChild(Zoo.el("div", "caption", im.caption));
    text.appendChild(Zoo.refs(im.refs));
    text.appendChild(Zoo.el("div", "id", "image " + im.id));
    if (im.attention && im.attention.length) {
      var strip = Zoo.el("div", "strip");
      im.attention.forEach(function (a) {
        var panel = Zoo.el("figure", "att");
        var img = Zoo.el("img");
        img.loading = "lazy";
        img.alt = "attention for " + a.word;
        img.src = a.uri;
        panel.appendChild(img);
        panel.appendChild(Zoo.el("figcaption", null, a.word));
        strip.appendChild(panel);
      });
      text.appendChild(strip);
    }
    row.appendChild(text);
    return row;
  }

  var view = new Zoo.ListView(document.getElementById("rows"), renderRow);

  function update() {
    var q = filter.value;
    var shown = q ? images.filter(function (im) { return Zoo.matches(im.haystack, q); }) : images.slice();
    var how = order.value;
    shown.sort(function (a, b) {
      if (how === "worst") { return scoreOf(a) - scoreOf(b) || a.order - b.order; }
      if (how === "best") { return scoreOf(b) - scoreOf(a) || a.order - b.order; }
      return a.order - b.order;
    });
    count.textContent = shown.length + " of " + images.length + " images";
    view.show(shown, "no image matches the filter");
  }

  order.addEventListener("change", update);
  filter.addEventListener("input", update);
  Zoo.sortableTables();
  update();
})();
