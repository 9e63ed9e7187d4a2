"""The registry's backbones beyond the MLP. Each of ``vision``, ``text`` and ``clip`` defines
``SPECS``, a dict of :class:`~finetuner.models.spec.ModelSpec` by name, which the registry reads;
their heavy libraries (transformers, tokenizers, safetensors) load only when a model is built.

- :mod:`.common`: option checking, the projection head and freezing, shared by all of them.
- :mod:`.vision`: the image backbones (ResNet, EfficientNet) and their pooling.
- :mod:`.resnet`, :mod:`.efficientnet`: the networks, with torchvision's weight layout.
- :mod:`.weights`: finding and loading torchvision's weight files.
- :mod:`.text`: transformer text encoders with token pooling.
- :mod:`.model_folders`: local Hugging Face model folders, their defaults and tokenizers.
- :mod:`.clip`: CLIP-style two-tower models.
"""
