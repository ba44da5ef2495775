"""Demo driver pieces: method detection, output layout, aggregation, table, plot, CLI errors."""
import os

import pytest

from proxy.demo import ablation_methods, available_methods, format_table, main, summarize
from proxy.plot import plot_hm_vs_params
from proxy.runs import Method, RunResult, harmonic_mean, run_dirs


def test_harmonic_mean():
    assert harmonic_mean(80.0, 60.0) == pytest.approx(68.5714, abs=1e-4)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_run_dirs_follow_the_base2new_scripts_layout():
    m = Method("MMLoP", "MMLoP", "tiny_4+4ctx_ep10")
    train, test = run_dirs("/o", "synthetic_warm", m, 2)
    assert train == "/o/base2new/train_base/synthetic_warm/shots_16/MMLoP/tiny_4+4ctx_ep10/seed2"
    assert test == "/o/base2new/test_new/synthetic_warm/shots_16/MMLoP/tiny_4+4ctx_ep10/seed2"
    tagged = Method("+ low-rank", "MMLoP", "tiny_4+4ctx_ep10", tag="tiny_4+4ctx_ep10_ablation_lowrank")
    assert run_dirs("/o", "d", tagged, 1)[0].endswith("/MMLoP/tiny_4+4ctx_ep10_ablation_lowrank/seed1")


