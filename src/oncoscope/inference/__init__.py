"""Inference with trained models on whole slides.

Whole-slide patch classification into probability maps and regions, and the automatic search
for the magnification a classifier works best at (:mod:`oncoscope.inference.scale_search`, seed
003 Algorithm 1; curve arithmetic in :mod:`oncoscope.inference.scale_curves`, figures in
:mod:`oncoscope.inference.scale_figures`).
"""
