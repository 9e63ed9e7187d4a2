"""Bad input fails early with a ValueError that says what is wrong and what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetuner_evaluation import evaluate_embeddings

Q = np.zeros((3, 4), dtype=np.float32) + np.eye(3, 4, dtype=np.float32)
QL = ["a", "b", "a"]
X = np.ones((5, 4), dtype=np.float32)
XL = [0, 1, 0, 1, 0]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((Q, QL, np.ones((5, 3)), XL), {}, "have 4 dimensions but index_embeddings have 3"),
        ((Q, ["a", "b"]), {}, "query_labels has 2 entries but there are 3 embedding rows"),
        ((Q, QL, X, XL[:4]), {}, "index_labels has 4 entries but there are 5"),
        ((Q, QL), {"limit": 0}, "limit must be a whole number of at least 1, got 0"),
        ((Q, QL), {"limit": 2.5}, "limit must be a whole number"),
        ((Q, QL), {"limit": True}, "limit must be a whole number"),
        ((Q, QL), {"distance": "cosin"}, "'cosine', 'euclidean', 'sqeuclidean'"),
        ((Q, QL), {"distance": "dot"}, "unknown distance 'dot'"),
        (
            (Q, QL),
            {"search": "faiss"},
            "unknown search 'faiss'; use one of 'exact', 'annoy', 'auto'",
        ),
        ((Q, QL), {"n_trees": 0}, "n_trees must be a whole number of at least 1"),
        ((Q, QL), {"search_k": 0}, "search_k must be None"),
        ((np.zeros((0, 4)), []), {}, "query_embeddings is empty"),
        ((Q, QL, np.zeros((0, 4)), []), {}, "index_embeddings is empty"),
        ((np.zeros((3, 0)), QL), {}, "query_embeddings is empty"),
        ((np.zeros(4), ["a"]), {}, "must be 2-D"),
        ((torch.zeros(2, 2, 2), ["a", "b"]), {}, "must be 2-D"),
        (([[0.0, 1.0]], ["a"]), {}, "must be a 2-D numpy array or torch tensor, got list"),
        ((np.array([["x", "y"]]), ["a"]), {}, "must hold real numbers"),
        ((np.array([[0.0, np.nan], [1.0, 1.0]]), ["a", "b"]), {}, "row 0 holds NaN"),
        ((Q, QL, X * np.inf, XL), {}, "index_embeddings row 0 holds NaN or infinity"),
        ((Q, QL, X), {}, "index_embeddings was given without index_labels"),
        ((Q, QL, None, XL), {}, "index_labels was given without index_embeddings"),
        ((Q, QL), {"query_ids": [1, 2, 3]}, "only apply with index_embeddings"),
        ((Q, QL, X, XL), {"query_ids": [1, 2, 3]}, "index_ids is missing"),
        ((Q, QL, X, XL), {"index_ids": range(5)}, "query_ids is missing"),
        ((Q, QL, X, XL), {"query_ids": [1, 2], "index_ids": range(5)}, "query_ids has 2"),
        ((Q, [["a"], ["b"], ["a"]]), {}, "query_labels must hold hashable values"),
        ((Q, "aba"), {}, "not a single string"),
        ((Q, np.zeros((3, 1))), {}, "query_labels must be one-dimensional"),
        ((Q, 3), {}, "must be a sequence of labels or a 1-D array, got int"),
    ],
)
def test_bad_input_raises_a_clear_value_error(args, kwargs, message):
    with pytest.raises(ValueError) as caught:
        evaluate_embeddings(*args, **kwargs)
    assert message in str(caught.value)


def test_a_misspelt_distance_gets_a_suggestion_when_finetuner_is_installed():
    pytest.importorskip("finetuner.errors")
    with pytest.raises(ValueError, match="Did you mean 'cosine'"):
        evaluate_embeddings(Q, QL, distance="cosin")


def test_valid_edge_inputs_are_accepted():
    # One dimension, integer embeddings, numpy labels, a tensor of labels, limit larger than data.
    ints = np.array([[1], [2], [3]], dtype=np.int64)
    assert evaluate_embeddings(ints, np.array([0, 0, 1]), limit=100)["recall_at_k"] == 1.0
    assert evaluate_embeddings(torch.tensor([[1.0], [2.0]]), torch.tensor([4, 4]))["hit_at_k"] == 1
