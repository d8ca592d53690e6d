// The embedding explorer (siamese/diagnostics/explorer.py writes PAGE_DATA): one plotly scatter, recoloured
// on demand, with a hover card and a click panel drawn by hand, since plotly's own labels cannot hold images.
(function () {
  "use strict";
  const D = window.PAGE_DATA;
  const R = D.records;
  const N = D.drawn;
  const G = D.group_noun; // what an image's group is: a lesion (HAM10000) or a patient (ISIC 2020)
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#c7c7c7", "#dbdb8d", "#9edae5"];
  const plot = document.getElementById("plot");
  const hover = document.getElementById("hover");
  const panel = document.getElementById("panel");
  const legend = document.getElementById("legend");
  const points = Array.from({ length: N }, (_, i) => i);
  const argmax = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);
  const pred = D.proba ? D.proba.map((p) => D.classes[argmax(p)]) : null;
  const confidence = D.proba ? D.proba.map((p) => Math.max(...p)) : null;
  const drawnOfGroup = {};
  points.forEach((i) => { (drawnOfGroup[R.group[i]] = drawnOfGroup[R.group[i]] || []).push(i); });
  const drawnOfId = new Map(points.map((i) => [R.id[i], i]));
  // WebGL draws thousands of points at once; where a browser has none, plotly's SVG scatter draws them
  const GL = !!document.createElement("canvas").getContext("webgl");
  let thumbs = null; // the thumbnails' data URIs, parsed at the first hover: the first drawing needs none
  const thumb = (r) => (thumbs = thumbs || JSON.parse(document.getElementById("page-thumbs").textContent))[r];
  let projection = Object.keys(D.projections)[0];
  let selected = null;
  let focus = null; // a category of the legend shown alone, the others faded

  const colourings = {
    class: { kind: "category", values: points.map((i) => R.label[i]), order: D.classes },
    split: { kind: "category", values: points.map((i) => R.split[i]), order: ["train", "val", "test"] },
  };
  if (pred) {
    colourings["correct or wrong"] = {
      kind: "category", values: points.map((i) => (pred[i] === R.label[i] ? "correct" : "wrong")),
      order: ["correct", "wrong"], colours: { correct: "#a6bddb", wrong: "#d62728" },
    };
    // the errors alone, each in its true class's colour: one legend click shows, say, every missed melanoma
    colourings["errors by true class"] = {
      kind: "category", values: points.map((i) => (pred[i] === R.label[i] ? "correct" : R.label[i])),
      order: [...D.classes, "correct"], colours: { correct: "#d9d9d9" },
    };
    colourings.prediction = { kind: "category", values: pred, order: D.classes };
    colourings["probability of the prediction"] = { kind: "number", values: confidence };
    D.classes.forEach((c, j) => { colourings["P(" + c + ")"] = { kind: "number", values: D.proba.map((p) => p[j]) }; });
  }
  Object.entries(D.metadata).forEach(([name, column]) => { colourings[name in colourings ? "metadata " + name : name] = column; });

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([k, v]) => node.setAttribute(k, v));
    children.forEach((c) => node.append(c));
    return node;
  }
  const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(3));
  function describe(i) { // one line about a drawn image's class and prediction
    let text = "label " + R.label[i] + " \u00b7 " + R.split[i];
    if (pred && i < N) text += " \u00b7 predicted " + pred[i] + " (p " + fmt(confidence[i]) + ")";
    return text;
  }

  function categoryColours(colouring) {
    const seen = [...new Set(colouring.values)];
    const order = (colouring.order || []).filter((v) => seen.includes(v)).concat(seen.filter((v) => !(colouring.order || []).includes(v)).sort());
    const colour = {};
    order.forEach((v, k) => { colour[v] = (colouring.colours && colouring.colours[v]) || PALETTE[k % PALETTE.length]; });
    return { order, colour };
  }

  function markerFor(name) {
    const colouring = colourings[name];
    legend.replaceChildren();
    if (colouring.kind === "number") {
      legend.append(element("p", { class: "hint" }, name + ": dark is low, yellow is high; grey: unknown"));
      const known = colouring.values.map((v) => (v === null ? NaN : v));
      return { color: known, colorscale: "Viridis", showscale: true, colorbar: { title: { text: name }, thickness: 12 },
        size: 7, opacity: 0.85, line: { width: 0 } };
    }
    const { order, colour } = categoryColours(colouring);
    const counts = {};
    colouring.values.forEach((v) => { counts[v] = (counts[v] || 0) + 1; });
    order.forEach((v) => {
      const item = element("div", { class: "legend-item" + (focus === v ? " focus" : "") },
        element("span", { class: "swatch", style: "background:" + colour[v] }), v + " (" + counts[v] + ")");
      item.addEventListener("click", () => { focus = focus === v ? null : v; recolour(); });
      legend.append(item);
    });
    legend.append(element("p", { class: "hint" }, "click a value to show it alone"));
    return { color: colouring.values.map((v) => colour[v]), size: 7, line: { width: 0 },
      opacity: colouring.values.map((v) => (focus === null || focus === v ? 0.85 : 0.08)) };
  }

  const colourSelect = document.getElementById("colour");
  Object.keys(colourings).forEach((name) => colourSelect.append(element("option", { value: name }, name)));
  const projectionSelect = document.getElementById("projection");
  Object.keys(D.projections).forEach((name) => projectionSelect.append(element("option", { value: name }, name)));
  const find = document.getElementById("find");
  find.addEventListener("focus", () => { // thousands of options: built when first wanted, not before drawing
    const ids = document.getElementById("ids");
    if (!ids.childElementCount) ids.append(...points.map((i) => element("option", { value: R.id[i] })));
  });

  document.getElementById("title").textContent = D.title;
  let note = D.drawn < D.total
    ? D.drawn + " of " + D.total + " images: a stratified sample (every class keeps its share)"
    : "all " + D.total + " images";
  note += pred ? "; predictions of the stage-2 classifier" : "; no classifier in the run, so no predictions";
  document.getElementById("note").textContent = note + "; neighbours and distances are in the embedding space";

  const xy = () => D.projections[projection];
  function overlays() { // the selected image, its drawn neighbours, group siblings and duplicate partners
    const groups = { selected: [], neighbour: [], sibling: [], partner: [] };
    if (selected !== null) {
      groups.selected.push(selected);
      D.neighbours[selected].filter((r) => r < N).forEach((r) => groups.neighbour.push(r));
      (drawnOfGroup[R.group[selected]] || []).filter((r) => r !== selected).forEach((r) => groups.sibling.push(r));
      D.partners[selected].filter((r) => r < N).forEach((r) => groups.partner.push(r));
    }
    const style = { selected: ["circle-open", 18, "#000"], neighbour: ["diamond-open", 13, "#000"],
      sibling: ["square-open", 14, "#1a9850"], partner: ["x-thin-open", 14, "#762a83"] };
    const lines = { x: [], y: [] };
    groups.neighbour.forEach((r) => {
      lines.x.push(xy().x[selected], xy().x[r], null);
      lines.y.push(xy().y[selected], xy().y[r], null);
    });
    const traces = [{ ...lines, mode: "lines", line: { color: "rgba(0,0,0,0.45)", width: 1 }, hoverinfo: "skip",
      showlegend: false }];
    Object.entries(groups).forEach(([kind, rows]) => traces.push({
      uid: kind, // the SVG group of the trace is class "trace" + uid: scripts find the marked points by it
      x: rows.map((r) => xy().x[r]), y: rows.map((r) => xy().y[r]), mode: "markers", hoverinfo: "skip",
      showlegend: false, marker: { symbol: style[kind][0], size: style[kind][1], color: style[kind][2],
        line: { width: 2, color: style[kind][2] } },
    }));
    return traces;
  }

  function draw() {
    const main = { x: xy().x, y: xy().y, mode: "markers", type: GL ? "scattergl" : "scatter", hoverinfo: "none",
      marker: markerFor(colourSelect.value), showlegend: false };
    const layout = { margin: { l: 10, r: 10, t: 10, b: 10 }, xaxis: { visible: false }, yaxis: { visible: false },
      hovermode: "closest", dragmode: "pan", uirevision: projection };
    return Plotly.react(plot, [main, ...overlays()], layout, { displaylogo: false, responsive: true, scrollZoom: true });
  }
  const recolour = () => draw();

  function showHover(i, event) {
    hover.replaceChildren(element("img", { src: thumb(i), alt: R.id[i] }),
      element("div", { class: "id" }, R.id[i]), element("div", {}, describe(i)));
    const box = plot.getBoundingClientRect();
    const x = event && event.clientX !== undefined ? event.clientX : box.left + box.width / 2;
    const y = event && event.clientY !== undefined ? event.clientY : box.top + box.height / 2;
    hover.style.left = Math.min(x + 14, window.innerWidth - 230) + "px";
    hover.style.top = Math.min(y + 14, window.innerHeight - 150) + "px";
    hover.style.display = "block";
  }

  function card(r, extra) {
    const node = element("div", { class: "card" + (r < N ? " drawn" : "") },
      element("img", { src: thumb(r), alt: R.id[r] }), element("div", { class: "id" }, R.id[r]),
      element("div", {}, R.label[r] + " \u00b7 " + R.split[r]));
    if (extra) node.append(element("div", { class: "flag" }, extra));
    if (r < N) node.addEventListener("click", () => select(r));
    else node.title = "not drawn (outside the sample or the split shown)";
    return node;
  }

  function select(i) {
    selected = i;
    const group = R.group[i];
    const siblings = (drawnOfGroup[group] || []).filter((r) => r !== i);
    const size = D.group_sizes[group] || 1;
    const partners = new Set(D.partners[i]);
    const title = element("div", { class: "chosen" }, element("img", { src: thumb(i), alt: R.id[i] }),
      element("div", {}, element("div", { class: "id" }, R.id[i]), element("div", {}, describe(i)),
      element("div", {}, group !== R.id[i] ? G + " " + group + " (" + size + " image" + (size > 1 ? "s" : "") + ")" : "")));
    const near = element("div", { class: "cards" });
    D.neighbours[i].forEach((r, k) => {
      const flags = ["d " + fmt(D.distances[i][k])];
      if (R.group[r] === group) flags.push("same " + G);
      if (partners.has(r)) flags.push("duplicate pair");
      near.append(card(r, flags.join(" \u00b7 ")));
    });
    const parts = [title, element("h3", {}, D.k + " nearest training images (diamonds)"), near];
    if (size > 1) {
      parts.push(element("h3", {}, "other images of " + G + " " + group + " (squares): " + siblings.length + " of " + (size - 1) + " drawn"));
      const cards = element("div", { class: "cards" });
      siblings.forEach((r) => cards.append(card(r)));
      parts.push(cards);
    }
    if (D.partners[i].length) {
      parts.push(element("h3", {}, "near-duplicate partners (crosses)"));
      const cards = element("div", { class: "cards" });
      D.partners[i].forEach((r) => cards.append(card(r, R.group[r] === group ? "same " + G : "another " + G)));
      parts.push(cards);
    }
    panel.replaceChildren(...parts);
    draw();
  }

  colourSelect.addEventListener("change", () => { focus = null; recolour(); });
  projectionSelect.addEventListener("change", () => { projection = projectionSelect.value; draw(); });
  find.addEventListener("change", (e) => {
    const i = drawnOfId.get(e.target.value.trim());
    if (i !== undefined) select(i);
  });

  draw().then(() => {
    plot.on("plotly_hover", (ev) => {
      const pt = ev.points.find((p) => p.curveNumber === 0);
      if (pt) showHover(pt.pointIndex, ev.event);
    });
    plot.on("plotly_unhover", () => { hover.style.display = "none"; });
    plot.on("plotly_click", (ev) => {
      const pt = ev.points.find((p) => p.curveNumber === 0);
      if (pt) select(pt.pointIndex);
    });
    performance.mark("page:drawn");
    document.body.dataset.ready = "true"; // for scripts (and tests) that wait for the first drawing
  });
})();
