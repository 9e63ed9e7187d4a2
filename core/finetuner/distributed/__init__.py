"""Training under ``torchrun``: several processes, one shard of each global batch apiece."""
