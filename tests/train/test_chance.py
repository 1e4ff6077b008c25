"""A run that leaves chance late trains its epochs after it: the stretched cosine and the run."""

from __future__ import annotations

import csv
import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch

from oncoscope.errors import InvalidOptionError
from oncoscope.train.chance import LeaveChance, StretchableCosine
from oncoscope.train.checkpoint import read_checkpoint
from oncoscope.train.run import train

from .test_run import _config as run_config


def _cosine(base: float, position: float) -> float:
    return base * (1 + math.cos(math.pi * position)) / 2


def _rates(scheduler: StretchableCosine, steps: int) -> list[float]:
    rates = []
    for _ in range(steps):
        rates.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return rates


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_unstretched_it_is_pytorchs_cosine_to_the_bit():
    ours = _rates(StretchableCosine(_optimizer(), T_max=40), 41)
    optimizer = _optimizer()
    theirs = _rates(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40), 41)
    assert ours == theirs  # exact: runs that never stretch train as before


def test_stretched_it_keeps_the_start_and_spreads_the_rest():
    # 10 steps planned, stretched at step 4 to end at step 16: the rest of the cosine (from
    # 4/10 of the way) is spread over 12 steps instead of 6.
    scheduler = StretchableCosine(_optimizer(), T_max=10)
    head = _rates(scheduler, 4)
    scheduler.stretch(4, 16)
    tail = _rates(scheduler, 13)
    assert head == pytest.approx([_cosine(0.1, k / 10) for k in range(4)], abs=1e-12)
    expected = [_cosine(0.1, 0.4 + (k / 12) * 0.6) for k in range(13)]
    assert tail == pytest.approx(expected, abs=1e-12)
    assert tail[-1] == pytest.approx(0.0, abs=1e-15)
    assert all(a > b for a, b in itertools.pairwise(tail))


def test_a_schedule_stretches_once_and_only_forwards():
    scheduler = StretchableCosine(_optimizer(), T_max=10)
    with pytest.raises(ValueError, match="need 0 <= 10 < 10"):
        scheduler.stretch(10, 20)
    with pytest.raises(ValueError, match="< 10"):
        scheduler.stretch(4, 10)
    scheduler.stretch(4, 12)
    with pytest.raises(ValueError, match="already"):
        scheduler.stretch(5, 14)


def _trainer(epoch: int, accuracy: float | None, scheduler=None):
    metrics = {} if accuracy is None else {"train_acc": torch.tensor(accuracy)}
    configs = [] if scheduler is None else [SimpleNamespace(scheduler=scheduler)]
    return SimpleNamespace(
        current_epoch=epoch, callback_metrics=metrics, should_stop=False,
        lr_scheduler_configs=configs,
    )  # fmt: skip


def _epochs_run(callback: LeaveChance, accuracies: list[float], scheduler=None) -> int:
    """Feed the callback one epoch's training accuracy at a time, as the trainer would."""
    for epoch, accuracy in enumerate(accuracies):
        trainer = _trainer(epoch, accuracy, scheduler)
        callback.on_train_epoch_end(trainer, None)
        if trainer.should_stop:
            return epoch + 1
    return len(accuracies)


@pytest.mark.parametrize(
    ("left_at", "epochs_run"),
    [(None, 24), (0, 24), (7, 24), (8, 25), (10, 27), (22, 39), (23, 24)],
)
def test_the_run_trains_its_epochs_after_leaving_chance(left_at, epochs_run):
    # 24 planned, 16 after: early leavers are unchanged, late ones grow to leave + 1 + 16; one
    # that leaves in its last planned epoch has no schedule left to spread and stops there.
    accuracies = [0.5 if left_at is None or e < left_at else 0.9 for e in range(40)]
    scheduler = StretchableCosine(_optimizer(), T_max=24 * 3)
    callback = LeaveChance(24, 16, 0.7)
    assert _epochs_run(callback, accuracies, scheduler) == epochs_run
    if epochs_run > 24:  # stretched from the end of the epoch that left, 3 steps an epoch
        stretch = (scheduler.stretched_at, scheduler.stretched_to)
        assert stretch == (3 * (left_at + 1), 3 * epochs_run)
    else:
        assert scheduler.stretched_at == -1