def test_methods_are_registered_trainers_with_tiny_configs():
    from dassl.engine import TRAINER_REGISTRY

    every = available_methods()                 # imports (registers) the trainers
    # Only this project's trainers: other tests in the same process register toy trainers.
    ours = [n for n in TRAINER_REGISTRY.registered_names()
            if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")]
    methods = [m for m in every if m.trainer in ours]
    names = [m.trainer for m in methods]
    assert names[:2] == ["ZeroshotCLIP", "CoOp"] and names[-1] == "MMLoP"
    for m in methods:
        assert os.path.isfile(m.config_file()), m
        assert m.trains == (m.trainer != "ZeroshotCLIP")
    assert [m.trainer for m in available_methods(("MMLoP", "ZeroshotCLIP"))] == ["ZeroshotCLIP", "MMLoP"]
    # Every registered trainer of ours has a tiny config, so --methods all runs them all.
    assert sorted(names) == sorted(ours)


def test_ablation_rows_reach_every_setting_by_opts_alone():
    from trainers.core.methods import method_info

    rows = ablation_methods()
    assert [m.label for m in rows] == [r.proxy_label or r.label for r in method_info("MMLoP").ablation_rows]
    assert len({m.folder for m in rows}) == len(rows)
    ivlp = dict(zip(rows[0].opts[::2], rows[0].opts[1::2]))
    assert ivlp["TRAINER.MMLOP.FULL_RANK"] == "True" and ivlp["TRAINER.MMLOP.DRIFT_CORRECTION"] == "False"
    # The paper's rows end with the full method, the config itself; then our variants of it.
    assert rows[4].opts == () and rows[4].label == "+ shared U (MMLoP)"
    assert rows[5].opts == ("TRAINER.MMLOP.BALANCED_INIT", "True")
    # Every opts key exists in MMLoP's config node.
    import trainers
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    for m in rows:
        cfg.clone().merge_from_list(list(m.opts))


def _results():
    out = []
    for seed, (b, n) in enumerate([(80.0, 60.0), (90.0, 70.0)], 1):
        out.append(RunResult("CoOp", "synthetic_warm", seed, b, n, 512))
        out.append(RunResult("ZeroshotCLIP", "synthetic_warm", seed, 50.0, 55.0, 0))
    out.append(RunResult("CoOp", "synthetic_small", 1, 70.0, 40.0, 512))
    return out


def test_summary_averages_seeds_then_datasets_and_formats_a_table():
    methods = [Method("ZeroshotCLIP", "ZeroshotCLIP", "tiny_clip", trains=False), Method("CoOp", "CoOp", "tiny")]
    rows = summarize(_results(), methods, ["synthetic_warm", "synthetic_small"])
    coop = rows[1]
    assert coop["per_dataset"]["synthetic_warm"] == pytest.approx(
        {"base": 85.0, "novel": 65.0, "hm": harmonic_mean(85.0, 65.0), "seeds": 2})
    assert coop["base"] == pytest.approx(77.5) and coop["novel"] == pytest.approx(52.5)
    assert coop["hm"] == pytest.approx(harmonic_mean(77.5, 52.5))
    assert rows[0]["per_dataset"].keys() == {"synthetic_warm"}
    # Seed spread is over seeds (seed 1 averages its two datasets), not over datasets.
    seed_hms = [harmonic_mean(75.0, 50.0), harmonic_mean(90.0, 70.0)]
    assert coop["hm_seed_std"] == pytest.approx(abs(seed_hms[0] - seed_hms[1]) / 2)
    assert rows[0]["hm_seed_std"] == 0.0  # identical zero-shot runs
    table = format_table(rows, ["synthetic_warm", "synthetic_small"])
    lines = table.splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    assert cells[0] == ["method", "trainable params", "base", "novel", "HM", "HM synthetic_warm", "HM synthetic_small"]
    assert cells[3][:5] == ["CoOp", "512", "77.50", "52.50", f"{harmonic_mean(77.5, 52.5):.2f}"]
    assert cells[2][0] == "ZeroshotCLIP" and cells[2][-1] == "-"  # no synthetic_small run


def test_plot_is_written(tmp_path):
    rows = [{"method": "ZeroshotCLIP", "params": 0, "hm": 50.0}, {"method": "CoOp", "params": 512, "hm": 60.0},
            {"method": "MMLoP", "params": 780, "hm": 70.0, "hm_ci": 2.5}]
    path = plot_hm_vs_params(rows, str(tmp_path / "p" / "hm.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "p") == ["hm.png"]


def test_cli_rejects_unknown_dataset(capsys):
    with pytest.raises(SystemExit):
        main(["--datasets", "synthetic_neon"])
    assert "no configs/datasets/<name>.yaml for: synthetic_neon" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_grid_runs_through_the_sweep_engine(tmp_path):
    """run_grid is the sweep engine's local backend: the base2new scripts' commands and folders,
    N workers, one progress line per run start and end, finished runs reused."""
    import json

    import torch

    from clip.model import build_model_from_config
    from datasets.synthetic import SyntheticShapes, ensure_generated
    from proxy.demo import run_grid

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_model_from_config("ViT-B/16", vision_layers=2, transformer_layers=2, vision_width=64,
                                       transformer_width=64, transformer_heads=1, image_resolution=32,
                                       vision_patch_size=8, embed_dim=32).state_dict(), ckpt)
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    ensure_generated(data, SyntheticShapes.dataset_dir, SyntheticShapes.style, SyntheticShapes.split_file)
    methods = available_methods(["ZeroshotCLIP"])
    lines = []
    results = run_grid(methods, ["synthetic_clean"], [1, 2], str(ckpt), data, out, log=lines.append, workers=2)
    assert [(r.seed, r.reused) for r in results] == [(1, False), (2, False)]
    label = methods[0].label
    assert sorted(line for line in lines if line.endswith("...")) == [
        f"[1/2] {label} on synthetic_clean, seed 1 ...", f"[2/2] {label} on synthetic_clean, seed 2 ..."]
    for r in results:
        train, test = run_dirs(out, "synthetic_clean", methods[0], r.seed)
        base, novel = (json.load(open(os.path.join(d, "results.json"))) for d in (train, test))
        assert (r.base, r.novel) == (base["accuracy"], novel["accuracy"])
        assert base["command"].startswith("python train.py --root ") and "DATASET.SUBSAMPLE_CLASSES base" in \
            base["command"] and "configs/datasets/synthetic_clean.yaml" in base["command"]
    assert os.path.isfile(os.path.join(out, ".sweep", "proxy_demo", "state.json"))
    again = []
    reused = run_grid(methods, ["synthetic_clean"], [1, 2], str(ckpt), data, out, log=again.append)
    assert [(r.base, r.novel, r.reused) for r in reused] == [(r.base, r.novel, True) for r in results]
    assert again[0] == f"[1/2] {label} on synthetic_clean, seed 1 ..." and "(reused;" in again[-1]


def test_cli_rejects_zero_workers(capsys):
    with pytest.raises(SystemExit):
        main(["--workers", "0"])
    assert "--workers must be >= 1" in capsys.readouterr().err


def test_ablation_pairs_the_balanced_row_with_the_mmlop_row_not_the_reverse():
    """The reference of the paired differences is the MMLoP row run without opts, even with a
    variant row of the same trainer after it; the step table pairs the variant with it."""
    from proxy import protocols as P

    rows = ablation_methods()[-2:]                       # + shared U (MMLoP), MMLoP + balanced init
    results = []
    for seed, (b, n, db) in enumerate([(60.0, 55.0, 1.0), (62.0, 54.0, 2.0), (61.0, 56.0, 3.0)], 1):
        results.append(RunResult(rows[0].label, "synthetic_warm", seed, b, n, 780))
        results.append(RunResult(rows[1].label, "synthetic_warm", seed, b + db, n, 780))
    part = P.base2new_tables(results, ["synthetic_warm"], rows)
    assert part["reference"] == "+ shared U (MMLoP)"
    (paired,) = part["paired"]
    assert paired["method"] == "MMLoP + balanced init" and paired["diff"]["base"]["mean"] == pytest.approx(-2.0)
    (step,) = P.step_differences(part["rows"], part["columns"])
    assert step["method"] == "MMLoP + balanced init vs + shared U (MMLoP)"
    assert step["diff"]["base"]["mean"] == pytest.approx(2.0) and step["seeds"] == [1, 2, 3]
