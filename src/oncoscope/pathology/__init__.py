"""H&E whole-slide images: tissue masks, tiling, annotations, stain, synthetic slides, tiles."""
