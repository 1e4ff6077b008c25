"""Models: timm backbones of the seeds, the SA-EfficientNet (seed 000), the small CNN (seed 002)."""

from oncoscope.models.registry import MODELS, check_model_name, count_parameters, create_model

__all__ = ["MODELS", "check_model_name", "count_parameters", "create_model"]
