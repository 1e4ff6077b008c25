"""How each model is built: oncoscope's own models as registered factories, and timm names with
oncoscope's offline weight sources.

Importing this module registers the factories (:func:`oncoscope.models.registry.register_model`)
and imports neither torch nor timm: a factory imports what it builds when it is called. Each
registration records the model's parameter count with its default keywords and 1000 classes,
and the input width of its classifier (checked against the built models by the test suite).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncoscope.errors import OncoscopeError
from oncoscope.models.registry import Factory, create_model, register_model
from oncoscope.models.sa_configs import CONFIGS, SAConfig

if TYPE_CHECKING:
    from torch import nn

#: A weights file (``weights=``), or None.
Weights = str | Path | None
#: The keywords a factory receives; it takes out what it uses.
Kwargs = dict[str, Any]

#: :class:`SAConfig` fields a keyword overrides.
_SA_KEYS = (
    "feed_stage",
    "widths",
    "depths",
    "kernel_sizes",
    "relation",
    "share",
    "stem_kernel",
)
#: Parameters at 1000 classes and classifier input width of each named SA-EfficientNet.
_SA_SIZES = {
    "sa_efficientnet": (75_506_283, 1792),
    "sa_efficientnet_lite0": (4_629_568, 1280),
    "sa_efficientnet_b0": (5_255_882, 1280),
    "sa_efficientnet_lite0_pairwise": (4_629_307, 1280),
    "sa_efficientnet_lite0_patchwise": (4_633_138, 1280),
}


def create_timm_model(
    name: str, num_classes: int, pretrained: bool, weights: Weights, in_chans: int, kwargs: Kwargs
) -> nn.Module:
    """A timm model; pretrained weights from ``weights``, an installed weight package, then
    timm's cache and hub (:mod:`oncoscope.models.registry`).

    Raises:
        OncoscopeError: pretrained weights that cannot be found or do not fit.
    """
    import timm
    import torch

    from oncoscope.models.weights import load_state_dict, match_state_dict, package_weights

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
    "simple_cnn",
    "configurable CNN of the CNN primer",
    "002",
    input_size_kwarg="input_size",
    parameters=677_224,
    head_features=128,
)
def _create_simple_cnn(
    num_classes: int, pretrained: bool, weights: Weights, in_chans: int, kwargs: Kwargs
) -> nn.Module:
    from oncoscope.models.simple_cnn import SimpleCNN
    from oncoscope.models.weights import load_weights_file

    model = SimpleCNN(num_classes, in_chans, **kwargs)
    if pretrained:
        if weights is None:
            raise OncoscopeError("simple_cnn has no pretrained weights; pass weights=FILE")
        load_weights_file(model, weights)
    return model


#: Makes a front-end model around a built backbone: ``(backbone, in_chans) -> model``.
Wrap = Callable[["nn.Module", int], "nn.Module"]


def _front_end_factory(
    default_backbone: str, front_end: Callable[[dict[str, Any]], Wrap], whole_prefix: str = "front."
) -> Factory:
    """A factory for a front end around a registry backbone (``backbone=``, default
    ``default_backbone``).

    ``front_end(kwargs)`` takes the front end's own keywords out of ``kwargs`` and says how to
    wrap the backbone; the other keywords go to the backbone. ``weights`` are the whole
    model's (a key starts with ``whole_prefix``: loaded into the result exactly) or the
    backbone's (loaded into the backbone as :func:`create_model` loads them). A layout the
    backbone cannot take (``ValueError``) is an :class:`OncoscopeError` naming the backbone.
    """

    def create(
        num_classes: int, pretrained: bool, weights: Weights, in_chans: int, kwargs: Kwargs
    ) -> nn.Module:
        from oncoscope.models.weights import load_state_dict, load_weights_file

        backbone_name = kwargs.pop("backbone", default_backbone)
        wrap = front_end(kwargs)
        whole = load_state_dict(weights) if weights is not None else None
        is_whole_model = whole is not None and any(k.startswith(whole_prefix) for k in whole)
        backbone = create_model(
            backbone_name,
            num_classes=num_classes,
            pretrained=pretrained and not is_whole_model,
            weights=None if is_whole_model else weights,
            in_chans=in_chans,
            **kwargs,
        )
        try:
            model = wrap(backbone, in_chans)
        except ValueError as error:
            raise OncoscopeError(f"{backbone_name}: {error}") from None
        if is_whole_model and weights is not None:
            load_weights_file(model, weights)
            # the front end came with the weights: nothing to warm-start from
            object.__setattr__(model, "replaced_stages", None)
        return model

    return create


def _sa_front_end(config: SAConfig) -> Callable[[dict[str, Any]], Wrap]:
    """The front end of one named SA-EfficientNet configuration; every field can be overridden
    (``feed_stage=``, ``widths=``, ``depths=``, ``kernel_sizes=`` or one ``kernel_size=`` for
    all stages, ``relation=``, ``share=``, ``stem_kernel=``)."""

    def front_end(kwargs: Kwargs) -> Wrap:
        from oncoscope.models.sa_efficientnet import SAEfficientNet

        layout = {k: kwargs.pop(k) for k in _SA_KEYS if k in kwargs}
        if "kernel_size" in kwargs:
            stages = len(layout.get("widths", config.widths))
            layout["kernel_sizes"] = (kwargs.pop("kernel_size"),) * stages
        chosen = replace(config, **layout)
        return lambda backbone, in_chans: SAEfficientNet(backbone, in_chans=in_chans, config=chosen)

    return front_end


for _name, _config in CONFIGS.items():
    _parameters, _features = _SA_SIZES[_name]
    register_model(
        _name,
        _config.description,
        "000",
        dropout_kwarg="drop_rate",
        parameters=_parameters,
        head_features=_features,
        backbone=_config.backbone,
    )(_front_end_factory(_config.backbone, _sa_front_end(_config)))


def _stage_cam_front_end(kwargs: Kwargs) -> Wrap:
    """The CAM head on the backbone cut after ``stage`` (timm's feature index, default 3:
    stride 16); ``drop_rate`` is the head's dropout, ``pool`` how it pools its class map
    (``avg``, ``max``, ``lse``); the backbone's own keywords (``output_stride=8``) pass on."""
    stage = int(kwargs.pop("stage", 3))
    drop_rate = float(kwargs.pop("drop_rate", 0.0))
    pool = str(kwargs.pop("pool", "avg"))
    fine = kwargs.pop("fine_stage", None)
    indices = (stage,) if fine is None else (int(fine), stage)

    def wrap(backbone: nn.Module, in_chans: int) -> nn.Module:
        from timm.models import FeatureListNet

        from oncoscope.models.stage_cam import StageCAMNet

        timm_like: Any = backbone
        classes = int(timm_like.get_classifier().out_features)
        cut = FeatureListNet(backbone, out_indices=indices, flatten_sequential=True)
        return StageCAMNet(cut, classes, drop_rate=drop_rate, pool=pool)

    return wrap


