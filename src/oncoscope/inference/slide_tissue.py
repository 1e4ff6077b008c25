"""The tissue mask of a whole slide, as slide inference and the scale search make it.

One step shared by :func:`oncoscope.inference.slide_inference.plan_tiles` (where tiles go) and
:func:`oncoscope.inference.scale_search.search_scale` (where points are drawn), so both see the
same tissue: :func:`oncoscope.pathology.tissue.tissue_mask` on one small pyramid level read as
it is (:meth:`oncoscope.io.slides.Slide.overview`; a resampled thumbnail only when the slide
has no level that small). Reading a small level whole costs milliseconds where resampling a
large one costs about a second.
"""

from __future__ import annotations

from oncoscope.errors import NoTissueError
from oncoscope.io.slides import Slide
from oncoscope.pathology.tissue import TissueMask, tissue_mask

#: Most pixels (longer side) of the slide image the tissue mask is made on: bounds the
#: mask's memory (~20 bytes per pixel while it is made) whatever the slide's size.
MASK_MAX_PX = 1024
#: Coarsest pixels (um) of that image: 1.25x, as tissue detection usually runs at.
MASK_MPP = 8.0


def slide_tissue(slide: Slide, mpp: float = MASK_MPP) -> TissueMask:
    """Tissue mask of a whole slide, made on a pyramid level of at most ``mpp`` um per pixel.

    The level is the coarsest one whose pixels are at most ``mpp`` microns among those whose
    longer side is at most :data:`MASK_MAX_PX` pixels (else the finest of those; see
    :meth:`oncoscope.io.slides.Slide.overview`).

    Args:
        slide: the open slide.
        mpp: coarsest microns per mask pixel wanted (default :data:`MASK_MPP`).

    Returns:
        The :class:`~oncoscope.pathology.tissue.TissueMask` (its ``downsample`` is level-0
        pixels per mask pixel).

    Raises:
        NoTissueError: the mask is empty (a blank slide).
    """
    image, downsample = slide.overview(MASK_MAX_PX, mpp=mpp)
    tissue = tissue_mask(image, downsample, mpp=slide.mpp)
    if not tissue.mask.any():
        raise NoTissueError("no tissue found (blank slide?)", slide.path)
    return tissue
