// CT page: slice browser with window presets, mask contours, CAM overlays, labels and predictions.
"use strict";
(async function () {
  const data = await loadKeyed("/api/ct", d => `patient ${d.patient_id}`);
  if (!data) return;
  const controls = document.getElementById("controls");
  const v = data.volume;
  document.getElementById("subtitle").textContent = v
    ? `${v.shape[0]} slices · ${v.shape[1]} × ${v.shape[2]} px · voxel ${v.spacing_mm.map(x => fmt(x, 2)).join(" × ")} mm`
    : `${data.slices.length} prepared slices (volume not at hand)`;
  const image = document.getElementById("ct-image");
  const layer = { cam: document.getElementById("layer-cam"), liver: document.getElementById("layer-liver"), lesion: document.getElementById("layer-lesion"), candidates: document.getElementById("layer-candidates") };
  const located = data.mode === "volume" ? data.candidates : [];
  const state = { pos: 0, window: data.default_window, liver: data.masks.liver, lesion: data.masks.lesion, cam: true, camOpacity: 0.45, camIndex: 0, candidates: located.length > 0 };
  const q = encodeURIComponent(data.key);
  const firstTumour = data.slices.findIndex(s => s.label === "tumour");
  state.pos = firstTumour >= 0 ? firstTumour : Math.floor(data.slices.length / 2);

  const slider = el("input", { type: "range", id: "slice", min: 0, max: data.slices.length - 1, value: state.pos,
    oninput: (e) => { state.pos = Number(e.target.value); show(); } });
  const sliceLabel = el("div", { id: "slice-label" });
  controls.append(el("h3", {}, "Slice"), slider, el("div", { class: "row" },
    el("button", { onclick: () => move(-1) }, "◀"), sliceLabel, el("button", { onclick: () => move(1) }, "▶")));
  const windowSelect = el("select", { id: "window", disabled: data.mode !== "volume",
    onchange: (e) => { state.window = e.target.value; show(); } },
    data.windows.map(w => el("option", { value: w.name, selected: w.name === state.window }, `${w.name} (W ${w.width_hu} / L ${w.level_hu} HU)`)));
  put(controls, el("h3", {}, "Window"), windowSelect,
    data.mode === "volume" ? null : el("div", { class: "muted" }, "The slices as prepared (window fixed); the volume is not at hand."));
  controls.append(el("h3", {}, "Overlays"));
  for (const [kind, label] of [["liver", "Liver outline"], ["lesion", "Lesion outline (ground truth)"]]) {
    controls.append(el("div", { class: "row" },
      el("input", { type: "checkbox", id: `toggle-${kind}`, checked: state[kind], disabled: !data.masks[kind],
        onchange: (e) => { state[kind] = e.target.checked; show(); } }),
      el("span", { class: "swatch", style: `background:${data.mask_colours[kind]}` }),
      el("label", { for: `toggle-${kind}` }, label + (data.masks[kind] ? "" : " (no mask)"))));
  }
  const camSelect = el("select", { id: "cam-method", onchange: (e) => { state.camIndex = Number(e.target.value); show(); } });
  const anyCam = data.slices.some(s => s.cams.length);
  if (!anyCam) controls.append(el("div", { class: "muted" }, "No CAM maps for this patient (oncoscope explain writes them)."));
  else controls.append(el("div", { class: "row" },
    el("input", { type: "checkbox", id: "toggle-cam", checked: state.cam, onchange: (e) => { state.cam = e.target.checked; show(); } }),
    el("label", { for: "toggle-cam" }, "CAM"), camSelect,
    el("input", { type: "range", id: "opacity-cam", min: 0, max: 100, value: 100 * state.camOpacity, title: "opacity",
      oninput: (e) => { state.camOpacity = e.target.value / 100; layer.cam.style.opacity = state.camOpacity; } })));
  if (anyCam) controls.append(el("div", { class: "colorbar", style: "background:linear-gradient(to right,#00007f,#0000ff,#007fff,#00ffff,#7fff7f,#ffff00,#ff7f00,#ff0000,#7f0000)" }),
    el("div", { class: "row muted" }, el("span", {}, "low"), el("span", { style: "flex:1;text-align:center" }, "CAM relevance"), el("span", {}, "high")));
  const details = el("div", { id: "slice-details" });
  controls.append(el("h3", {}, "This slice"), details);
  const tumourSlices = data.slices.map((s, i) => [s, i]).filter(([s]) => s.label === "tumour");
  if (tumourSlices.length) {
    controls.append(el("h3", {}, "Tumour slices"), el("div", {}, tumourSlices.map(([s, i]) =>
      el("a", { href: "#", style: "margin-right:6px", onclick: (e) => { e.preventDefault(); state.pos = i; show(); } }, s.index))));
  }
  for (const c of data.couinaud) controls.append(el("h3", {}, "Couinaud segments"), couinaudTable(c.data));
  for (const run of located) {  // oncoscope locate: candidates outlined, listed with size and segment
    controls.append(el("h3", {}, "Candidates (oncoscope locate)"), el("div", { class: "row" },
      el("input", { type: "checkbox", id: "toggle-candidates", checked: state.candidates,
        onchange: (e) => { state.candidates = e.target.checked; show(); } }),
      el("span", { class: "swatch", style: `background:${data.candidate_colour}` }),
      el("label", { for: "toggle-candidates" }, `outline (threshold ${fmt(run.threshold, 3)})`)));
    if (!run.rows.length) controls.append(el("div", { class: "muted" }, "No candidate."));
    else controls.append(el("table", { id: "candidate-table" },
      el("tr", {}, ["#", "slices", "diameter", "volume", "segment", "score"].map(h => el("th", {}, h))),
      run.rows.map(r => el("tr", {},
        el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); state.pos = Number(r.first_slice); show(); } }, r.candidate_id)),
        el("td", {}, `${r.first_slice}–${r.last_slice}`), el("td", {}, `${fmt(Number(r.diameter_mm), 1)} mm`),
        el("td", {}, `${fmt(Number(r.volume_ml), 2)} ml`), el("td", {}, r.segment + (run.approximate ? " (approx.)" : "")),
        el("td", {}, fmt(Number(r.score), 2))))));
    if (run.approximate) controls.append(el("div", { class: "muted" }, "Segments approximate: no landmarks or vessel labels."));
  }

  document.getElementById("stage").addEventListener("wheel", (e) => { e.preventDefault(); move(e.deltaY > 0 ? 1 : -1); }, { passive: false });
  document.addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowUp") move(1);
    if (e.key === "ArrowLeft" || e.key === "ArrowDown") move(-1);
  });
  if (v) {  // scale bar: the image is shown 512 px wide
    const mmPerPx = v.shape[2] * v.spacing_mm[2] / image.clientWidth;
    const mm = [100, 50, 20, 10, 5].find(x => x / mmPerPx <= 160) || 5;
    document.getElementById("stage").append(el("div", { class: "scalebar", id: "ct-scalebar", style: "left:8px;bottom:8px" },
      el("span", {}, `${mm} mm`), el("div", { class: "bar", style: `width:${mm / mmPerPx}px` })));
  }
  show();

  function move(step) { state.pos = Math.min(data.slices.length - 1, Math.max(0, state.pos + step)); show(); }
  function setLayer(img, url) { if (url) { img.src = url; img.hidden = false; } else { img.hidden = true; img.removeAttribute("src"); } }
  function show() {
    const s = data.slices[state.pos];
    slider.value = state.pos;
    image.src = data.mode === "volume" ? `/api/ct/slice.png?key=${q}&index=${s.index}&window=${encodeURIComponent(state.window)}` : s.png;
    image.dataset.index = s.index;
    for (const kind of ["liver", "lesion"]) {
      const has = data.masks.volume || (data.mode === "png");
      setLayer(layer[kind], state[kind] && has ? `/api/ct/mask.png?key=${q}&index=${s.index}&kind=${kind}` : null);
    }
    const run = located[0];
    setLayer(layer.candidates, state.candidates && run ? `/api/ct/candidates.png?key=${q}&index=${s.index}&folder=${encodeURIComponent(run.folder)}` : null);
    layer.liver.onerror = layer.lesion.onerror = layer.candidates.onerror = function () { this.hidden = true; };
    camSelect.textContent = "";
    s.cams.forEach((c, i) => camSelect.append(el("option", { value: i, selected: i === state.camIndex }, `${c.method ?? "CAM"} ${c.layer ?? ""} → ${c.target ?? ""}`)));
    const cam = s.cams[Math.min(state.camIndex, s.cams.length - 1)];
    setLayer(layer.cam, state.cam && cam ? (cam.cam || cam.overlay) : null);
    layer.cam.style.opacity = state.camOpacity;
    sliceLabel.textContent = `slice ${s.index} (${state.pos + 1} / ${data.slices.length})`;
    details.textContent = "";
    const rows = [
      ["Label", s.label ? el("span", { class: `tag ${s.label}` }, s.label) : el("span", { class: "muted" }, "not in the dataset")],
      ["Prediction", s.prediction ? el("span", {}, el("span", { class: `tag ${s.prediction.pred}` }, s.prediction.pred), ` p = ${fmt(s.prediction.prob, 3)}`) : el("span", { class: "muted" }, "–")],
      ["Largest lesion section", s.max_section_mm !== undefined && s.max_section_mm !== null ? `${fmt(s.max_section_mm, 1)} mm` : "–"],
      ["Lesions on slice", s.lesion_count ?? "–"], ["Split", s.split || "–"], ["CAM maps", s.cams.length],
    ];
    details.append(el("table", {}, rows.map(([k, val]) => el("tr", {}, el("th", {}, k), el("td", {}, val)))));
  }
})();
