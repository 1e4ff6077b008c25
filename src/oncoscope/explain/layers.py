"""The layer a class activation map reads, from the model's own feature description.

timm models list their stages in ``feature_info`` (one dict per stage, ``module`` naming the
submodule, ``reduction`` its stride); oncoscope's own models (``simple_cnn``,
``sa_efficientnet``) carry an equivalent list. The last stage is the usual CAM layer; an earlier
one has a finer grid (stride 8 instead of 32), which helps with lesions a few pixels wide.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from torch import nn

from oncoscope.errors import InvalidOptionError


def feature_layers(model: nn.Module) -> list[str]:
    """Names of the model's feature stages, shallow to deep (from ``feature_info``).

    Raises:
        InvalidOptionError: the model describes no feature stages (pass layer names instead).
    """
    info: Any = getattr(model, "feature_info", None)
    names = [str(entry["module"]) for entry in info or [] if isinstance(entry, dict)]
    if not names:
        raise InvalidOptionError(
            f"{type(model).__name__} describes no feature stages (feature_info); "
            "name the layer with --layer"
        )
    return names


def target_layers(
    model: nn.Module, names: Sequence[str] = (), *, stage: int = -1
) -> list[tuple[str, nn.Module]]:
    """The layers to explain: ``names`` if given, else feature stage ``stage``.

    Args:
        model: the network.
        names: submodule names (``model.named_modules()``); several are averaged by the CAM.
        stage: index into :func:`feature_layers` when no name is given (-1 = last, deepest
            stage; -2 = the one before, at twice the resolution).

    Returns:
        ``(name, module)`` pairs.

    Raises:
        InvalidOptionError: an unknown layer name (close names suggested) or stage index.

    Example:
        >>> from oncoscope.models import create_model
        >>> m = create_model("simple_cnn", num_classes=2, in_chans=1, input_size=32)
        >>> [name for name, _ in target_layers(m)], [name for name, _ in target_layers(m, stage=0)]
        (['features.10'], ['features.2'])
    """
    modules = dict(model.named_modules())
    if not names:
        stages = feature_layers(model)
        if not -len(stages) <= stage < len(stages):
            raise InvalidOptionError(
                f"--layer-index {stage} is out of range: the model has {len(stages)} feature "
                f"stages ({', '.join(stages)})"
            )
        names = [stages[stage]]
    chosen = []
    for name in names:
        if name not in modules or name == "":
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidOptionError(f"the model has no layer '{name}'{hint}")
        chosen.append((name, modules[name]))
    return chosen
