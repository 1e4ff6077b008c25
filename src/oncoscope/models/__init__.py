"""Models: timm backbones of the seeds, the SA-EfficientNet (seed 000), the small CNN (seed 002).

Importing the package imports neither torch nor timm (:mod:`oncoscope.models.registry`).
"""

from oncoscope.models import factories  # noqa: F401 - registers oncoscope's own models
from oncoscope.models.registry import MODELS, check_model_name, count_parameters, create_model

__all__ = ["MODELS", "check_model_name", "count_parameters", "create_model"]
