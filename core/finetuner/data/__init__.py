"""Training data: user data converted once into columns of items, then batched and sampled.

Users hand over CSV files, docarray ``DocList``s, built-in or pushed data set names or plain
Python lists; each becomes a :class:`Dataset`. Which module does what:

- :mod:`~finetuner.data.dataset`: ``Dataset``, ``Column``, ``Batch`` and the shared constants
  (the leaf: it imports nothing else from finetuner but the errors);
- :mod:`~finetuner.data.items`: single values and documents as items, labels as class codes;
- :mod:`~finetuner.data.convert`: ``load_dataset``, ``split_dataset``, ``align_classes``,
  ``encodable_values``;
- :mod:`~finetuner.data.csv_options`, :mod:`~finetuner.data.csv_reader` and
  :mod:`~finetuner.data.image_references`: CSV files, their options and the images they name;
- :mod:`~finetuner.data.retrieval`: retrieval examples from JSONL files, lists of dicts and
  ``RetrievalExample`` documents;
- :mod:`~finetuner.data.builtin`: the built-in data sets; :mod:`~finetuner.data.store`: pushed
  data sets on disk; :mod:`~finetuner.data.pushed`: ``push_data`` and friends;
- :mod:`~finetuner.data.samplers` and :mod:`~finetuner.data.batching`: batches for training;
- :mod:`~finetuner.data.documents`: the docarray document types (imported only where used, so
  docarray loads only when needed).
"""

from __future__ import annotations

from .batching import Collate, iterate_batches
from .convert import align_classes, encodable_values, load_dataset, split_dataset
from .csv_options import CSVOptions, as_csv_options
from .dataset import IMAGE, KINDS, LABEL_TAG, SCORE_TAG, TENSOR, TEXT, Batch, Column, Dataset
from .pushed import push_data
from .samplers import (
    ClassBalancedBatchSampler,
    NoDuplicatesBatchSampler,
    RandomBatchSampler,
    ShardedBatchSampler,
)
from .store import delete_data, list_data

__all__ = [
    "IMAGE",
    "KINDS",
    "LABEL_TAG",
    "SCORE_TAG",
    "TENSOR",
    "TEXT",
    "Batch",
    "CSVOptions",
    "ClassBalancedBatchSampler",
    "Collate",
    "Column",
    "Dataset",
    "NoDuplicatesBatchSampler",
    "RandomBatchSampler",
    "ShardedBatchSampler",
    "align_classes",
    "as_csv_options",
    "delete_data",
    "encodable_values",
    "iterate_batches",
    "list_data",
    "load_dataset",
    "push_data",
    "split_dataset",
]
