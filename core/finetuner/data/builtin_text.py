"""The built-in text retrieval task: shoppers' queries and the catalogue listings they want.

A query names a product in a shopper's words ("cheap navy rain jacket for women by Kestrel");
its listing describes the same product in the catalogue's words ("Kestrel waterproof shell,
colour: midnight, women's cut, budget range"), which share few words with the query. Each
product is a combination of brand, category, colour, price band and cut; a pretrained text
model finds some listings from the words they do share and learns the rest from training pairs.

Three data sets, always the same (a fixed seed):

* ``products-train``: 1,200 (query, listing) training pairs, as retrieval data;
* ``products-queries``: 300 held-back queries of other products, each labelled with the id
  of its one relevant listing;
* ``products-corpus``: 3,000 listings labelled with their ids: those of the training pairs,
  those of the held-back queries, and 1,500 distractors, products nobody asked for that share
  most attributes with the wanted ones.

Queries never appear in the corpus and held-back products never in the training pairs, so the
held-back metrics measure what fine-tuning taught the model, not what it memorised.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .dataset import TEXT, Column, Dataset

__all__ = ["TEXT_DATASETS", "load_text_builtin", "product_task"]

TEXT_DATASETS = {
    "products-train": "shoppers' queries and the listings they want (1,200 retrieval pairs)",
    "products-queries": "300 held-back shoppers' queries, labelled with their listing's id",
    "products-corpus": "3,000 catalogue listings (1,500 of them distractors), labelled by id",
}

_TRAIN, _HELD_BACK, _DISTRACTORS = 1_200, 300, 1_500

# (a shopper's word, the catalogue's word) for each attribute
_CATEGORIES = (
    ("rain jacket", "waterproof shell"), ("hiking boots", "trail footwear"),
    ("backpack", "daypack"), ("tent", "camping shelter"), ("sleeping bag", "sleep system"),
    ("running shoes", "road trainers"), ("gloves", "hand warmers"), ("beanie", "knit cap"),
    ("water bottle", "insulated flask"), ("torch", "headlamp"), ("hoodie", "fleece top"),
    ("shorts", "trail short"),
)  # fmt: skip
_COLOURS = (
    ("navy", "midnight"), ("red", "cherry"), ("green", "moss"), ("black", "onyx"),
    ("white", "chalk"), ("yellow", "sunflower"), ("grey", "pebble"), ("brown", "walnut"),
)  # fmt: skip
_PRICES = (("cheap", "budget range"), ("mid-range", "core range"), ("premium", "signature range"))
_CUTS = (("for men", "men's cut"), ("for women", "women's cut"), ("for children", "kids' sizes"))
_BRANDS = ("Kestrel", "Ostara", "Lumen", "Harrow", "Pinecrest", "Volta", "Skerry", "Marram")
_QUERY_FORMS = (
    "{price} {colour} {category} {cut} by {brand}",
    "{brand} {category}, {colour}, {price}, {cut}",
    "need a {colour} {category} {cut} from {brand}, {price}",
    "{colour} {brand} {category} {cut} {price}",
)


@dataclass(frozen=True)
class ProductTask:
    """The task's texts: training pairs, held-back (query, listing id) pairs, the corpus."""

    train_pairs: list[tuple[str, str]]
    held_back: list[tuple[str, str]]
    corpus: list[tuple[str, str]]  # (listing id, listing)


@lru_cache(maxsize=1)
def product_task() -> ProductTask:
    rng = random.Random(14)
    products = list(itertools.product(_BRANDS, _CATEGORIES, _COLOURS, _PRICES, _CUTS))
    rng.shuffle(products)
    wanted = _TRAIN + _HELD_BACK
    chosen = products[: wanted + _DISTRACTORS]
    listings = [(f"p{i:04d}", _listing(product)) for i, product in enumerate(chosen)]
    queries = [_query(product, rng) for product in chosen[:wanted]]
    train = [(queries[i], listings[i][1]) for i in range(_TRAIN)]
    held = [(queries[i], listings[i][0]) for i in range(_TRAIN, wanted)]
    corpus = sorted(listings, key=lambda entry: rng.random())
    return ProductTask(train, held, corpus)


def _listing(product: tuple) -> str:
    brand, (_, category), (_, colour), (_, price), (_, cut) = product
    return f"{brand} {category}. Colour: {colour}. {cut.capitalize()}, {price}."


def _query(product: tuple, rng: random.Random) -> str:
    brand, (category, _), (colour, _), (price, _), (cut, _) = product
    form = rng.choice(_QUERY_FORMS)
    return form.format(brand=brand, category=category, colour=colour, price=price, cut=cut)


def load_text_builtin(name: str) -> Dataset:
    """The built-in text data set *name*, one of :data:`TEXT_DATASETS`."""
    task = product_task()
    if name == "products-train":
        queries = [q for q, _ in task.train_pairs]
        codes = np.arange(len(queries), dtype=np.int64)  # every training query is distinct
        return Dataset(
            [Column(TEXT, queries), Column(TEXT, [d for _, d in task.train_pairs])],
            codes,
            [str(i) for i in range(len(queries))],
            [f"{name}[{i}]" for i in range(len(queries))],
            kind="retrieval",
            source=name,
        )
    entries = task.held_back if name == "products-queries" else [(t, i) for i, t in task.corpus]
    classes = sorted({label for _, label in entries})
    code = {label: i for i, label in enumerate(classes)}
    return Dataset(
        [Column(TEXT, [text for text, _ in entries])],
        np.asarray([code[label] for _, label in entries], dtype=np.int64),
        classes,
        [f"{name}[{i}]" for i in range(len(entries))],
        source=name,
    )
