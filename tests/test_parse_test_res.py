"""parse_test_res.py on generated output trees (CoOp-compatible output, results.json, tables, upstream's
rounded numbers by default, --exact, the docstring's examples)."""
from __future__ import annotations

import json
import math
import re
import shlex
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


# ----------------------------------------------------------------------------- upstream's numbers


def upstream_parse(directory: Path, end_signal: str = "Finish training") -> tuple[float, float]:
    """Upstream's algorithm, from its description: for each entry of ``directory``, sorted, the last
    ``* accuracy: x%`` match after the end signal in ``<entry>/log.txt`` only; mean and population
    std of the values found."""
    values = []
    for name in sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")):
        value, started = None, False
        for line in (directory / name / "log.txt").read_text().splitlines():
            line = line.strip()
            if line == end_signal:
                started = True
            match = re.search(r"\* accuracy: ([\.\deE+-]+)%", line)
            if started and match:
                value = float(match.group(1))
        if value is not None:
            values.append(value)
    return sum(values) / len(values), pop_std(values)


def make_rounding_tree(root: Path, exact=(59.74, 59.68, 59.74), eval_only: bool = False) -> Path:
    """Seed folders whose logs print the accuracy rounded to one decimal (as our evaluator does)
    next to results.json with the unrounded value."""
    for seed, acc in enumerate(exact, start=1):
        run = root / f"seed{seed}"
        run.mkdir(parents=True)
        log = (f"Loading trainer: MMLoP\n=> result\n* total: 1,000\n* accuracy: {acc:.1f}%\n"
               if eval_only else train_log(acc))
        (run / "log.txt").write_text(log)
        (run / "results.json").write_text(json.dumps({"accuracy": acc, "seed": seed}))
    return root


def test_default_prints_upstreams_rounded_numbers_and_exact_on_request(tmp_path, capsys):
    root = make_rounding_tree(tmp_path / "exp")
    mean, std = upstream_parse(root)
    assert f"{mean:.2f}" == "59.70"
    summary = parse_test_res.main([str(root)])
    out = capsys.readouterr().out
    assert summary["accuracy"] == pytest.approx(mean)
    assert f"* accuracy: {mean:.2f}% +- {std:.2f}%" in out and "* accuracy: 59.70% +- 0.00%" in out
    assert f"file: {root / 'seed1' / 'log.txt'}. accuracy: 59.70%. \n" in out

    exact = parse_test_res.main([str(root), "--exact"])
    out = capsys.readouterr().out
    assert exact["accuracy"] == pytest.approx(59.72)
    assert f"* accuracy: 59.72% +- {pop_std([59.74, 59.68, 59.74]):.2f}%" in out
    assert f"file: {root / 'seed1' / 'results.json'}. accuracy: 59.74%. " in out


def test_default_reads_log_txt_first_as_upstream(tmp_path, capsys):
    root = tmp_path / "exp"
    (root / "seed1").mkdir(parents=True)
    (root / "seed1" / "log.txt").write_text(train_log(70.1))
    (root / "seed1" / "log.txt-2026-01-02-03-04-05").write_text(train_log(75.0))   # a later re-run
    (root / "seed2").mkdir()
    (root / "seed2" / "log.txt").write_text(train_log(72.3))
    assert parse_test_res.main([str(root)])["accuracy"] == pytest.approx(upstream_parse(root)[0])
    # a run killed and resumed: the result is only in the timestamped log (upstream skips it)
    (root / "seed3").mkdir()
    (root / "seed3" / "log.txt").write_text(train_log(0.0, finished=False))
    (root / "seed3" / "log.txt-2026-01-02-03-04-05").write_text(train_log(74.5))
    capsys.readouterr()
    assert parse_test_res.main([str(root)])["accuracy"] == pytest.approx((70.1 + 72.3 + 74.5) / 3)
    assert "(upstream's parser reads only log.txt and would skip this run)" in capsys.readouterr().out
    # results.json alone: its value as the log would print it
    (root / "seed4").mkdir()
    (root / "seed4" / "results.json").write_text(json.dumps({"accuracy": 80.06}))
    records = parse_test_res.collect_results(str(root), exact=False)
    assert records[-1]["accuracy"] == 80.1 and records[-1]["rounded"]


def _docstring_commands() -> list[list[str]]:
    text = parse_test_res.__doc__.replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in text.splitlines()
            if line.strip().startswith("python parse_test_res.py")]


def test_docstring_examples_run_on_the_scripts_output_layout(tmp_path):
    """Every example of the module docstring finds results in a tree laid out as the run scripts
    write it (scripts/base2new_*.sh, scripts/xd_test.sh)."""
    out = tmp_path / "output"
    common = Path("dtd") / "shots_16" / "MMLoP" / "vit_b16_c2_ep30_batch4_4+4ctx"
    make_rounding_tree(out / "base2new" / "train_base" / common)
    make_rounding_tree(out / "base2new" / "test_new" / common, eval_only=True)
    xd = out / "evaluation" / "MMLoP" / "vit_b16_c2_ep30_batch4_4+4ctx_cross_datasets_16shots"
    for dataset in ("dtd", "imagenetv2"):
        make_rounding_tree(xd / dataset, eval_only=True)
    commands = _docstring_commands()
    assert len(commands) >= 4 and any("--multi-exp" in c for c in commands)
    for command in commands:
        argv = [sys.executable, str(REPO_ROOT / "parse_test_res.py"), *command[2:]]
        r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, (command, r.stdout[-2000:], r.stderr[-2000:])
        assert "Nothing found" not in r.stdout + r.stderr
        assert "* accuracy: 59.7" in r.stdout
    # the layout mistake of the old example gets a message saying where the runs are
    r = subprocess.run([sys.executable, str(REPO_ROOT / "parse_test_res.py"),
                        "output/base2new/train_base/", "--multi-exp"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "Nothing found" in r.stderr and "lie deeper" in r.stderr
    r = subprocess.run([sys.executable, str(REPO_ROOT / "parse_test_res.py"), str(xd)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "add --multi-exp" in r.stderr
