"""mmlop/results.py: the layout the scripts write, the one rule for evaluation-only logs (the same
number from parse_test_res.py and the sweep's tables), the seed and dataset aggregation, and
``--table`` leaving the tree it reads untouched."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import parse_test_res
from mmlop import results
from sweep import cli, tables

REPO = Path(__file__).resolve().parents[1]
PATH_LINE = re.compile(r"^(SOURCE|COMMON_DIR|MODEL_DIR|DIR)=.*$", re.M)


def script_paths(script: str, args: dict, env: dict) -> dict[str, str]:
    """The folders ``scripts/<script>`` computes: its own assignment lines, run by bash with the
    positional values (``DATASET``, ``SEED``, ...) and the environment of ``scripts/common.sh``."""
    found = list(PATH_LINE.finditer((REPO / "scripts" / script).read_text()))
    assert any(m.group(1) == "DIR" for m in found), f"scripts/{script} has no DIR= line"
    body = "\n".join(m.group(0) for m in found)
    assigns = "\n".join(f"{k}={v}" for k, v in args.items())
    out = subprocess.run(["bash", "-c", f"set -eu\n{assigns}\n{body}\necho \"DIR=$DIR\"\n"
                                        "echo \"MODEL_DIR=${MODEL_DIR:-}\""],
                         env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


ENV = {"OUTPUT": "out", "TRAINER": "MMLoP", "CFG": "cfg", "SHOTS": "4"}


@pytest.mark.parametrize("script, args, env, expected", [
    ("base2new_train.sh", {"DATASET": "dtd", "SEED": "2"}, ENV,
     {"DIR": results.base2new_dir("train_base", "dtd", 4, "MMLoP", "cfg", 2)}),
    ("base2new_test.sh", {"DATASET": "dtd", "SEED": "2"}, ENV,
     {"DIR": results.base2new_dir("test_new", "dtd", 4, "MMLoP", "cfg", 2),
      "MODEL_DIR": results.base2new_dir("train_base", "dtd", 4, "MMLoP", "cfg", 2)}),
    ("xd_train.sh", {"SEED": "3"}, ENV, {"DIR": results.few_shot_dir("imagenet", "MMLoP", "cfg", 4, 3)}),
    ("xd_train.sh", {"SEED": "3"}, dict(ENV, SOURCE="synthetic_src"),
     {"DIR": results.few_shot_dir("synthetic_src", "MMLoP", "cfg", 4, 3)}),
    ("xd_test.sh", {"DATASET": "caltech101", "SEED": "1"}, ENV,
     {"DIR": results.evaluation_dir("caltech101", "MMLoP", "cfg", 4, 1),
      "MODEL_DIR": results.few_shot_dir("imagenet", "MMLoP", "cfg", 4, 1)}),
    ("few_shot.sh", {"DATASET": "eurosat", "SEED": "1"}, ENV,
     {"DIR": results.few_shot_dir("eurosat", "MMLoP", "cfg", 4, 1)}),
    ("zeroshot.sh", {"DATASET": "dtd"}, ENV, {"DIR": results.zeroshot_dir("cfg", "dtd")}),
])
def test_the_scripts_write_the_module_layout(script, args, env, expected):
    got = script_paths(script, args, env)
    for key, rel in expected.items():
        assert got[key] == f"out/{rel}", (script, key)


def _write(path: Path, text: str = "", **record) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if text:
        (path / "log.txt").write_text(text)
    if record:
        (path / "results.json").write_text(json.dumps(record))
    return path


def test_find_reads_back_every_layout_the_module_writes(tmp_path):
    """A tree written through the layout functions (CoOp's extra level included) is found again,
    the cross-dataset training is not mistaken for a few-shot table, and the tables read it."""
    rel = [results.base2new_dir(split, "dtd", 16, "MMLoP", "c", 1) for split in results.BASE2NEW_SPLITS]
    rel += [results.few_shot_dir("imagenet", "MaPLe", "x", 16, 1), results.evaluation_dir("dtd", "MaPLe", "x", 16, 1),
            results.few_shot_dir("eurosat", "CoOp", "y/nctx16_cscFalse_ctpend", 2, 1),
            results.evaluation_dir("caltech101", "CoOp", "y/nctx16_cscFalse_ctpend", 2, 1),
            results.zeroshot_dir("vit_b16", "dtd")]
    for r in rel:
        _write(tmp_path / r, accuracy=50.0)
    assert rel[-3] == "eurosat/CoOp/y_2shots/nctx16_cscFalse_ctpend/seed1"
    assert rel[-2] == "evaluation/CoOp/y_2shots/nctx16_cscFalse_ctpend/caltech101/seed1"
    assert results.find_base2new(str(tmp_path)) == {("MMLoP", "c", 16): {"dtd"}}
    assert results.find_evaluations(str(tmp_path)) == {("MaPLe", "x", 16): {"dtd"},
                                                       ("CoOp", "y/nctx16_cscFalse_ctpend", 2): {"caltech101"}}
    assert results.find_few_shot(str(tmp_path)) == {("MaPLe", "x", 16): {"imagenet"},
                                                    ("CoOp", "y/nctx16_cscFalse_ctpend", 2): {"eurosat"}}
    assert results.find_zeroshot(str(tmp_path)) == {"vit_b16": {"dtd"}}
    tree = tables.Tree(str(tmp_path))
    assert set(tree.fs_methods()) == set()                          # both are cross-dataset trainings
    assert tree.source_of(tables.Method("MaPLe", "x", 16)) == "imagenet"
    with pytest.raises(ValueError, match="train_base, test_new"):
        results.base2new_dir("test_base", "dtd", 16, "MMLoP", "c")


def upstream_log(eval_only: bool, acc: float, *, finished: bool = True, val: float = 0.0,
                 declared: bool = True) -> str:
    """A log as train.py (ours and upstream's) writes it: a training (with a validation pass) or an
    evaluation; ``declared=False``: without the arguments (a log written by hand)."""
    head = f"** Arguments **\neval_only: {eval_only}\nseed: 1\n** Config **\n" if declared else ""
    train = "" if eval_only else ("epoch [1/2] batch [1/1] loss 1.0\nEvaluate on the *val* set\n=> result\n"
                                  f"* accuracy: {val:.1f}%\n")
    end = ("" if eval_only else "Finish training\n") + \
        f"Evaluate on the *test* set\n=> result\n* total: 100\n* accuracy: {acc:.1f}%\n"
    return head + train + (end if finished else "")


def test_a_log_says_whether_it_is_an_evaluation(tmp_path):
    evaluation = _write(tmp_path / "e", upstream_log(True, 61.5)) / "log.txt"
    training = _write(tmp_path / "t", upstream_log(False, 71.5, val=40.0)) / "log.txt"
    killed = _write(tmp_path / "k", upstream_log(False, 0.0, finished=False, val=40.0)) / "log.txt"
    bare = _write(tmp_path / "b", upstream_log(True, 51.5, declared=False)) / "log.txt"
    for test_log in (False, True):
        assert results.parse_log(str(evaluation), test_log=test_log) == 61.5
        assert results.parse_log(str(training), test_log=test_log) == 71.5     # the final test, not val
        assert results.parse_log(str(killed), test_log=test_log) is None        # never the val pass
    assert results.parse_log(str(bare), test_log=True) == 51.5
    assert results.parse_log(str(bare), test_log=False) is None                 # upstream: needs --test-log


def test_parse_test_res_and_the_tables_read_an_evaluation_only_training_run_alike(tmp_path, capsys):
    """Zero-shot CLIP's base-to-novel "training" is an evaluation: parse_test_res.py reads its
    train_base folder with or without --test-log, as the table's Base column does."""
    root = tmp_path / "out"
    for seed, (base, novel) in enumerate([(70.1, 60.2), (72.3, 64.4)], 1):
        for split, acc in zip(results.BASE2NEW_SPLITS, (base, novel)):
            _write(root / results.base2new_dir(split, "dtd", 16, "ZeroshotCLIP", "vit_b16", seed),
                   upstream_log(True, acc))
    # a killed training, resumed into a timestamped log: the resumed run's final test counts
    killed = _write(root / results.base2new_dir("train_base", "dtd", 16, "MMLoP", "c", 1),
                    upstream_log(False, 0.0, finished=False, val=33.3))
    (killed / "log.txt-2026-01-01-00-00-00").write_text(upstream_log(False, 88.8, val=30.0))
    _write(root / results.base2new_dir("test_new", "dtd", 16, "MMLoP", "c", 1), upstream_log(True, 66.6))

    base_dir = root / results.base2new_dir("train_base", "dtd", 16, "ZeroshotCLIP", "vit_b16")
    plain = parse_test_res.main([str(base_dir)])["accuracy"]
    assert plain == parse_test_res.main([str(base_dir), "--test-log"])["accuracy"] == pytest.approx(71.2)
    mmlop_base = parse_test_res.main([str(killed.parent)])["accuracy"]
    assert mmlop_base == parse_test_res.main([str(killed.parent), "--test-log"])["accuracy"] == 88.8
    capsys.readouterr()
    cells = {t.method["trainer"]: {r["name"]: r["cells"]["ours"] for r in t.rows}
             for t in tables.build_tables(tables.Tree(str(root)))}
    assert cells["ZeroshotCLIP"]["dtd"]["Base"].mean == plain
    assert cells["MMLoP"]["dtd"]["Base"].mean == mmlop_base
    assert cells["MMLoP"]["dtd"]["HM"] == pytest.approx(results.harmonic_mean(88.8, 66.6))


def test_aggregation_over_seeds_and_datasets():
    mean, std = results.summarize([70.0, 72.0, 74.0])
    assert mean == 72.0 and std == pytest.approx((8 / 3) ** 0.5)                   # population std
    assert results.summarize([70.0, 72.0, 74.0], ci95=True)[1] == pytest.approx(1.96 * std / 3 ** 0.5)
    with pytest.raises(ValueError):
        results.summarize([])
    assert results.harmonic_mean(80.0, 60.0) == pytest.approx(480 / 7) and results.harmonic_mean(0.0, 0.0) == 0.0
    # The papers' average row: HM of the averaged base and novel, over datasets with both numbers.
    b, n, hm = results.base2new_average([(90.0, 50.0), (70.0, 70.0), (80.0, None)])
    assert (b, n) == (80.0, 60.0) and hm == results.harmonic_mean(80.0, 60.0)
    assert hm != pytest.approx((results.harmonic_mean(90.0, 50.0) + 70.0) / 2)
    assert results.base2new_average([(80.0, None)]) is None
    assert results.average([1.0, None, 2.0]) == 1.5 and results.average([None]) is None


def test_table_leaves_the_tree_it_reads_untouched(tmp_path, capsys):
    root = tmp_path / "colleague"
    for split, acc in zip(results.BASE2NEW_SPLITS, (80.0, 70.0)):
        _write(root / results.base2new_dir(split, "dtd", 16, "MMLoP", "c", 1), accuracy=acc)
    before = sorted(p for p in root.rglob("*"))
    assert cli.main(["--table", str(root)]) == 0
    out = capsys.readouterr().out
    assert "| dtd " in out and "80.00" in out and "Tables written" not in out
    assert sorted(p for p in root.rglob("*")) == before
    assert cli.main(["--table", str(root), "--table-dir", str(tmp_path / "mine")]) == 0
    assert f"Tables written: {tmp_path / 'mine' / 'base2new.csv'}" in capsys.readouterr().out
    assert sorted(p for p in root.rglob("*")) == before


def test_the_zeroshot_protocol_runs_the_methods_that_do_not_train():
    from trainers.core.methods import registered_methods

    spec, _ = cli.spec_from_args(cli.build_parser().parse_args(["--protocol", "zeroshot"]), [])
    assert [t.trainer for t in spec.trainers] == [m.name for m in registered_methods() if not m.trains] \
        == ["ZeroshotCLIP"]