def test_a_dip_below_the_accuracy_after_leaving_changes_nothing():
    callback = LeaveChance(10, 6, 0.7)
    assert _epochs_run(callback, [0.5] * 6 + [0.75, 0.6, 0.5] + [0.9] * 10) == 6 + 1 + 6


def test_a_resumed_run_keeps_the_epoch_it_left_at():
    callback = LeaveChance(10, 6, 0.7)
    _epochs_run(callback, [0.5] * 6 + [0.8])
    restored = LeaveChance(10, 6, 0.7)
    restored.load_state_dict(callback.state_dict())
    assert restored.target_epochs == 13
    finished = _trainer(13, None)
    restored.on_train_start(finished, None)
    assert finished.should_stop  # all 13 epochs trained: none more


def _config(patches, out, **extra):
    """``test_run``'s small run, cosine at lr 0.01 in batches of 16 (2 steps an epoch)."""
    return run_config(
        patches, out, **{"scheduler": "cosine", "lr": 0.01, "batch_size": 16, **extra}
    )


def test_a_run_that_leaves_late_trains_longer_on_the_spread_schedule(patches, tmp_path):
    # 32 patches in batches of 16: 2 steps an epoch. Any accuracy counts as leaving chance, so
    # the run leaves in epoch 0 and trains 1 + 3 epochs instead of 2; its 8 steps are taken at
    # the 4-step cosine's first 2 rates, then at its second half spread over 6 steps.
    config = _config(patches, tmp_path / "run", epochs=2, epochs_after_chance=3,
                     left_chance_accuracy=1e-6)  # fmt: skip
    seen: list[float] = []
    original = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", recording_step)
        result = train(config, progress_bar=False)
    expected = [_cosine(0.01, k / 4) for k in range(2)]
    expected += [_cosine(0.01, 0.5 + (k / 6) * 0.5) for k in range(6)]
    assert seen == pytest.approx(expected, abs=1e-12)
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2", "3"]
    assert result.epochs_run == 4
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (summary["epochs"], summary["left_chance_at_epoch"]) == (4, 0)


def test_a_run_that_never_leaves_chance_trains_its_epochs(patches, tmp_path):
    # a learning rate of zero keeps the initial weights: training accuracy stays below 1
    # (half the patches of each class differ in brightness from the other class's mean)
    config = _config(patches, tmp_path / "run", epochs=2, epochs_after_chance=3, lr=1e-30,
                     left_chance_accuracy=1.0)  # fmt: skip
    train(config, progress_bar=False)
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert max(float(row["train_acc"]) for row in history) < 1.0
    assert [row["epoch"] for row in history] == ["0", "1"]
    assert "left_chance_at_epoch" not in json.loads((tmp_path / "run" / "run.json").read_text())


def test_resume_after_the_stretch_gives_the_uninterrupted_runs_weights(patches, tmp_path):
    extra = {"epochs": 2, "epochs_after_chance": 3, "left_chance_accuracy": 1e-6}
    train(_config(patches, tmp_path / "full", **extra), progress_bar=False)
    original = LeaveChance.on_train_epoch_end

    def interrupted(self, trainer, pl_module):  # the machine goes down after epoch 1
        original(self, trainer, pl_module)
        trainer.should_stop = trainer.should_stop or trainer.current_epoch == 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LeaveChance, "on_train_epoch_end", interrupted)
        train(_config(patches, tmp_path / "part", **extra), progress_bar=False)
    result = train(_config(patches, tmp_path / "part", **extra), resume=True, progress_bar=False)
    assert result.epochs_run == 4
    full = read_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")["state_dict"]
    part = read_checkpoint(tmp_path / "part" / "checkpoints" / "last.ckpt")["state_dict"]
    for key in full:
        torch.testing.assert_close(part[key], full[key], rtol=0, atol=0)


def test_it_needs_the_cosine_schedule(patches, tmp_path):
    with pytest.raises(InvalidOptionError, match=r"epochs_after_chance.*use the cosine.*--config"):
        _config(patches, tmp_path / "run", epochs_after_chance=4, scheduler="step")
