"""Slide- and patient-level learning on tile feature bags: attention MIL (``oncoscope mil``)."""
