// Index page: everything the served folder holds.
"use strict";
(async function () {
  const main = document.getElementById("index");
  let data;
  try { data = await getJSON("/api/index"); } catch (error) { showError(error); return; }
  main.textContent = "";
  document.getElementById("root").textContent = data.root;
  if (!data.openseadragon) {
    main.append(el("div", { class: "warning" },
      "OpenSeadragon is not installed, so slides cannot be shown. Install it with: ", el("code", {}, data.install_hint)));
  }
  const empty = !data.slides.length && !data.ct_patients.length && !data.reports.length &&
    !data.explains.length && !data.couinauds.length && !data.scales.length;
  if (empty) main.append(el("p", {}, "Nothing oncoscope wrote was found in this folder."));

  if (data.slides.length) {
    const cards = el("div", { class: "cards" });
    for (const s of data.slides) {
      const classes = Object.entries(s.classes || {}).map(([name, c]) =>
        el("div", {}, `${name}: ${fmt(c.area_mm2, 2)} mm² (${pct(c.fraction)})`));
      cards.append(el("div", { class: "card" },
        el("a", { href: `/slide?key=${encodeURIComponent(s.key)}` }, el("strong", {}, s.name)),
        el("div", { class: "muted" }, s.inference ? "with inference" : s.attention ? "" : "slide only",
          s.attention ? `${s.inference ? " · " : ""}MIL attention${s.attention > 1 ? ` ×${s.attention}` : ""}` : "",
          s.slide_found ? "" : " · slide file not found"),
        s.thumbnail ? el("img", { src: s.thumbnail, alt: `thumbnail of ${s.name}`, style: "width:100%;image-rendering:auto" }) : null,
        classes));
    }
    main.append(el("section", {}, el("h2", {}, "Slides"), cards));
  }
  if (data.ct_patients.length) {
    const table = el("table", {}, el("tr", {}, ["Patient", "Slices", "Tumour slices", "Volume", "Manifest"].map(h => el("th", {}, h))));
    for (const p of data.ct_patients) {
      table.append(el("tr", {},
        el("td", {}, el("a", { href: `/ct?key=${encodeURIComponent(p.key)}` }, `patient ${p.patient_id}`)),
        el("td", { class: "num" }, p.slices), el("td", { class: "num" }, p.tumour_slices),
        el("td", {}, p.volume_found ? "all slices" : "prepared slices only"), el("td", { class: "muted" }, p.manifest)));
    }
    main.append(el("section", {}, el("h2", {}, "CT patients"), table));
  }
  if (data.reports.length) {
    const list = el("div", {});
    for (const r of data.reports) {
      list.append(el("div", {}, el("a", { href: r.url, target: "_blank" }, r.path)),
        el("div", { class: "cards" }, r.figures.map(f => el("a", { href: f, target: "_blank" },
          el("img", { src: f, style: "height:140px;background:#fff", alt: f })))));
    }
    main.append(el("section", {}, el("h2", {}, "Evaluation reports"), list));
  }
  if (data.explains.length) {
    const list = el("div", {});
    for (const x of data.explains) {
      list.append(el("h3", {}, `${x.path} (${x.rows} maps)`), el("div", { class: "cards" },
        x.examples.map(r => el("div", { class: "card" },
          r.overlay ? el("img", { src: r.overlay, alt: "CAM overlay" }) : null,
          el("div", {}, `${r.method ?? ""} ${r.layer ?? ""}`),
          el("div", { class: "truth" }, `true ${r.label ?? "unknown"} · predicted ${r.pred ?? "–"}`),
          el("div", { class: "muted" }, `map for ${r.target ?? "–"} (${fmt(r.prob, 2)})`),
          el("div", { class: "muted", style: "font-size:11px;word-break:break-all" }, r.image)))));
    }
    main.append(el("section", {}, el("h2", {}, "Explanations (CAM)"), list));
  }
  if (data.couinauds.length) {
    const list = el("div", {});
    for (const c of data.couinauds) put(list, el("h3", {}, c.path), couinaudTable(c.data), c.png ? el("img", { src: c.png, style: "max-width:600px" }) : null);
    main.append(el("section", {}, el("h2", {}, "Couinaud segments"), list));
  }
  if (data.scales.length) {
    const list = el("div", {});
    for (const s of data.scales) {
      const box = el("div", { class: "card", style: "width:auto" }, el("div", {}, s.path));
      if (s.data) histogram(box, s.data.histogram, s.data.winner);
      list.append(box);
    }
    main.append(el("section", {}, el("h2", {}, "Scale search"), list));
  }
  if (data.problems.length) {
    main.append(el("section", {}, el("h2", {}, "Files that could not be read"),
      data.problems.map(p => el("div", { class: "muted" }, `${p.path}: ${p.problem}`))));
  }
})();

