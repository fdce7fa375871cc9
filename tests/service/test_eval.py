"""``make eval``'s harness on a small BEIR-format dataset of its own: the corpus goes in through the upload
route, the queries through the search route, and the report sets the service beside a BM25 baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import eval as evaluation

DOCUMENTS = {
    "leave": ("Annual leave", "Every employee gets twenty-five days of paid vacation per year."),
    "badges": ("Badges", "Badges are issued at the front desk on the first day of work."),
    "expenses": ("Expenses", "Travel expenses are reimbursed within fourteen days of the claim."),
    "parking": ("Parking", "The car park opens at seven and bicycles go to the basement."),
    "security": ("Visitors", "Visitors sign in at reception and wear a red lanyard."),
    "payroll": ("Payroll", "Salaries are paid on the last working day of each month."),
}
QUERIES = {
    "q1": ("How many vacation days does an employee get?", "leave"),
    "q2": ("When are travel expenses reimbursed?", "expenses"),
    "q3": ("Where are badges issued?", "badges"),
    "q4": ("When are salaries paid?", "payroll"),
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "mini"
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": key, "title": title, "text": text} for key, (title, text) in DOCUMENTS.items()]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(row) for row in corpus) + "\n")
    queries = [{"_id": key, "text": text} for key, (text, _) in QUERIES.items()]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(row) for row in queries) + "\n")
    judged = "".join(f"{key}\t{document}\t1\n" for key, (_, document) in QUERIES.items())
    for split in ("train", "test"):
        (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + judged)
    return folder


def test_eval_reports_the_service_beside_a_bm25_baseline(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"

    assert evaluation.main([str(dataset), "--out", str(out)]) == 0

    report = json.loads((out / "eval.json").read_text())
    ours, baseline = report["ragwatch"], report["baseline"]
    assert (report["dataset"], report["split"], ours["queries"]) == ("mini", "test", 4)
    assert ours["metrics"]["ndcg@10"] == pytest.approx(1.0)  # each question names its document's words
    assert ours["metrics"]["recall@100"] == 1.0
    assert set(baseline["metrics"]) == {"ndcg@10", "recall@10", "recall@100"}
    assert 0.0 < baseline["metrics"]["ndcg@10"] <= 1.0
    assert ours["ingestion"]["documents"] == len(DOCUMENTS)
    assert ours["search_ms"]["p50"] > 0
    table = (out / "eval.md").read_text()
    assert "| ragwatch (hybrid, offline default) | 1.000 |" in table
    assert "| BM25 baseline (bm25s" in table


def test_tuning_fuses_the_train_queries_with_every_weight_and_names_the_best(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"

    assert evaluation.main([str(dataset), "--tune", "--out", str(out)]) == 0

    report = json.loads((out / "eval-tune.json").read_text())
    assert report["split"] == "train"
    assert list(report["tuning"]) == [str(weight) for weight in evaluation.TUNING_GRID]
    best = report["tuning"][report["best"]]["metrics"]["ndcg@10"]
    assert best == max(run["metrics"]["ndcg@10"] for run in report["tuning"].values())


def test_without_a_dataset_it_says_where_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluation.main([str(tmp_path / "nowhere")]) == 2

    assert "https://github.com/beir-cellar/beir" in capsys.readouterr().err
