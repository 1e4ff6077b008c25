// Slide page: deep zoom of the slide, heatmap, segmentation and MIL attention overlays, legend,
// scale bar, probe.
"use strict";
(async function () {
  const data = await loadKeyed("/api/slide", d => d.name);
  if (!data) return;
  const side = document.getElementById("side");
  const info = data.info;
  if (info) document.getElementById("subtitle").textContent =
    `${info.vendor} · ${info.dimensions[0]} × ${info.dimensions[1]} px · ${fmt(info.mpp, 4)} µm/px · ×${trim(info.magnification)}`;
  const dzi = "/dz/" + data.key.split("/").map(encodeURIComponent).join("/") + ".dzi";
  const state = {
    heatmapClass: (data.classes.find(c => /tum/i.test(c.name)) || data.classes[0] || {}).name,
    visible: Object.fromEntries(data.classes.map(c => [c.name, true])),
    heatmap: { on: true, opacity: 0.5 }, segmentation: { on: false, opacity: 0.5 },
  };
  const attention = data.attention || [];
  attention.forEach((a, i) => { state[`attention-${i}`] = { on: i === 0, opacity: 0.5 }; });
  const layers = {};  // name -> {item, on, opacity}
  let viewer = null;
  if (typeof OpenSeadragon === "undefined") {
    side.append(el("div", { class: "warning" }, "OpenSeadragon is not installed; install it with ",
      el("code", {}, "npm ci --prefix src/oncoscope/viewer/web"), " and reload."));
  } else if (!data.slide_found) {
    side.append(el("div", { class: "warning" }, data.slide_error || `The slide file is not at hand: ${data.slide_file}`));
    const still = data.images["heatmap.png"] || (attention.length && attention[0].files["attention.png"]);
    if (still) document.getElementById("osd").append(el("img", { src: still, style: "max-width:100%" }));
  } else {
    viewer = OpenSeadragon({
      id: "osd", prefixUrl: "/osd/images/", tileSources: dzi, drawer: "canvas",
      showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 4,
      gestureSettingsMouse: { clickToZoom: false }, imageSmoothingEnabled: false,
    });
    window.oncoscopeViewer = viewer;
    viewer.addHandler("open", () => { addOverlays(); updateScalebar(); });
    viewer.addHandler("animation", updateScalebar);
    viewer.addHandler("resize", updateScalebar);
    probeOnPointer();
  }
  buildSide();

  function overlayUrl(kind) {
    const base = `/api/slide/overlay.png?key=${encodeURIComponent(data.key)}&kind=${kind}`;
    if (kind === "heatmap") return `${base}&cls=${encodeURIComponent(state.heatmapClass)}`;
    return `${base}&classes=${encodeURIComponent(data.classes.filter(c => state.visible[c.name]).map(c => c.name).join(","))}`;
  }

  function addOverlays() {
    if (!info) return;
    if (data.probabilities && data.grid) for (const kind of ["heatmap", "segmentation"]) setLayer(kind);
    attention.forEach((a, i) => { if (a.grid) setLayer(`attention-${i}`); });
  }
  function layerSource(kind) {  // [PNG url, level-0 extent]
    if (!kind.startsWith("attention-")) return [overlayUrl(kind), data.grid];
    const index = Number(kind.slice("attention-".length));
    return [`/api/slide/attention.png?key=${encodeURIComponent(data.key)}&index=${index}`, attention[index].grid];
  }
  function setLayer(kind) {
    const W = info.dimensions[0], [url, g] = layerSource(kind), old = layers[kind];
    const options = {
      tileSource: { type: "image", url }, x: g.x / W, y: g.y / W, width: g.width / W,
      opacity: state[kind].on ? state[kind].opacity : 0,
      success: (event) => { layers[kind] = event.item; },
    };
    if (old) { options.index = viewer.world.getIndexOfItem(old); options.replace = true; }
    viewer.addTiledImage(options);
  }
  function setOpacity(kind) {
    if (layers[kind]) layers[kind].setOpacity(state[kind].on ? state[kind].opacity : 0);
  }

  function toggleRow(kind, label) {  // an overlay's on/off box and opacity slider
    return el("div", { class: "row" },
      el("input", { type: "checkbox", id: `toggle-${kind}`, checked: state[kind].on,
        onchange: (e) => { state[kind].on = e.target.checked; setOpacity(kind); } }),
      el("label", { for: `toggle-${kind}` }, label),
      el("input", { type: "range", id: `opacity-${kind}`, min: 0, max: 100, value: 100 * state[kind].opacity,
        title: "opacity", oninput: (e) => { state[kind].opacity = e.target.value / 100; setOpacity(kind); } }));
  }
  function colorbar(caption) {
    return [el("div", { class: "muted" }, caption),
      el("div", { class: "colorbar", style: `background:linear-gradient(to right, ${data.colormap.join(",")})` }),
      el("div", { class: "row muted" }, el("span", {}, "0"), el("span", { style: "flex:1;text-align:center" }, "0.5"), el("span", {}, "1"))];
  }

  function buildSide() {
    if (data.classes.length && data.probabilities) {
      side.append(el("h3", {}, "Overlays"));
      side.append(toggleRow("heatmap", "Probability heatmap"), toggleRow("segmentation", "Segmentation (most probable class)"));
      const select = el("select", { id: "heatmap-class", onchange: (e) => { state.heatmapClass = e.target.value; if (viewer) setLayer("heatmap"); } },
        data.classes.map(c => el("option", { value: c.name, selected: c.name === state.heatmapClass }, c.name)));
      side.append(el("div", { class: "row" }, el("label", { for: "heatmap-class" }, "Heatmap of class"), select));
      side.append(el("h3", {}, "Legend"));
      side.append(...colorbar("Heatmap: probability of the chosen class"));
      const legend = el("table", { id: "legend" }, el("tr", {}, el("th", {}, "Show"), el("th", {}, "Class"), el("th", { class: "num" }, "Area (mm²)"), el("th", { class: "num" }, "Share")));
      for (const c of data.classes) {
        legend.append(el("tr", {},
          el("td", {}, el("input", { type: "checkbox", class: "class-toggle", "data-class": c.name, checked: true,
            onchange: (e) => { state.visible[c.name] = e.target.checked; if (viewer) setLayer("segmentation"); } })),
          el("td", {}, el("span", { class: "swatch", style: `background:${c.colour}` }), c.name),
          el("td", { class: "num" }, fmt(c.area_mm2, 3)), el("td", { class: "num" }, pct(c.fraction))));
      }
      side.append(legend);
    } else if (data.summary) {
      side.append(el("div", { class: "warning" }, "No probabilities.npy beside summary.json: overlays unavailable."));
    }
    if (attention.length) {
      side.append(el("h3", {}, "MIL attention"));
      attention.forEach((a, i) => {
        side.append(toggleRow(`attention-${i}`, `Attention (${a.run})`),
          el("div", { class: "attention-files" }, Object.entries(a.files).map(([name, url]) => el("a", { href: url, target: "_blank", style: "margin-right:8px" }, name))));
      });
      side.append(...colorbar("Attention: the tile's percentile within the slide"));
    }
    if (info) {
      side.append(el("h3", {}, "Slide"));
      const [w, h] = info.dimensions;
      const rows = [
        ["File", data.slide_file], ["Vendor", info.vendor],
        ["Dimensions", `${w} × ${h} px (${fmt(w * info.mpp / 1000, 2)} × ${fmt(h * info.mpp / 1000, 2)} mm)`],
        ["Resolution", `${fmt(info.mpp, 4)} µm/px (${info.mpp_source})`], ["Magnification", `×${trim(info.magnification)}`],
        ["Pyramid levels", info.levels.length],
      ];
      side.append(el("table", { id: "slide-info" }, rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", { style: "word-break:break-all" }, v)))));
    }
    if (data.summary) {
      const s = data.summary;
      side.append(el("h3", {}, "Inference"));
      const rows = [["Tiles", s.tiles], ["Time", s.seconds !== undefined ? `${fmt(s.seconds, 1)} s (${fmt(s.tiles_per_second, 1)} tiles/s)` : null],
        ["Read at", s.magnification !== undefined ? `×${trim(s.magnification)} · ${trim(s.mpp)} µm/px` : null],
        ["Tile / stride", s.tile_size_px !== undefined ? `${s.tile_size_px} px / ${s.stride}` : null], ["Precision", s.precision]];
      side.append(el("table", {}, rows.filter(r => r[1] !== null && r[1] !== undefined).map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v)))));
      side.append(el("div", {}, Object.entries(data.images).map(([name, url]) => el("a", { href: url, target: "_blank", style: "margin-right:8px" }, name))));
    }
    if (data.scale) {
      side.append(el("h3", {}, "Scale search"));
      const box = el("div", { id: "scale-hist" }); histogram(box, data.scale.histogram, data.scale.winner); side.append(box);
    }
  }

  function updateScalebar() {
    const item = viewer && viewer.world.getItemAt(0);
    if (!item || !info) return;
    const screenPerImage = item.viewportToImageZoom(viewer.viewport.getZoom(true));
    const umPerScreenPx = info.mpp / screenPerImage;
    const want = umPerScreenPx * 160;
    const power = Math.pow(10, Math.floor(Math.log10(want)));
    const nice = [5, 2, 1].map(m => m * power).find(v => v <= want) || power;
    document.getElementById("scalebar-bar").style.width = `${nice / umPerScreenPx}px`;
    document.getElementById("scalebar-label").textContent = nice >= 1000 ? `${nice / 1000} mm` : `${nice} µm`;
  }

  function probeOnPointer() {
    const box = document.getElementById("probe");
    let busy = false, next = null;
    async function ask(point) {
      if (busy) { next = point; return; }
      busy = true;
      try {
        const r = await getJSON(`/api/slide/probe?key=${encodeURIComponent(data.key)}&x=${point.x.toFixed(1)}&y=${point.y.toFixed(1)}`);
        box.hidden = false; box.textContent = "";
        box.append(el("div", { class: "muted" }, `x ${Math.round(r.x)}, y ${Math.round(r.y)} px · ${fmt(r.x * info.mpp / 1000, 2)}, ${fmt(r.y * info.mpp / 1000, 2)} mm`));
        if (!r.probabilities) box.append(el("div", { class: "muted" }, "not analysed here"));
        else for (const c of data.classes) box.append(el("div", { class: "row" },
          el("span", { class: "swatch", style: `background:${c.colour}` }), el("span", { style: "flex:1" }, c.name), el("span", {}, pct(r.probabilities[c.name]))));
      } catch (error) { box.hidden = true; }
      busy = false;
      if (next) { const p = next; next = null; ask(p); }
    }
    new OpenSeadragon.MouseTracker({
      element: viewer.element,
      moveHandler: (event) => {
        const item = viewer.world.getItemAt(0);
        if (!item || !data.probabilities) return;
        ask(item.viewerElementToImageCoordinates(event.position));
      },
    });
  }
})();
