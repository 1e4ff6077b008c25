"""Liver region of interest by expectation-maximisation (a Gaussian mixture on HU), seed 001.

A Gaussian mixture is fitted by EM (scikit-learn) to the HU values inside the body. Each component
whose mean lies in the soft-tissue range is a candidate for liver; its pixels are opened (to cut
thin bridges to neighbouring organs and the abdominal wall), and its largest connected piece is
scored by area times the share of that piece lying on the patient's right, where the liver is.
The best piece is closed and its holes filled, so lesions and vessels inside the liver belong to
the ROI. Images are expected in the radiological layout that ``oncoscope.io.volumes`` produces
(patient's right on the image's left).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from skimage import measure, morphology
from sklearn.mixture import GaussianMixture

#: HU range in which a mixture component's mean may be liver (non-contrast to arterial phase).
LIVER_MEAN_RANGE_HU = (20.0, 190.0)


def liver_roi_em(
    hu: npt.NDArray[np.floating],
    pixel_mm: tuple[float, float] = (1.0, 1.0),
    *,
    n_components: int = 4,
    opening_mm: float = 7.0,
    max_samples: int = 20000,
    seed: int = 0,
) -> npt.NDArray[np.bool_]:
    """Segment the liver ROI of one transverse slice with a Gaussian mixture fitted by EM.

    Args:
        hu: ``(H, W)`` slice in HU, radiological layout.
        pixel_mm: ``(row, col)`` pixel size in mm; morphology radii are set in mm.
        n_components: mixture components (fat, soft tissue, liver, enhanced structures).
        opening_mm: radius in mm of the opening that separates touching organs.
        max_samples: at most this many body pixels are used to fit the mixture.
        seed: seed of the subsampling and of EM's initialisation.

    Returns:
        ``(H, W)`` boolean ROI; all False when no liver-like region is found.
    """
    image = np.asarray(hu, dtype=np.float32)
    body = _body_mask(image)
    empty = np.zeros(image.shape, dtype=bool)
    if body.sum() < n_components * 10:
        return empty
    values = np.clip(image[body], -200.0, 300.0)
    rng = np.random.default_rng(seed)
    sample = values if values.size <= max_samples else rng.choice(values, max_samples, False)
    mixture = GaussianMixture(n_components=n_components, random_state=seed, max_iter=200)
    mixture.fit(sample[:, None])
    component = np.full(image.shape, -1, dtype=np.int64)
    component[body] = mixture.predict(values[:, None])
    means = mixture.means_[:, 0]

    radius_px = max(1, round(opening_mm / min(pixel_mm)))
    disk = morphology.disk(radius_px)
    body_cols = np.nonzero(body.any(axis=0))[0]
    midline = (body_cols[0] + body_cols[-1]) / 2
    best, best_score = empty, 0.0
    for index in np.argsort(means):
        if not LIVER_MEAN_RANGE_HU[0] <= means[index] <= LIVER_MEAN_RANGE_HU[1]:
            continue
        opened = ndimage.binary_opening(component == index, structure=disk)
        piece = _largest_component(opened)
        area = float(piece.sum())
        if area == 0:
            continue
        right_share = float(piece[:, : int(midline)].sum()) / area
        score = area * right_share
        if score > best_score:
            best, best_score = piece, score
    if best_score == 0:
        return empty
    closed = ndimage.binary_closing(best, structure=disk, border_value=0)
    return np.asarray(ndimage.binary_fill_holes(closed | best) & body, dtype=bool)


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Dice overlap ``2|A∩B| / (|A|+|B|)`` of two masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def _body_mask(image: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """The patient's body: the largest region above -500 HU, holes filled."""
    body = _largest_component(image > -500.0)
    return np.asarray(ndimage.binary_fill_holes(body), dtype=bool)


def _largest_component(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    labels = measure.label(mask, connectivity=1)
    if labels.max() == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(sizes.argmax()), dtype=bool)
