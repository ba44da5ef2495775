"""parse_test_res.py on generated output trees (CoOp-compatible output, results.json, tables)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import parse_test_res

REPO_ROOT = Path(__file__).resolve().parents[1]


def train_log(acc: float, finished: bool = True) -> str:
    lines = ["** Arguments **",
             "epoch [1/1] batch [1/1] time 0.1 (0.1) data 0.0 (0.0) loss 1.0 (1.0) lr 1e-5 eta 0:00:00"]
    if finished:
        lines += ["Finish training", "Deploy the last-epoch model", "Evaluate on the *test* set", "=> result",
                  "* total: 1,000", "* correct: 700", f"* accuracy: {acc:.1f}%", f"* error: {100 - acc:.1f}%",
                  "* macro_f1: 60.0%", "Elapsed: 0:00:01"]
    return "\n".join(lines) + "\n"


def make_seed_tree(root: Path, accs=(70.1, 72.3, 74.5)) -> Path:
    (root / "seed1").mkdir(parents=True)
    (root / "seed1" / "log.txt").write_text(train_log(accs[0]))
    # seed2: killed run in log.txt, resumed run in the timestamped log
    (root / "seed2").mkdir()
    (root / "seed2" / "log.txt").write_text(train_log(0.0, finished=False))
    (root / "seed2" / "log.txt-2026-01-02-03-04-05").write_text(train_log(accs[1]))
    # seed3: results.json (full precision) next to a log
    (root / "seed3").mkdir()
    (root / "seed3" / "log.txt").write_text(train_log(round(accs[2], 1)))
    (root / "seed3" / "results.json").write_text(
        json.dumps({"split": "test", "accuracy": accs[2], "error_rate": 100 - accs[2], "seed": 3}))
    # stray entries
    (root / "README.md").write_text("notes")
    (root / "seed4_unfinished_copy").mkdir()
    return root


def pop_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def test_collect_results_reads_logs_and_results_json(tmp_path):
    root = make_seed_tree(tmp_path / "exp")
    results = parse_test_res.collect_results(str(root))
    assert [r["run"] for r in results] == ["seed1", "seed2", "seed3"]
    assert [r["accuracy"] for r in results] == [70.1, 72.3, 74.5]
    assert results[1]["source"].endswith("log.txt-2026-01-02-03-04-05")
    assert results[2]["source"].endswith("results.json") and results[2]["seed"] == 3


def test_cli_prints_mean_and_std_and_skips_strays(tmp_path, capsys):
    root = make_seed_tree(tmp_path / "exp")
    summary = parse_test_res.main([str(root)])
    out = capsys.readouterr().out
    values = [70.1, 72.3, 74.5]
    assert summary["accuracy"] == pytest.approx(sum(values) / 3)
    assert f"Parsing files in {root}" in out
    assert f"file: {root / 'seed1' / 'log.txt'}. accuracy: 70.10%. \n" in out
    assert f"* accuracy: 72.30% +- {pop_std(values):.2f}%" in out and f"{pop_std(values):.2f}" == "1.80"
    assert f"Summary of directory: {root}" in out
    assert f"Skipping {root / 'seed4_unfinished_copy'}: no log.txt or results.json" in out
    assert "mean ± std" in out and "72.30 ± 1.80" in out


def test_ci95(tmp_path, capsys):
    root = make_seed_tree(tmp_path / "exp")
    parse_test_res.main([str(root), "--ci95"])
    ci = 1.96 * pop_std([70.1, 72.3, 74.5]) / math.sqrt(3)
    assert f"* accuracy: 72.30% +- {ci:.2f}%" in capsys.readouterr().out


def test_test_log_mode_and_keyword(tmp_path, capsys):
    root = tmp_path / "eval"
    for seed, acc in ((1, 50.0), (2, 60.0), (3, 70.0)):
        run = root / f"seed{seed}"
        run.mkdir(parents=True)
        run.joinpath("log.txt").write_text(
            f"Loading trainer: CoOp\nEvaluate on the *test* set\n=> result\n* total: 10\n* accuracy: {acc:.1f}%\n"
            f"* error: {100 - acc:.1f}%\n* macro_f1: {acc - 5:.1f}%\n"
        )
    with pytest.raises(ValueError, match="Nothing found"):
        parse_test_res.main([str(root)])  # no "Finish training" in eval-only logs
    capsys.readouterr()
    assert parse_test_res.main([str(root), "--test-log"])["accuracy"] == pytest.approx(60.0)
    assert "* accuracy: 60.00% +- 8.16%" in capsys.readouterr().out
    assert parse_test_res.main([str(root), "--test-log", "--keyword", "macro_f1"])["macro_f1"] == pytest.approx(55.0)


def test_multi_exp_averages_experiment_means(tmp_path, capsys):
    root = tmp_path / "all"
    make_seed_tree(root / "a_exp")
    make_seed_tree(root / "b_exp", accs=(80.0, 82.0, 84.0))
    (root / "c_empty").mkdir()
    summary = parse_test_res.main([str(root), "--multi-exp"])
    out = capsys.readouterr().out
    assert summary["accuracy"] == pytest.approx((72.3 + 82.0) / 2)
    assert "Average performance\n* accuracy: 77.15%" in out
    assert f"Skipping {root / 'c_empty'}" in out


def test_script_runs_from_the_command_line(tmp_path):
    root = make_seed_tree(tmp_path / "exp")
    result = subprocess.run([sys.executable, "parse_test_res.py", str(root)], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "* accuracy: 72.30% +- 1.80%" in result.stdout
