"""The run report and the notebook display of runs, on real run folders written by RunWriter.

The report and the plots need plotly (the ``report`` extra): those tests skip without it. The
report in a real browser is tests/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from finetuner.cli import main
from finetuner.errors import FinetunerError, RunError
from finetuner.runs import Run, RunWriter, create_run
from finetuner.runs.html import changed_queries, item_html
from finetuner.runs.writer import SilentRunWriter

METRICS = {
    "before": {"mlp_ndcg_at_k": 0.5, "mlp_hit_at_k": 0.75},
    "after": {"mlp_ndcg_at_k": 0.625, "mlp_hit_at_k": 0.5},
}


def _query(i: int, score: float | None, results: list[str] | None = None) -> dict:
    return {"id": f"q{i}", "query": f"query {i}", "score": score,
            "results": results or [f"doc {i}"], "relevant": [True]}  # fmt: skip


@pytest.fixture
def run(tmp_path: Path) -> Run:
    run = create_run({"model": "mlp", "epochs": 2}, run_name="shown", runs_dir=tmp_path / "store")
    writer = RunWriter(run)
    writer.set_status("STARTED")
    writer.append_metrics("before", -1, 0, METRICS["before"])
    writer.append_metrics("epoch", 0, 3, {"mlp_ndcg_at_k": 0.55, "mlp_hit_at_k": 0.6})
    writer.append_metrics("epoch", 1, 6, METRICS["after"])
    writer.append_metrics("after", 1, 6, METRICS["after"])
    for step in range(1, 7):
        writer.record_step({"epoch": (step - 1) // 3, "step": step, "loss": 1.0 / step,
                            "time": 1000.0 + step})  # fmt: skip
    writer.flush_steps()
    before = [_query(0, 0.2), _query(1, 0.9), _query(2, None), _query(3, 0.5)]
    after = [_query(0, 0.8), _query(1, 0.3), _query(2, 0.4), _query(3, 0.5)]
    writer.record_query_results("before", "mlp", "ndcg_at_k", before)
    writer.record_query_results("after", "mlp", "ndcg_at_k", after)
    writer.record_examples("after", {"query 0": ["doc 0", "doc 1"]})
    writer.set_status("FINISHED")
    return run


def test_metrics_and_examples_are_dicts_that_show_as_tables(run: Run) -> None:
    metrics = run.metrics()
    assert metrics == METRICS and isinstance(metrics, dict)
    assert json.loads(json.dumps(metrics)) == METRICS
    html = metrics._repr_html_()
    assert "<table>" in html and "0.6250" in html and "+0.1250" in html and "-0.2500" in html
    examples = run.example_results()
    assert examples == {"after": {"query 0": ["doc 0", "doc 1"]}}
    assert "doc 1" in examples._repr_html_()


def test_query_results_are_kept_per_evaluation_and_stage_and_capped(run: Run) -> None:
    results = run.query_results()["mlp"]
    assert [q["score"] for q in results["before"]["queries"]] == [0.2, 0.9, None, 0.5]
    assert results["after"]["metric"] == "ndcg_at_k"
    writer = RunWriter(run)
    many = [_query(i, float("nan"), [f"d{j}" for j in range(20)]) for i in range(3000)]
    writer.record_query_results("after", "other", "ndcg_at_k", many)
    kept = run.query_results()["other"]["after"]["queries"]
    assert len(kept) == RunWriter.MAX_QUERIES
    assert len(kept[0]["results"]) == RunWriter.MAX_RESULTS and kept[0]["score"] is None
    assert set(run.query_results()) == {"mlp", "other"}
    with pytest.raises(RunError, match="not stage 'epoch'"):
        writer.record_query_results("epoch", "mlp", "ndcg_at_k", many)


def test_a_silent_writer_records_no_query_results(run: Run) -> None:
    SilentRunWriter(run).record_query_results("before", "x", "ndcg_at_k", [_query(0, 1.0)])
    assert "x" not in run.query_results()


def test_the_queries_that_changed_most_are_sorted_and_need_both_scores(run: Run) -> None:
    improved, regressed = changed_queries(run.query_results()["mlp"], count=5)
    assert [(old["id"], new["score"]) for old, new in improved] == [("q0", 0.8)]
    assert [(old["id"], new["score"]) for old, new in regressed] == [("q1", 0.3)]


def test_an_image_path_becomes_an_inline_thumbnail(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "red.png"
    Image.new("RGB", (300, 200), (200, 10, 10)).save(path)
    html = item_html(str(path))
    assert html.startswith('<img class="thumb" src="data:image/jpeg;base64,')
    assert item_html(str(tmp_path / "missing.png")) == str(tmp_path / "missing.png")
    assert item_html("a <b> text") == "a &lt;b&gt; text"


def test_the_report_is_one_self_contained_file(run: Run, tmp_path: Path) -> None:
    pytest.importorskip("plotly")
    path = run.report(tmp_path / "out" / "r.html")
    assert path == (tmp_path / "out" / "r.html").absolute()
    html = path.read_text(encoding="utf-8")
    assert html.count("plotly.js v") >= 1 and html.count('<script type="text/javascript">') == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", html)
    assert html.count('class="plotly-graph-div"') == 2 + 2  # loss twice, two metrics
    assert "0.6250" in html and "queries that improved most" in html and "query 0" in html
    assert '"epochs": 2' in html  # the config
    assert run.report() == run.path / "report.html"


def test_the_notebook_display_of_a_run_carries_plotly_once(run: Run) -> None:
    pytest.importorskip("plotly")
    import finetuner.runs.notebook as notebook

    notebook._plotlyjs_shown = False
    first, second = run._repr_html_(), run._repr_html_()
    assert "FINISHED" in first and "0.6250" in first
    assert first.count('class="plotly-graph-div"') == 4
    assert "plotly.js v" in first and "plotly.js v" not in second


def test_without_plotly_the_report_says_how_to_install_it(run, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(FinetunerError, match=r"pip install 'finetuner\[report\]'"):
        run.report()
    assert "No plots" in run._repr_html_()  # the table still shows
    runs_dir = str(run.path.parents[1])
    assert main(["report", run.name, "--runs-dir", runs_dir]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "finetuner[report]" in err and len(err.splitlines()) == 1


def test_the_report_command_writes_where_it_is_told(run, tmp_path, capsys) -> None:
    pytest.importorskip("plotly")
    target = tmp_path / "report.html"
    runs_dir = str(run.path.parents[1])
    assert main(["report", run.name, "-o", str(target), "--runs-dir", runs_dir]) == 0
    assert str(target) in capsys.readouterr().out and target.stat().st_size > 1_000_000
    assert main(["report", "nope", "--runs-dir", runs_dir]) == 1
    assert "error: " in capsys.readouterr().err
    assert main(["report", run.name, "-o", str(tmp_path), "--runs-dir", runs_dir]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_image_queries_and_results_show_as_thumbnails_in_the_report(run, tmp_path) -> None:
    pytest.importorskip("plotly")
    from finetuner.testing import write_colour_images

    images = write_colour_images(tmp_path / "images", per_colour=2)
    red, blue = (str(p) for p in images["red"]), (str(p) for p in images["blue"])
    query, match = next(red), next(red)
    writer = RunWriter(run)
    for stage, score in (("before", 0.25), ("after", 1.0)):
        record = {"id": "q", "query": query, "score": score, "results": [match, next(blue)],
                  "relevant": [True, False]}  # fmt: skip
        writer.record_query_results(stage, "clip", "ndcg_at_k", [record])
    html = run.report(tmp_path / "r.html").read_text(encoding="utf-8")
    section = html[html.index('id="queries"') : html.index('id="examples"')]
    assert section.count('<img class="thumb" src="data:image/jpeg;base64,') == 1 + 2 + 2
    assert '<li class="relevant"><img' in section
