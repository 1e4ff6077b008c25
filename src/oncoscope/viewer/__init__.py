"""``oncoscope view``: a local web viewer over an output folder of oncoscope.

Slides with their probability heatmap and segmentation (deep zoom through OpenSlide's
DeepZoomGenerator and OpenSeadragon), CT slices with window presets, masks, CAM maps and the
Couinaud table, and the evaluation reports. Modules: :mod:`.scan` (what a folder holds),
:mod:`.safe_path` (only files inside it are served), :mod:`.tiles` (deep zoom),
:mod:`.overlays` (maps as PNG), :mod:`.ct_slices` (CT slices), :mod:`.app` (routes).
"""