register_model(
    "cam_efficientnet_lite0",
    "EfficientNet-Lite0 cut after its stride-16 stage under a CAM head (localising CT model)",
    "000",
    dropout_kwarg="drop_rate",
    parameters=813_768,
    head_features=112,
    backbone="efficientnet_lite0",
)(_front_end_factory("efficientnet_lite0", _stage_cam_front_end, whole_prefix="backbone."))


def _sa_cam_front_end(config: SAConfig) -> Callable[[dict[str, Any]], Wrap]:
    """The front end of ``config`` under a class map with deep supervision
    (:class:`~oncoscope.models.front_end_cam.FrontEndCAMNet`): ``kept_stages=`` (default 0),
    ``side_stages=`` (default ``(1, 2)``), ``pool=`` (default ``avg``) and ``drop_rate=`` (the
    head's dropout) are its own; the SA layout keywords are :func:`_sa_front_end`'s."""
    sa_front_end = _sa_front_end(config)

    def front_end(kwargs: Kwargs) -> Wrap:
        from oncoscope.models.front_end_cam import FrontEndCAMNet

        head: dict[str, Any] = {
            "kept_stages": int(kwargs.pop("kept_stages", 0)),
            "side_stages": tuple(int(s) for s in kwargs.pop("side_stages", (1, 2))),
            "pool": str(kwargs.pop("pool", "avg")),
            "drop_rate": float(kwargs.pop("drop_rate", 0.0)),
        }
        wrap_sa = sa_front_end(kwargs)

        def wrap(backbone: nn.Module, in_chans: int) -> nn.Module:
            timm_like: Any = backbone
            classes = int(timm_like.get_classifier().out_features)
            return FrontEndCAMNet(wrap_sa(backbone, in_chans), classes, **head)

        return wrap

    return front_end


#: The localising SA model on each relation's small front end (the seed-000 comparison trains
#: them by name): name, the configuration whose front end it keeps (which names its relation),
#: parameters at 1000 classes.
_SA_CAM_MODELS = (
    ("sa_cam_efficientnet_lite0", "sa_efficientnet_lite0", 172_064),
    ("sa_cam_efficientnet_lite0_pairwise", "sa_efficientnet_lite0_pairwise", 171_803),
    ("sa_cam_efficientnet_lite0_patchwise", "sa_efficientnet_lite0_patchwise", 175_634),
)
for _name, _front, _parameters in _SA_CAM_MODELS:
    register_model(
        _name,
        f"small SAN front end of {_front} under a stride-8 class map with deep supervision of "
        "its stride-2 and stride-4 stages (localising SA model)",
        "000",
        dropout_kwarg="drop_rate",
        parameters=_parameters,
        # per class: 40 + 1 (the stride-8 class map) + 33 + 65 (side heads on 32 and 64 channels)
        head_features=138,
        backbone="efficientnet_lite0",
    )(_front_end_factory("efficientnet_lite0", _sa_cam_front_end(CONFIGS[_front])))
