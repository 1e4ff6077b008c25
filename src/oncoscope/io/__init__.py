"""Readers and writers at the edges: volumes (NIfTI, DICOM) and atomic output."""
