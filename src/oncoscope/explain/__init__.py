"""Explanations of a trained classifier and weak lesion localisation from them.

:mod:`.layers` picks the layer a CAM reads, :mod:`.cam` computes the maps of a batch,
:mod:`.run` explains image files and writes overlays, raw maps and ``explain.csv``,
:mod:`.localize` turns a map into a lesion mask and boxes, :mod:`.localization_metrics` scores
that against ground-truth masks and :mod:`.localization_report` runs the whole localisation
evaluation of a manifest and writes its figures, tables and ``localization.json``.
"""
