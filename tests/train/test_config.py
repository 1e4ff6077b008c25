from __future__ import annotations

import pytest

from oncoscope.errors import InvalidOptionError
from oncoscope.train.config import resolve_config


def test_recipe_then_file_then_flags(tmp_path):
    (tmp_path / "run.yaml").write_text("epochs: 7\nlr: 0.01\nbatch_size: 4\n")
    config = resolve_config(
        recipe="seed004",
        config_file=tmp_path / "run.yaml",
        overrides={"data": "m.csv", "out": "run", "lr": 0.05, "epochs": None},
    )
    assert config.model == "resnet50" and config.milestones == [80, 120, 160, 180]
    assert config.epochs == 7 and config.batch_size == 4  # file over recipe
    assert config.lr == 0.05  # flag over file; a None flag changes nothing


def test_seed004_uses_rmsprop_for_inception_v3_unless_told_otherwise():
    base = {"data": "m.csv", "out": "r"}
    assert (
        resolve_config(recipe="seed004", overrides={**base, "model": "densenet121"}).optimizer
        == "adam"
    )
    inception = resolve_config(recipe="seed004", overrides={**base, "model": "inception_v3"})
    assert inception.optimizer == "rmsprop" and inception.label_smoothing == 0.1
    told = resolve_config(
        recipe="seed004", overrides={**base, "model": "inception_v3", "optimizer": "sgd"}
    )
    assert told.optimizer == "sgd"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"epochs": 0}, "epochs"),
        ({"milestones": [5, 3]}, "milestones"),
        ({"colour": True}, "colour"),
        ({"epochs": 4, "freeze_epochs": 4}, "freeze_epochs 4 leaves no epoch"),
    ],
)
def test_bad_options_name_the_field(overrides, message):
    with pytest.raises(InvalidOptionError, match=message):
        resolve_config(overrides={"data": "m.csv", "out": "r", **overrides})


def test_unknown_recipe():
    with pytest.raises(InvalidOptionError, match="quick"):
        resolve_config(recipe="fast", overrides={"data": "m", "out": "r"})
