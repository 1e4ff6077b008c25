"""Tile features of whole slides, one feature bag per slide (``oncoscope features``)."""
