"""Models: what a backbone is, the registry of backbones, and using a model after training.

- :mod:`~finetuner.models.spec`: :class:`ModelSpec` and :class:`Preprocessor` (the leaf every
  backbone and plugin builds on).
- :mod:`~finetuner.models.registry`: :func:`get_spec`, :func:`list_models`,
  :func:`describe_models`, :func:`register_model` and the ``finetuner.models`` entry-point group.
- :mod:`~finetuner.models.mlp`: the built-in ``mlp`` backbone.
- :mod:`~finetuner.models.backbones`: the image, text and CLIP backbones.
- :mod:`~finetuner.models.images`: loading images and :class:`ImagePreprocessor`.
- :mod:`~finetuner.models.artifact`: the artifact format (writing, reading, rebuilding models).
- :mod:`~finetuner.models.card`: the artifact's model card, ``README.md``.
- :mod:`~finetuner.models.onnx`: exporting a model to ONNX and running the export.
- :mod:`~finetuner.models.inference`: ``get_model``, ``build_model``, ``encode``, ``cos_sim``.

Only the spec, the registry and the MLP load with this package; transformers, torchvision and
onnx load when a model that needs them is built.
"""

from .mlp import MLP
from .registry import MODELS_GROUP, describe_models, get_spec, list_models, register_model
from .spec import ModelSpec, Preprocessor, is_text_list

__all__ = [
    "MLP",
    "MODELS_GROUP",
    "ModelSpec",
    "Preprocessor",
    "describe_models",
    "get_spec",
    "is_text_list",
    "list_models",
    "register_model",
]
