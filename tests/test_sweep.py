"""scripts/sweep.py without training: the jobs and their commands (as scripts/*.sh), sweep files,
inconsistent outputs, the ETA, the tables (equal to parse_test_res.py's numbers), --compare against
upstream-format logs, and the Slurm path with a fake sbatch (parameters, throttle, requeue,
dependencies, checkpointing). The end-to-end runs are in test_sweep_e2e.py."""
from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

import parse_test_res
from sweep import cli, tables
from sweep.backends import SlurmBackend, SubmititLocalBackend, parse_time_minutes
from sweep.engine import estimate_eta
from sweep.jobs import Job, plan
from sweep.runner import TrainPyCall
from sweep.spec import DOMAIN_SHIFTS, SweepSpec, TrainerEntry, load_sweep_file
from sweep.state import DONE, INCONSISTENT, PENDING, RUNNING, assess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMLOP_B2N = "vit_b16_c2_ep30_batch4_4+4ctx"


def _spec(tmp_path, **kw) -> SweepSpec:
    kw.setdefault("data", str(tmp_path / "data"))
    kw.setdefault("output", str(tmp_path / "out"))
    return SweepSpec(**kw)


# ---- jobs and commands ---------------------------------------------------------------------------
def test_base2new_jobs_are_the_scripts_commands(tmp_path):
    p = plan(_spec(tmp_path, protocols=("base2new",), trainers=(TrainerEntry("MMLoP"), TrainerEntry("ZeroshotCLIP")),
                   datasets=("dtd",), seeds=(1,), opts=("OPTIM.MAX_EPOCH", "3")))
    d, o = str(tmp_path / "data"), str(tmp_path / "out")
    jobs = {(j.trainer, j.kind): j for j in p.jobs}
    assert [j.id for j in p.jobs][:2] == [f"base2new/train_base/dtd/shots_16/MMLoP/{MMLOP_B2N}/seed1",
                                          f"base2new/test_new/dtd/shots_16/MMLoP/{MMLOP_B2N}/seed1"]
    common = ["--root", d, "--seed", "1", "--trainer", "MMLoP", "--dataset-config-file", "configs/datasets/dtd.yaml",
              "--config-file", f"configs/trainers/MMLoP/{MMLOP_B2N}.yaml"]
    train_dir = f"{o}/base2new/train_base/dtd/shots_16/MMLoP/{MMLOP_B2N}/seed1"
    # base2new_train.sh: train_py ... DATASET.NUM_SHOTS $SHOTS DATASET.SUBSAMPLE_CLASSES base "$@"
    assert list(jobs["MMLoP", "train"].argv) == common + [
        "--output-dir", train_dir, "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
        "OPTIM.MAX_EPOCH", "3"]
    # base2new_test.sh: --model-dir/--load-epoch (OPTIM.MAX_EPOCH after the opts), --eval-only, new
    assert list(jobs["MMLoP", "test"].argv) == common + [
        "--output-dir", f"{o}/base2new/test_new/dtd/shots_16/MMLoP/{MMLOP_B2N}/seed1", "--model-dir", train_dir,
        "--load-epoch", "3", "--eval-only", "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "new",
        "OPTIM.MAX_EPOCH", "3"]
    assert jobs["MMLoP", "test"].deps == (jobs["MMLoP", "train"].id,)
    # ZeroshotCLIP trains nothing: --eval-only in both, no model, no dependency.
    zs_train, zs_test = jobs["ZeroshotCLIP", "train"], jobs["ZeroshotCLIP", "test"]
    assert "--eval-only" in zs_train.argv and "--model-dir" not in zs_test.argv and zs_test.deps == ()
    assert zs_train.argv[zs_train.argv.index("--output-dir") + 2] == "--eval-only"


