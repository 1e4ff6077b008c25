"""The front-end warm start: the SA front end learns to reproduce the stages it replaces."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from skimage.data import camera
from torch.utils.data import Dataset

import oncoscope.train.run as run_module
from oncoscope.models import create_model
from oncoscope.train.config import resolve_config
from oncoscope.train.run import train
from oncoscope.train.warm_start import replaced_stages, warm_start_front


class _Images(Dataset[tuple[torch.Tensor, int]]):
    """Crops of scikit-image's camera photograph, standardised; items are ``(index, epoch)`` as
    training's sampler gives them."""

    def __init__(self, count: int, side: int) -> None:
        photo = torch.from_numpy(camera().astype("float32") / 255.0)
        generator = torch.Generator().manual_seed(0)
        corners = torch.randint(0, photo.shape[0] - side, (count, 2), generator=generator)
        crops = [photo[r : r + side, c : c + side] for r, c in corners.tolist()]
        self.images = (torch.stack(crops)[:, None] - 0.45) / 0.25

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, _epoch = item
        return self.images[index], 0


def _small_sa_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "sa_efficientnet_lite0",
        num_classes=2,
        in_chans=1,
        depths=(1, 1, 1),
        pretrained=True,
    )


def test_the_front_end_learns_to_reproduce_the_stages_it_replaces():
    model = _small_sa_model()
    teacher = replaced_stages(model)
    assert teacher is not None
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    images = _Images(16, 32)
    done = warm_start_front(model, images, epochs=30, batch_size=8, seed=0)

    # the truth: the replaced stages' output, standardised per channel here, independently
    model.eval()
    x = images.images
    with torch.no_grad():
        target, copied = teacher.eval()(x), model.front(x)
    mean = target.mean(dim=(0, 2, 3), keepdim=True)
    spread = target.std(dim=(0, 2, 3), keepdim=True)
    error = float(F.mse_loss((copied - mean) / spread, (target - mean) / spread))
    assert error < 0.8  # 1.0 is what each channel's mean gives (measured: 0.65)
    # on the replaced stages' own scale, not the normalised one the front end ends in
    assert torch.allclose(copied.std(dim=(0, 2, 3)), target.std(dim=(0, 2, 3)), rtol=0.5)
    assert done.epochs == 30 and done.relative_error < done.first_relative_error
    # the running statistics are those of the final weights over the images (precise BN):
    # the stem's normalisation holds the mean of the stem convolution's output, exactly
    stem_conv, stem_norm = model.front.stem[0], model.front.stem[1]
    with torch.no_grad():
        stem_mean = stem_conv(x).mean(dim=(0, 2, 3))
    assert torch.allclose(stem_norm.running_mean, stem_mean, atol=1e-5)
    # evaluation (running statistics) gives what training (batch statistics) gives
    model.front.train()
    with torch.no_grad():
        trained = model.front(x)
    training_error = float(F.mse_loss((trained - mean) / spread, (target - mean) / spread))
    assert error == pytest.approx(training_error, abs=0.03)
    # the teacher is not trained, and the classifier starts at zero: equal logits
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    with torch.no_grad():
        assert torch.count_nonzero(model(x)) == 0


def test_a_model_without_replaced_stages_is_refused():
    with pytest.raises(ValueError, match="no pretrained stages"):
        warm_start_front(
            create_model("simple_cnn", num_classes=2),
            _Images(4, 32),
            epochs=1,
            batch_size=2,
            seed=0,
        )
    with pytest.raises(ValueError, match="at least 1"):
        warm_start_front(_small_sa_model(), _Images(4, 32), epochs=0, batch_size=2, seed=0)


def test_a_whole_model_weight_file_brings_its_front_end_so_nothing_is_warm_started(tmp_path):
    model = _small_sa_model()
    torch.save(model.state_dict(), tmp_path / "whole.pt")
    loaded = create_model(
        "sa_efficientnet_lite0",
        num_classes=2,
        in_chans=1,
        depths=(1, 1, 1),
        weights=tmp_path / "whole.pt",
    )
    assert replaced_stages(loaded) is None
    assert torch.equal(loaded.front.stem[0].weight, model.front.stem[0].weight)


@pytest.mark.parametrize(
    ("pretrained", "epochs", "expected"),
    [
        ("if-available", 3, "done"),
        (False, 8, "skipped: the stages the front end replaces have random weights"),
        ("if-available", 0, None),
    ],
)
def test_training_warm_starts_an_sa_model_and_says_so(
    patches, tmp_path, pretrained, epochs, expected
):
    config = resolve_config(
        overrides={
            "data": patches,
            "out": tmp_path / "run",
            "model": "sa_efficientnet_lite0",
            "pretrained": pretrained,
            "warm_start_epochs": epochs,
            "image_size": 32,
            "epochs": 1,
            "batch_size": 8,
            "num_workers": 0,
            "precision": "fp32",
        }
    )
    train(config, progress_bar=False)
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    if expected is None:
        assert "warm_start" not in summary
    elif expected == "done":
        warm = summary["warm_start"]
        assert warm["epochs"] == 3 and warm["relative_error"] < warm["first_relative_error"]
    else:
        assert summary["warm_start"] == expected


def test_the_localising_sa_recipe_warm_starts_and_trains_its_heads_first(patches, tmp_path):
    """``seed000-cam`` (its model, the side heads' losses through training) end to end: the
    front end warm-started, then an epoch in which only the class maps learn, then everything;
    the patches have no liver levels, so the classes are drawn evenly instead."""
    config = resolve_config(
        recipe="seed000-cam",
        overrides={
            "data": patches,
            "out": tmp_path / "run",
            "balanced_sampling": True,
            "warm_start_epochs": 2,
            "image_size": 32,
            "epochs": 2,
            "batch_size": 8,
            "num_workers": 0,
            "precision": "fp32",
        },
    )
    assert config.model == "sa_cam_efficientnet_lite0" and config.augment == "ct"
    changed: list[tuple[bool, bool]] = []  # per optimiser step: (front end, side heads) moved
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        params = [p for group in self.param_groups for p in group["params"]]
        if not any(p is model.classifier.weight for p in params):  # the warm start's own
            return original(self, *args, **kwargs)
        before = [p.detach().clone() for p in params]
        loss = original(self, *args, **kwargs)
        moved = {id(p) for p, old in zip(params, before, strict=True) if not torch.equal(p, old)}
        changed.append(
            (
                any(id(p) in moved for p in model.front.parameters()),
                all(id(p) in moved for side in model.side for p in side.parameters()),
            )
        )
        return loss

    built = run_module.create_model

    def keep(*args, **kwargs):
        nonlocal model
        model = built(*args, **kwargs)
        return model

    model = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        patch.setattr(run_module, "create_model", keep)
        train(config, progress_bar=False)
    steps = len(changed) // 2  # the same number of steps in each epoch
    assert changed[:steps] == [(False, True)] * steps  # epoch 0: the class maps alone
    assert all(front for front, _ in changed[steps:])  # epoch 1: the front end learns too
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["warm_start"]["epochs"] == 2
