"""Warm start of a front end that replaces pretrained stages: first it learns to reproduce them.

Seed 000's SA-EfficientNet (:class:`oncoscope.models.sa_efficientnet.SAEfficientNet`) puts a
self-attention front end, from random weights, in place of an EfficientNet's stem and early
stages, while the stages after it keep their ImageNet weights. Trained end to end from there on
a few hundred CT slices, the front end did not learn, and the model classified near chance
(benchmarks/README.md, "The SA front end's stem and warm start"). Before training, therefore,
the front end alone is trained to reproduce what the pretrained stages it replaces produce on
the training images (feature distillation: mean squared error against each channel of their
output standardised over the training images; images only, no labels and no masks). Then its
batch normalisations' running statistics are recomputed over the training images with the
final weights, so that it evaluates as it trained; its output is put on the target's
per-channel mean and spread, so the stages after it receive what they were trained on; and
the classifier starts at zero, so the first steps of
training (a random two-class head on 1280 features gives logits of several units) do not undo
the warm start. The distillation is a plain loop (no library does it); the batch statistics are
recomputed by torch's ``update_bn``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the PyTorch convention
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset

from oncoscope.train.data import EpochSampler, mix_seed

log = logging.getLogger(__name__)

#: Mixed into the run's seed for the warm start's order, so it is not the training order.
_SEED_SALT = 0x5741


@dataclass(frozen=True)
class WarmStart:
    """What a warm start did, for the run's ``run.json``.

    Attributes:
        epochs: passes over the training images.
        relative_error: mean squared error of the standardised target over the last epoch
            (1.0: no better than each channel's mean; 0: a perfect copy).
        first_relative_error: the same over the first epoch.
        seconds: wall time.
    """

    epochs: int
    relative_error: float
    first_relative_error: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON."""
        return {
            "epochs": self.epochs,
            "relative_error": round(self.relative_error, 4),
            "first_relative_error": round(self.first_relative_error, 4),
            "seconds": round(self.seconds, 1),
        }


def replaced_stages(model: nn.Module) -> nn.Module | None:
    """The pretrained stages ``model``'s front end replaces, or None when there is nothing to
    warm-start from (a model without a replacing front end, or one whose front end came with
    its weights)."""
    stages = getattr(model, "replaced_stages", None)
    return stages if isinstance(stages, nn.Module) else None


def warm_start_front(
    model: nn.Module,
    images: Dataset[Any],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    lr: float = 1e-3,
    num_workers: int = 0,
) -> WarmStart:
    """Train ``model.front`` to reproduce :func:`replaced_stages` on ``images``, in place (module
    docstring), then set its output normalisation to the target's scale and zero the classifier.

    Args:
        model: a front-end model (``front``, ``replaced_stages``, ``get_classifier()``).
        images: the training images as the model is fed them; a dataset of ``(image, label)``
            whose items may be ``(index, epoch)`` (augmented reproducibly, as training's are).
            Labels are not read.
        epochs: passes over ``images`` (at least 1).
        batch_size, seed, num_workers: of the loader; ``lr``: Adam's learning rate.

    Raises:
        ValueError: a model with nothing to warm-start from, or ``epochs`` below 1.
    """
    teacher = replaced_stages(model)
    if teacher is None:
        raise ValueError("the model has no pretrained stages its front end replaces")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    started = time.perf_counter()
    front: Any = model.front
    device = next(front.parameters()).device
    teacher = teacher.to(device).eval()
    sampler = EpochSampler(len(images), mix_seed(seed, _SEED_SALT))  # type: ignore[arg-type]
    loader = DataLoader(images, batch_size=batch_size, sampler=sampler, num_workers=num_workers)

    def batches(epoch: int) -> Any:
        sampler.set_epoch(epoch)
        for x, _ in loader:
            yield x.to(device)

    with torch.no_grad():  # the target's per-channel mean and spread over the training images
        total: Any = 0.0
        squares: Any = 0.0
        count = 0
        for x in batches(0):
            target = teacher(x).double()
            total = total + target.sum(dim=(0, 2, 3))
            squares = squares + (target**2).sum(dim=(0, 2, 3))
            count += target.shape[0] * target.shape[2] * target.shape[3]
        mean = total / count
        spread = (squares / count - mean**2).clamp_min(0).sqrt() + 1e-3
    shape = (1, -1, 1, 1)
    mean_t, spread_t = mean.float().view(shape), spread.float().view(shape)
    optimiser = torch.optim.Adam(front.parameters(), lr=lr)
    errors: list[float] = []
    was_training = front.training
    front.train()
    for epoch in range(epochs):
        total_error, seen = 0.0, 0
        for x in batches(epoch):
            with torch.no_grad():
                target = (teacher(x) - mean_t) / spread_t
            loss = F.mse_loss(front(x), target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total_error += loss.item() * len(x)
            seen += len(x)
        errors.append(total_error / max(seen, 1))
        log.info("warm start epoch %d: relative error %.3f", epoch, errors[-1])
    # precise BN: every batch normalisation's running statistics set to their average over the
    # images with the final weights; the running averages trail the weights that changed under
    # them, and evaluation uses them (measured: relative error 0.65 in evaluation against 0.54
    # in training on the same slices)
    with torch.no_grad():
        update_bn(batches(epochs), front)
    front.train(was_training)
    _rescale_output(front, mean.float(), spread.float())
    classifier = model.get_classifier()  # type: ignore[operator]
    with torch.no_grad():
        for parameter in classifier.parameters():
            parameter.zero_()
    return WarmStart(epochs, errors[-1], errors[0], time.perf_counter() - started)


def _rescale_output(front: Any, mean: torch.Tensor, spread: torch.Tensor) -> None:
    """Fold ``spread * y + mean`` into the front end's last batch normalisation (its affine
    weight and bias), so its output is on the replaced stages' scale."""
    norm = front.project[-1]
    if not isinstance(norm, nn.BatchNorm2d) or not norm.affine:
        raise ValueError("the front end does not end in an affine batch normalisation")
    with torch.no_grad():
        norm.weight.mul_(spread)
        norm.bias.mul_(spread).add_(mean)