def test_xd_dg_few_shot_zeroshot_jobs(tmp_path):
    d, o = str(tmp_path / "data"), str(tmp_path / "out")
    p = plan(_spec(tmp_path, protocols=("xd", "dg"), trainers=(TrainerEntry("MaPLe"),), seeds=(2,)))
    cfg = "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"
    train = [j for j in p.jobs if j.kind == "train"]
    assert len(train) == 1 and train[0].protocols == ("xd", "dg")         # one ImageNet training for both
    assert train[0].output_dir == f"{o}/imagenet/MaPLe/{cfg}_16shots/seed2"
    assert list(train[0].argv[-2:]) == ["DATASET.NUM_SHOTS", "16"]
    targets = [j.dataset for j in p.jobs if j.kind == "test"]
    assert targets[:10] == ["caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                            "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101"]
    assert targets[10:] == ["imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"]
    sketch = next(j for j in p.jobs if j.dataset == "imagenet_sketch")
    # xd_test.sh: no DATASET.NUM_SHOTS, all classes, the xd training's last epoch
    assert list(sketch.argv) == [
        "--root", d, "--seed", "2", "--trainer", "MaPLe", "--dataset-config-file",
        "configs/datasets/imagenet_sketch.yaml", "--config-file", f"configs/trainers/MaPLe/{cfg}.yaml", "--output-dir",
        f"{o}/evaluation/MaPLe/{cfg}_16shots/imagenet_sketch/seed2", "--model-dir", train[0].output_dir,
        "--load-epoch", "2", "--eval-only"]
    assert sketch.deps == (train[0].id,)

    fs = plan(_spec(tmp_path, protocols=("few_shot",), trainers=(TrainerEntry("PromptSRC"),), datasets=("eurosat",),
                    seeds=(1,), shots=(4,)))
    (job,) = fs.jobs
    assert job.output_dir == f"{o}/eurosat/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot_4shots/seed1"
    assert list(job.argv[-2:]) == ["DATASET.NUM_SHOTS", "4"] and job.deps == ()
    assert len(plan(_spec(tmp_path, protocols=("few_shot",), trainers=(TrainerEntry("CoOp"),), seeds=(1, 2, 3)))
               .jobs) == 11 * 5 * 3

    zs = plan(_spec(tmp_path, protocols=("zeroshot",), trainers=(TrainerEntry("ZeroshotCLIP", "vit_b16_ensemble"),),
                    datasets=("dtd",)))
    (job,) = zs.jobs
    assert list(job.argv) == ["--root", d, "--trainer", "ZeroshotCLIP", "--dataset-config-file",
                              "configs/datasets/dtd.yaml", "--config-file",
                              "configs/trainers/ZeroshotCLIP/vit_b16_ensemble.yaml", "--output-dir",
                              f"{o}/ZeroshotCLIP/vit_b16_ensemble/dtd", "--eval-only"]


def test_full_base2new_row_is_66_jobs_and_bad_input_is_refused(tmp_path):
    assert len(plan(_spec(tmp_path, protocols=("base2new",))).jobs) == 66
    with pytest.raises(ValueError, match="no configs/datasets/<name>.yaml for: no_such"):
        plan(_spec(tmp_path, datasets=("no_such",)))
    with pytest.raises(ValueError, match="no trainer named 'Nope'"):
        plan(_spec(tmp_path, trainers=(TrainerEntry("Nope"),)))
    with pytest.raises(ValueError, match="zeroshot protocol runs ZeroshotCLIP only"):
        plan(_spec(tmp_path, protocols=("zeroshot",)))
    # The same config with different opts would share a folder: refused unless one is renamed.
    rows = (TrainerEntry("MMLoP"), TrainerEntry("MMLoP", opts=("TRAINER.MMLOP.RANK", "2")))
    with pytest.raises(ValueError, match="two jobs write to"):
        plan(_spec(tmp_path, trainers=rows, datasets=("dtd",), seeds=(1,)))
    renamed = plan(_spec(tmp_path, trainers=(rows[0], TrainerEntry("MMLoP", opts=rows[1].opts, folder="rank2")),
                         datasets=("dtd",), seeds=(1,)))
    assert {j.folder for j in renamed.jobs} == {MMLOP_B2N, "rank2"}


def test_sweep_file_and_flags(tmp_path, capsys):
    path = tmp_path / "ablation.yaml"
    path.write_text(textwrap.dedent(f"""\
        protocol: base2new
        datasets: [dtd, eurosat]
        seeds: [1, 2]
        data: {tmp_path / 'data'}
        output: {tmp_path / 'out'}
        trainers:
          - MMLoP:vit_b16_c2_ep30_batch4_4+4ctx_abl1_ivlp
          - trainer: PromptSRC
            opts: {{TRAINER.PROMPTSRC.GPA: False}}
        opts: [OPTIM.MAX_EPOCH, 2]
        backend: {{name: local, workers: 2}}
        """))
    spec, backend = load_sweep_file(str(path))
    assert spec.name == "ablation" and spec.seeds == (1, 2) and backend == {"name": "local", "workers": 2}
    assert spec.trainers[1].opts == ("TRAINER.PROMPTSRC.GPA", "False") and spec.opts == ("OPTIM.MAX_EPOCH", "2")
    assert cli.main([str(path), "--seeds", "3", "--dry-run", "--", "TRAIN.PRINT_FREQ", "7"]) == 0
    out = capsys.readouterr().out
    assert "Sweep ablation: 8 jobs" in out
    assert "shots_16/MMLoP/vit_b16_c2_ep30_batch4_4+4ctx_abl1_ivlp/seed3 DATASET.NUM_SHOTS 16 " \
           "DATASET.SUBSAMPLE_CLASSES base OPTIM.MAX_EPOCH 2 TRAIN.PRINT_FREQ 7" in out
    assert "--load-epoch 2" in out and "bash scripts/base2new_test.sh eurosat 3" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol: base2new\ntrainer: MMLoP\n")
    assert cli.main([str(bad), "--dry-run"]) == 2
    assert "unknown keys ['trainer']" in capsys.readouterr().err


@pytest.mark.parametrize("name,jobs", [("base2new", 2 * 66), ("ablation", 6 * 66), ("xd_dg", 3 * 15),
                                       ("few_shot", 11 * 5 * 3)])
def test_example_sweep_files(tmp_path, name, jobs):
    spec, _ = load_sweep_file(os.path.join(REPO, "sweep", "examples", f"{name}.yaml"))
    p = plan(replace(spec, output=str(tmp_path / "out")))
    assert len(p.jobs) == jobs and spec.name == name
    if name == "ablation":
        assert len({j.folder for j in p.jobs}) == 6 and p.jobs[0].label == "IVLP (full rank, CE only)"


def test_one_driver_per_sweep(tmp_path):
    import fcntl

    from sweep.backends import LocalBackend
    from sweep.engine import Engine, SweepBusy

    sdir = tmp_path / "state"
    sdir.mkdir()
    fd = os.open(sdir / "driver.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"PID 1 on elsewhere\n")
    with pytest.raises(SweepBusy, match="PID 1 on elsewhere"):
        Engine([], str(sdir), LocalBackend(1), progress=False).run()
    os.close(fd)
    assert Engine([], str(sdir), LocalBackend(1), progress=False).run().complete


def test_time_limits():
    assert parse_time_minutes("4:00:00") == 240 and parse_time_minutes("1-00:00") == 1440
    assert parse_time_minutes(90) == 90 and parse_time_minutes("45") == 45 and parse_time_minutes("1:30") == 2


# ---- state on disk -------------------------------------------------------------------------------
def _write_results(directory, **fields):
    os.makedirs(directory, exist_ok=True)
    record = {"accuracy": 50.0, "trainer": "MMLoP", "seed": 1, "num_shots": 1, "subsample_classes": "base",
              "backbone": "ViT-B/16", "epoch": 2, "num_classes": 50}
    record.update(fields)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(record, f)


def test_inconsistent_outputs_are_reported_not_reused(tmp_path):
    p = plan(_spec(tmp_path, trainers=(TrainerEntry("MMLoP"),), datasets=("dtd", "eurosat"), seeds=(1,), shots=(1,),
                   opts=("OPTIM.MAX_EPOCH", "2")))
    jobs = {(j.dataset, j.kind): j for j in p.jobs}
    # dtd: the test has results but its training never finished.
    _write_results(jobs["dtd", "test"].dir, subsample_classes="new")
    # eurosat: a finished training, a test written with another seed.
    _write_results(jobs["eurosat", "train"].dir)
    time.sleep(0.01)
    _write_results(jobs["eurosat", "test"].dir, subsample_classes="new", seed=7)
    states = assess(p.jobs, str(tmp_path / "state"))
    assert states[jobs["dtd", "train"].id].state == PENDING
    a = states[jobs["dtd", "test"].id]
    assert a.state == INCONSISTENT and "has no results.json" in a.reason
    assert f"Remove {jobs['dtd', 'test'].dir}" in a.reason
    assert states[jobs["eurosat", "train"].id].state == DONE
    assert states[jobs["eurosat", "test"].id].state == INCONSISTENT
    assert "seed = 7, this job expects 1" in states[jobs["eurosat", "test"].id].reason
    # A live train.py holding the output-folder lock is running, not pending.
    os.makedirs(jobs["dtd", "train"].dir, exist_ok=True)
    with open(os.path.join(jobs["dtd", "train"].dir, ".lock"), "w") as f:
        f.write(f"PID {os.getpid()} on {os.uname().nodename}\n")
    assert assess(p.jobs, str(tmp_path / "state"))[jobs["dtd", "train"].id].state == RUNNING


def test_eta_from_finished_durations():
    def job(i, kind):
        return Job(id=f"j{i}", kind=kind, protocol="base2new", trainer="T", cfg="c", folder="c", dataset="d", seed=1,
                   shots=1, output_dir=f"/x/{i}", argv=())

    jobs = [job(0, "train"), job(1, "test"), job(2, "train"), job(3, "test"), job(4, "train")]
    statuses = {"j0": DONE, "j1": DONE, "j2": RUNNING, "j3": PENDING, "j4": PENDING}
    assert estimate_eta(jobs, statuses, {}, {}, 2) is None
    eta = estimate_eta(jobs, statuses, {"j0": 100.0, "j1": 10.0}, {"j2": 940.0}, 2, now=1000.0)
    assert eta == pytest.approx((40 + 10 + 100) / 2)


# ---- tables --------------------------------------------------------------------------------------
def _b2n_tree(root, trainer="MMLoP", cfg="c", values=None, shots=16):
    values = values or {"dtd": ([70.0, 72.0], [60.0, 64.0]), "eurosat": ([90.0, 80.0], [50.0, 70.0])}
    for dataset, (base, novel) in values.items():
        for split, accs in (("train_base", base), ("test_new", novel)):
            for seed, acc in enumerate(accs, 1):
                _write_results(os.path.join(root, "base2new", split, dataset, f"shots_{shots}", trainer, cfg,
                                            f"seed{seed}"), accuracy=acc, seed=seed, num_shots=shots)


def test_base2new_table_equals_parse_test_res(tmp_path, capsys):
    root = tmp_path / "out"
    _b2n_tree(str(root))
    (table,) = tables.build_tables(tables.Tree(str(root)), sel=tables.Selection(datasets={"base2new": [
        "dtd", "eurosat", "ucf101"]}))
    rows = {r["name"]: r["cells"]["ours"] for r in table.rows}
    for dataset in ("dtd", "eurosat"):
        for col, split in (("Base", "train_base"), ("Novel", "test_new")):
            folder = root / "base2new" / split / dataset / "shots_16" / "MMLoP" / "c"
            expected = parse_test_res.parse_function(str(folder), test_log=True)["accuracy"]
            assert rows[dataset][col].mean == expected
            values = [r["accuracy"] for r in parse_test_res.collect_results(str(folder), test_log=True)]
            assert rows[dataset][col].std == parse_test_res.summarize(values)[1]
    capsys.readouterr()
    assert rows["ucf101"] == {"Base": None, "Novel": None, "HM": None}
    avg = rows["Average (2/3)"]
    assert avg["Base"] == pytest.approx((71 + 85) / 2) and avg["Novel"] == pytest.approx((62 + 60) / 2)
    assert avg["HM"] == pytest.approx(tables.harmonic_mean(78.0, 61.0))      # HM of the averages
    md = tables.to_markdown(table)
    assert "| dtd " in md and "71.00 ± 1.00" in md
    ucf = next(line for line in md.splitlines() if line.startswith("| ucf101"))
    assert [c.strip() for c in ucf.split("|")[1:-1]] == ["ucf101", "–", "–", "–", ""]     # missing, never 0
    paths = tables.write_tables([table], str(tmp_path / "t"))
    csv_text = open(paths[0]).read()
    assert csv_text.splitlines()[0].startswith("protocol,trainer,config,shots,dataset,Base,Base std,Base seeds")
    assert "ucf101,,,,,," in csv_text.replace("\r", "")
    data = json.load(open(paths[1]))
    assert data[0]["rows"][0]["cells"]["ours"]["Base"]["values"] == [70.0, 72.0]


def test_seeds_column_counts_the_seeds_asked_and_lists_the_missing_ones(tmp_path):
    root = str(tmp_path / "out")
    _b2n_tree(root, values={"dtd": ([70.0, 72.0], [60.0]), "eurosat": ([90.0], [50.0])})
    sel = tables.Selection(datasets={"base2new": ["dtd", "eurosat"]}, seeds=[1, 2])
    md = tables.to_markdown(tables.build_tables(tables.Tree(root), sel=sel)[0])
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip()
            for line in md.splitlines() if line.startswith("| ")}
    assert rows["dtd"] == "Base 2/2, Novel 1/2" and rows["eurosat"] == "1/2"
    assert "missing seeds (of seed1, seed2): dtd Novel: seed2; eurosat Base: seed2; eurosat Novel: seed2" in md
    # --table over a tree (no sweep): the seeds found anywhere in the table are the ones expected.
    md = tables.to_markdown(tables.build_tables(tables.Tree(root), sel=tables.Selection(datasets={
        "base2new": ["dtd", "eurosat"]}))[0])
    assert "| eurosat " in md and "missing seeds (of seed1, seed2)" in md


def test_dataset_specific_default_config_is_one_table_row(tmp_path):
    """CoOp's base-to-novel default has its own ImageNet recipe: the sweep runs each dataset with the
    config the scripts pick, and the tables put both folders in one row with an 11-dataset average."""
    p = plan(_spec(tmp_path, protocols=("base2new",), trainers=(TrainerEntry("CoOp"),),
                   datasets=("imagenet", "dtd"), seeds=(1,)))
    tests = {j.dataset: j for j in p.jobs if j.kind == "test"}
    assert tests["imagenet"].folder == "vit_b16_ep50_ctxv1" and tests["dtd"].folder == "vit_b16_ctxv1"
    assert tests["imagenet"].argv[tests["imagenet"].argv.index("--load-epoch") + 1] == "50"
    assert tests["dtd"].argv[tests["dtd"].argv.index("--load-epoch") + 1] == "200"
    assert {j.label for j in p.jobs} == {"CoOp/vit_b16_ctxv1"}
    root = str(tmp_path / "tree")
    _b2n_tree(root, "CoOp", "vit_b16_ctxv1", {"dtd": ([70.0], [60.0])})
    _b2n_tree(root, "CoOp", "vit_b16_ep50_ctxv1", {"imagenet": ([76.0], [67.0])})
    (table,) = tables.build_tables(tables.Tree(root))
    rows = {r["name"]: r["cells"]["ours"] for r in table.rows}
    assert rows["imagenet"]["Base"].mean == 76.0 and rows["dtd"]["Novel"].mean == 60.0
    assert "imagenet: vit_b16_ep50_ctxv1" in table.title
    assert rows["Average"]["Base"] == pytest.approx(73.0)


def test_xd_dg_few_shot_zeroshot_tables(tmp_path):
    root = str(tmp_path / "out")
    for seed, acc in ((1, 70.0), (2, 72.0)):
        _write_results(f"{root}/imagenet/MaPLe/x_16shots/seed{seed}", accuracy=acc, seed=seed)
        for d, a in (("caltech101", 90.0), ("dtd", 45.0), ("imagenetv2", 64.0), ("imagenet_r", 77.0)):
            _write_results(f"{root}/evaluation/MaPLe/x_16shots/{d}/seed{seed}", accuracy=a + seed, seed=seed)
        for k in (1, 4):
            _write_results(f"{root}/dtd/CoOp/y_{k}shots/seed{seed}", accuracy=40.0 + k + seed, seed=seed, num_shots=k)
    _write_results(f"{root}/ZeroshotCLIP/vit_b16/dtd", accuracy=44.0)
    found = {t.protocol: t for t in tables.build_tables(tables.Tree(root))}
    assert set(found) == {"xd", "dg", "few_shot", "zeroshot"}       # the xd training is not a few-shot run
    xd = {r["name"]: r["cells"]["ours"]["Accuracy"] for r in found["xd"].rows}
    assert list(xd) == ["imagenet (source)", "caltech101", "dtd", "Average (targets)"]
    assert xd["imagenet (source)"].mean == 71.0 and xd["Average (targets)"] == pytest.approx((91.5 + 46.5) / 2)
    dg = {r["name"]: r["cells"]["ours"]["Accuracy"] for r in found["dg"].rows}
    assert list(dg) == ["imagenet (source)", "imagenetv2", "imagenet_r", "Average (targets)"]
    assert dg["Average (targets)"] == pytest.approx((65.5 + 78.5) / 2)
    fs = found["few_shot"]
    assert fs.columns == ["1 shot", "4 shots"]
    assert fs.rows[0]["cells"]["ours"]["4 shots"].mean == parse_test_res.parse_function(
        f"{root}/dtd/CoOp/y_4shots", test_log=True)["accuracy"]
    assert found["zeroshot"].rows[0]["cells"]["ours"]["Accuracy"].mean == 44.0


def test_dg_targets_follow_the_source(tmp_path):
    """The proxy benchmark's source (synthetic_src): its shifted copies form the DG table in the
    sweep's own order, the other targets the cross-dataset table, with no selection given; and
    ``--datasets all`` of ``dg`` means the source's shifted copies, refused for a source with none."""
    root = str(tmp_path / "out")
    shifted = DOMAIN_SHIFTS["synthetic_src"]
    for seed in (1, 2):
        _write_results(f"{root}/synthetic_src/MMLoP/t_16shots/seed{seed}", accuracy=70.0, seed=seed)
        for d in (*reversed(shifted), "synthetic_xd_both", "synthetic_xd_colours"):
            _write_results(f"{root}/evaluation/MMLoP/t_16shots/{d}/seed{seed}", accuracy=50.0, seed=seed)
    found = {t.protocol: t for t in tables.build_tables(tables.Tree(root))}
    assert [r["name"] for r in found["dg"].rows] == ["synthetic_src (source)", *shifted, "Average (targets)"]
    assert [r["name"] for r in found["xd"].rows] == ["synthetic_src (source)", "synthetic_xd_both",
                                                     "synthetic_xd_colours", "Average (targets)"]
    dg = plan(_spec(tmp_path, protocols=("dg",), source="synthetic_src", seeds=(1,)))
    assert sorted({j.dataset for j in dg.jobs if j.kind != "train"}) == sorted(shifted)
    with pytest.raises(ValueError, match="no domain-generalization targets known for source 'dtd'"):
        plan(_spec(tmp_path, protocols=("dg",), source="dtd"))


UPSTREAM_LOG = """\
***************
** Arguments **
***************
backbone: ViT-B/16
config_file: configs/trainers/MMLoP/c.yaml
eval_only: {eval_only}
load_epoch: {load_epoch}
output_dir: {output_dir}
seed: {seed}
************
** Config **
************
DATASET:
  NAME: DescribableTextures
  NUM_SHOTS: {shots}
  SUBSAMPLE_CLASSES: {sub}
MODEL:
  BACKBONE:
    NAME: ViT-B/16
OPTIM:
  MAX_EPOCH: 20
  NAME: sgd
Collecting env info ...
Loading trainer: MMLoP
---------  -------------------
Dataset    DescribableTextures
# classes  24
# train_x  384
---------  -------------------
{train}Evaluate on the *test* set
=> result
* total: 864
* correct: 700
* accuracy: {acc:.1f}%
* error: {err:.1f}%
* macro_f1: {acc:.1f}%
"""


def _upstream_log(path, acc, seed, sub, eval_only, shots=16):
    os.makedirs(path, exist_ok=True)
    train = "" if eval_only else (
        "epoch [20/20] batch [96/96] time 0.1 (0.1) data 0.0 (0.0) loss 0.1 (0.1) lr 1.0e-06 eta 0:00:00\n"
        "Checkpoint saved to x\nFinish training\nDeploy the last-epoch model\n")
    with open(os.path.join(path, "log.txt"), "w") as f:
        f.write(UPSTREAM_LOG.format(eval_only=eval_only, load_epoch=20 if eval_only else None, output_dir=path,
                                    seed=seed, shots=shots, sub=sub, train=train, acc=acc, err=100 - acc))


def test_compare_with_an_upstream_tree(tmp_path, capsys):
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "upstream")
    _b2n_tree(ours, values={"dtd": ([70.0, 72.0], [60.0, 64.0])}, shots=16)
    for seed, (b, n) in enumerate([(80.5, 61.2), (81.5, 63.4)], 1):
        _upstream_log(f"{theirs}/base2new/train_base/dtd/shots_16/MMLoP/c/seed{seed}", b, seed, "base", False)
        _upstream_log(f"{theirs}/base2new/test_new/dtd/shots_16/MMLoP/c/seed{seed}", n, seed, "new", True)
    assert cli.main(["--table", ours, "--compare", f"{theirs}:upstream", "--table-dir", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| Dataset"))
    for col in ("Base", "Novel", "HM", "Base [upstream]", "Novel [upstream]", "HM [upstream]", "Δ Base [upstream]",
                "Δ HM [upstream]"):
        assert f" {col} " in header, header
    dtd = next(line for line in out.splitlines() if line.startswith("| dtd"))
    cells = [c.strip() for c in dtd.split("|")[2:-1]]
    # upstream means are what parse_test_res.py reads from the logs
    up_base = parse_test_res.parse_function(f"{theirs}/base2new/train_base/dtd/shots_16/MMLoP/c", test_log=True)
    assert up_base["accuracy"] == pytest.approx(81.0)
    assert cells[:3] == ["71.00 ± 1.00", "62.00 ± 2.00", f"{tables.harmonic_mean(71, 62):.2f}"]
    assert cells[4:7] == ["81.00 ± 0.50", "62.30 ± 1.10", f"{tables.harmonic_mean(81, 62.3):.2f}"]
    assert cells[7:10] == ["+10.00", "+0.30", f"{tables.harmonic_mean(81, 62.3) - tables.harmonic_mean(71, 62):+.2f}"]
    # settings differ: ours ran 2 epochs with 50 classes, the logs say 20 epochs and 24 classes
    assert "⚠ settings differ: epochs 2 (ours) vs 20 (upstream)" in out
    assert "classes 50 (ours) vs 24 (upstream)" in out
    assert os.path.isfile(tmp_path / "t" / "base2new.csv")


# ---- Slurm (fake sbatch) and submitit's checkpointing -------------------------------------------
def _fake_slurm_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        n=$(cat {tmp_path}/count 2>/dev/null || echo 1000)
        n=$((n + 1)); echo $n > {tmp_path}/count
        cp "$1" {tmp_path}/sbatch_$n.sh
        echo "Submitted batch job $n"
        """))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_slurm_submission_parameters_a_test_cluster_cannot_check(tmp_path, monkeypatch, capsys):
    """What the single-node test cluster (tests/test_slurm_cluster.py) cannot check, with a fake
    sbatch: partition, account, QOS, memory, CPUs, a constraint and a GPU line reach the sbatch
    script (the test cluster has none of those partitions, accounts or GPUs); a GPU option given
    through --slurm-param replaces ours instead of adding a second line."""
    monkeypatch.setenv("PATH", f"{_fake_slurm_bin(tmp_path)}:{os.environ['PATH']}")
    out = str(tmp_path / "out")
    argv = ["--protocol", "base2new", "--trainers", "MMLoP", "--datasets", "synthetic_clean", "--seeds", "1",
            "--shots", "1", "--data", str(tmp_path / "data"), "--output", out,
            "--backend", "slurm", "--partition", "gpu", "--gpus-per-job", "1", "--cpus-per-job", "8", "--mem-gb", "32",
            "--time", "1:30:00", "--account", "proj", "--qos", "high", "--signal-delay", "300",
            "--slurm-param", "constraint=a100", "--no-follow", "--name", "b2n"]
    assert cli.main(argv) == 0                         # submitted: nothing failed
    text = capsys.readouterr().out
    assert "submitted 2 jobs to Slurm" in text and "--status --name b2n --output" in text
    first = (tmp_path / "sbatch_1001.sh").read_text()
    for flag in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=32GB", "--time=90",
                 "--account=proj", "--qos=high", "--constraint=a100", "--requeue", "--signal=USR2@300",
                 "--job-name=mmlop/base2new/MMLoP/synthetic_clean/seed1/train"):
        assert f"#SBATCH {flag}\n" in first, flag
    sdir = os.path.join(out, ".sweep", "b2n")
    assert f"#SBATCH --output={sdir}/submitit/%j/%j_0_log.out\n" in first
    # --slurm-param gpus-per-node=2 is the only GPU line.
    out2 = str(tmp_path / "out2")
    argv2 = [a if a != out else out2 for a in argv] + ["--slurm-param", "gpus-per-node=2"]
    assert cli.main(argv2) == 0
    third = (tmp_path / "sbatch_1003.sh").read_text()
    sbatch_lines = [ln for ln in third.splitlines() if ln.startswith("#SBATCH")]    # not the checkout's path
    assert [ln for ln in sbatch_lines if "gpu" in ln and "partition" not in ln] == ["#SBATCH --gpus-per-node=2"]


def test_backend_parameters_as_submitit_gets_them(tmp_path):
    b = SlurmBackend(str(tmp_path), partition="p", gpus_per_job=2, time="2:00:00", max_running=5, qos="q")
    params = b.parameters("mmlop/x", dependency="afterok:7")
    assert params["slurm_partition"] == "p" and params["gpus_per_node"] == 2 and params["timeout_min"] == 120
    assert params["slurm_qos"] == "q" and params["name"] == "mmlop/x"
    assert params["slurm_additional_parameters"] == {"requeue": True, "kill-on-invalid-dep": "yes"}
    assert params["slurm_dependency"] == "afterok:7" and b.max_requeues == 3
    assert "gpus_per_node" not in SlurmBackend(str(tmp_path), gpus_per_job=0).parameters()


def test_a_time_limit_without_room_to_run_is_refused_before_submitting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{_fake_slurm_bin(tmp_path)}:{os.environ['PATH']}")
    argv = ["--protocol", "base2new", "--trainers", "MMLoP", "--datasets", "synthetic_clean", "--seeds", "1",
            "--shots", "1", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"),
            "--backend", "slurm", "--time", "3", "--no-follow", "--name", "b2n"]
    assert cli.main(argv) == 2                          # 180 s < 2 x the default 120 s delay
    err = capsys.readouterr().err
    assert err.startswith("error: --time 3 (180 s) leaves too little to run") and "--signal-delay" in err
    assert not (tmp_path / "count").exists()           # nothing submitted
    assert cli.main(argv + ["--signal-delay", "60"]) == 0
    assert (tmp_path / "count").read_text().strip() == "1002"


FAKE_TRAIN = """\
#!{python}
# A stand-in for `python train.py ...`: the first call blocks (and is preempted), later ones finish.
import json, os, sys, time
log = {log!r}
with open(log, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
calls = sum(1 for _ in open(log))
out = sys.argv[sys.argv.index("--output-dir") + 1]
if calls == 1:
    time.sleep(60)
    sys.exit(1)
os.makedirs(out, exist_ok=True)
json.dump({{"accuracy": 1.0}}, open(os.path.join(out, "results.json"), "w"))
"""


def test_timed_out_submitit_job_is_checkpointed_and_requeued(tmp_path):
    """submitit's checkpointing protocol, for real with its LocalExecutor: the job is signalled
    before its time limit (as Slurm does before a time-out or a preemption); TrainPyCall.checkpoint
    stops train.py and submitit requeues the same command."""
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable, log=str(tmp_path / "calls.log")))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    job = Job(id="x/seed1", kind="train", protocol="few_shot", trainer="T", cfg="c", folder="c", dataset="d", seed=1,
              shots=1, output_dir=str(tmp_path / "out" / "x" / "seed1"), argv=("--output-dir", str(tmp_path / "out" /
                                                                                                  "x" / "seed1")))
    # A 12 s limit, signalled 6 s before it: the first call (blocking) is stopped, the second finishes.
    backend = SubmititLocalBackend(str(tmp_path / "submitit"), workers=1, timeout_min=0.2, signal_delay_s=6)
    handle = backend.start(TrainPyCall(job, str(tmp_path / "state"), str(fake)), None)
    deadline = time.time() + 60
    while handle.poll() is None and time.time() < deadline:
        time.sleep(0.3)
    assert handle.poll().status == DONE, handle.poll()
    assert len((tmp_path / "calls.log").read_text().splitlines()) == 2          # the same command, twice
    record = json.load(open(tmp_path / "state" / "runs" / "x__seed1.json"))
    assert [a["status"] for a in record["attempts"]] == ["requeued", "done"]
    assert os.path.isfile(job.results_path)


def test_checkpoint_stops_train_py_and_returns_the_same_call(tmp_path):
    job = Job(id="a/b", kind="train", protocol="few_shot", trainer="T", cfg="c", folder="c", dataset="d", seed=1,
              shots=1, output_dir=str(tmp_path / "o"), argv=())
    call = TrainPyCall(job, str(tmp_path / "s"), "python", deps=("/x/results.json",), env={"A": "1"})
    call._proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    delayed = call.checkpoint()
    assert call._proc.poll() is not None                # train.py stopped
    again = delayed.function
    assert isinstance(again, TrainPyCall) and again.job == job and again.deps == call.deps and again.env == {"A": "1"}
    assert pickle.loads(pickle.dumps(call)).job == job   # picklable while a child runs
