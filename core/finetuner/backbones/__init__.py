"""Registry backbones beyond the MLP: vision CNNs, sentence-transformers text models and
CLIP-style two-tower models. Each module defines ``SPECS``, a dict of
:class:`~finetuner.models.ModelSpec` by name, imported only when the registry is read."""
