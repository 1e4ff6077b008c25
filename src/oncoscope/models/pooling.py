"""Global pooling of per-position scores: the heads that keep location (simple_cnn, stage_cam).

A class-score map ``(B, K, N)`` (``N`` positions) becomes ``(B, K)`` logits by ``max``, ``avg``
(mean), or ``lse``, log-sum-exp ``(1/r) log mean_n exp(r s_n)`` (Pinheiro & Collobert, CVPR
2015), which lies between the mean (``r -> 0``) and the maximum (``r -> inf``): the image's
score comes mostly from its highest-scoring positions, so training pushes the evidence into a
few positions (where the lesion is) rather than spreading it over the whole organ.
"""

from __future__ import annotations

from typing import Literal

import torch

#: The pooling names :func:`pool_positions` takes.
GlobalPool = Literal["max", "avg", "lse"]
#: Sharpness of log-sum-exp pooling: ``(1/r) log mean exp(r s)``, near ``max`` for large ``r``.
LSE_SHARPNESS = 5.0


def pool_positions(
    values: torch.Tensor, how: str, sharpness: float = LSE_SHARPNESS
) -> torch.Tensor:
    """``(B, K, N)`` scores -> ``(B, K)``: max, mean or log-sum-exp over the last axis.

    Args:
        values: scores per class and position.
        how: ``"max"``, ``"avg"`` or ``"lse"``.
        sharpness: ``r`` of log-sum-exp.

    Raises:
        ValueError: another ``how``.
    """
    if how == "max":
        return values.amax(dim=-1)
    if how == "avg":
        return values.mean(dim=-1)
    if how != "lse":
        raise ValueError(f"pooling must be 'max', 'avg' or 'lse', got {how!r}")
    count = torch.log(torch.tensor(float(values.shape[-1]), device=values.device))
    return (torch.logsumexp(sharpness * values, dim=-1) - count) / sharpness
