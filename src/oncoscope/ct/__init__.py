"""CT: windowing, denoising, liver ROI, lesion measurement, slice labels, phantoms, datasets."""
