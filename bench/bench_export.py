"""Benchmark: how close each export is to ``finetuner.encode``, and what int8 ONNX costs and
gains, on a real fine-tuned MiniLM.

Not a test. The script fine-tunes the bundled MiniLM for one epoch on ``--pairs`` rows of the
built-in ``products-train`` (MultipleNegativesRankingLoss), twice: as it is, with an
``EvaluationCallback`` on ``products-queries`` against ``products-corpus`` (metrics at 10), and
with a 128-dim projection head. It exports each run to sentence-transformers,
transformers (the plain one only: a projection head has no place there) and ONNX, loads each in
its own library, and prints the largest absolute difference from ``finetuner.encode`` over the
300 queries and ``--docs`` corpus listings. Last, it exports the plain run to int8 ONNX and
prints the report the export stores: retrieval metrics of the float32 and the int8 model on the
run's evaluation data and the encode throughput of each, measured in that process (one pass
each, after a warm-up batch; onnxruntime's default threads). Nothing is downloaded.

    HF_HUB_OFFLINE=1 python bench/bench_export.py [--pairs 256] [--docs 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import finetuner
from finetuner.data import load_dataset
from finetuner.models.export import export_artifact
from finetuner.models.export.quantize import format_report


def _fit(pairs: int, folder: Path, *, evaluate: bool = True, **model_options):
    from finetuner_evaluation import EvaluationCallback

    train = load_dataset("products-train")
    callbacks = [
        EvaluationCallback(query_data="products-queries", index_data="products-corpus", limit=10)
    ]
    return finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        train.subset(np.arange(min(pairs, len(train)))),
        model_options=model_options,
        loss="MultipleNegativesRankingLoss",
        epochs=1,
        batch_size=32,
        learning_rate=5e-5,
        seed=0,
        runs_dir=str(folder / "runs"),
        callbacks=callbacks if evaluate else [],
    )


def _texts(docs: int) -> list[str]:
    queries = load_dataset("products-queries").column("text").columns[0].values
    corpus = load_dataset("products-corpus").column("text").columns[0].values
    return list(queries) + list(corpus[:docs])


def _st(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=32)


def _hf(folder: Path, texts: list[str]) -> np.ndarray:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoder = AutoModel.from_pretrained(str(folder)).eval()
    out = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(
            texts[start : start + 32], padding=True, truncation=True, return_tensors="pt"
        )
        with torch.no_grad():
            states = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out).numpy()


def _onnx(folder: Path, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for start in range(0, len(texts), 32):
        feeds = tokenizer(
            texts[start : start + 32], padding=True, truncation=True, return_tensors="np"
        )
        out.append(
            session.run(["embeddings"], {k: v.astype(np.int64) for k, v in feeds.items()})[0]
        )
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--docs", type=int, default=500)
    args = parser.parse_args()
    texts = _texts(args.docs)
    readers = {"sentence-transformers": _st, "transformers": _hf, "onnx": _onnx}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = {
            "MiniLM": _fit(args.pairs, folder),
            "MiniLM + 128-dim head": _fit(args.pairs, folder, evaluate=False, output_dim=128),
        }
        print(f"max abs difference from finetuner.encode over {len(texts)} texts:")
        for name, run in runs.items():
            ours = finetuner.encode(finetuner.get_model(run.artifact_path), texts)
            for target, read in readers.items():
                if target == "transformers" and "head" in name:
                    continue
                out = export_artifact(run.artifact_path, folder / f"{name}-{target}", to=target)
                print(f"  {name:24} {target:22} {np.abs(read(out, texts) - ours).max():.2e}")
        out = export_artifact(
            runs["MiniLM"].artifact_path, folder / "int8", to="onnx", quantize="int8"
        )
        report = json.loads((out / "export_report.json").read_text())
        print(format_report(report))


if __name__ == "__main__":
    main()
