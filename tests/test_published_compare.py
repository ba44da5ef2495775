"""``--compare published`` and ``--report`` on a tree with known numbers (tests/published_tree.py):
cells, Δ, the seed-interval flags, the papers' average rule, recipe differences read from the runs'
config.yaml / results.json, ``–`` for what no paper printed, and the report's files and plots."""
import os
import shutil
import subprocess
import sys

import pytest

from proxy.stats import t_quantile
from sweep import tables
from sweep.published.compare import compare_tables, to_markdown
from sweep.tables import harmonic_mean
from tests.published_tree import BENCHMARK_11, build, write_example, write_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "docs", "reproduction_example")
T2 = t_quantile(2)       # 3 seeds
T1 = t_quantile(1)       # 2 seeds


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("published") / "output"))


def _comparisons(root, chosen=None):
    return {(c.table.protocol, c.table.method["trainer"]): c
            for c in compare_tables(tables.build_tables(tables.Tree(root)), chosen)}


def _cells(comp):
    return {r["name"]: r["cells"] for r in comp.rows}


def test_cells_delta_and_flags(tree):
    comp = _comparisons(tree)["base2new", "PromptSRC"]
    assert comp.published.citation == "PromptSRC Table 1 (arXiv 2307.06948)"
    rows = _cells(comp)
    dtd = rows["dtd"]
    assert dtd["Base"].published == 83.37 and dtd["Base"].delta == pytest.approx(0, abs=1e-9)
    assert dtd["Base"].half == pytest.approx(T2 * 1.0 / 3 ** 0.5) and dtd["Base"].flag == ""
    assert dtd["Novel"].delta == pytest.approx(-10.0) and dtd["Novel"].flag == "⚠"
    # A wide seed spread (±3) covers the same mean: no flag, and the interval is the t interval.
    assert rows["eurosat"]["Novel"].half == pytest.approx(T2 * 3.0 / 3 ** 0.5) and rows["eurosat"]["Novel"].flag == ""
    assert rows["ucf101"]["Base"].delta == pytest.approx(-7.0) and rows["ucf101"]["Base"].flag == "⚠"
    # HM: the table's HM of the means, its interval from the per-seed HMs of paired runs.
    hm = rows["dtd"]["HM"]
    per_seed = [harmonic_mean(83.37 + o, 52.97 + o) for o in (-1, 0, 1)]
    mean = sum(per_seed) / 3
    s = (sum((v - mean) ** 2 for v in per_seed) / 2) ** 0.5
    assert hm.ours == pytest.approx(harmonic_mean(83.37, 52.97)) and hm.half == pytest.approx(T2 * s / 3 ** 0.5)
    assert hm.published == 71.75 and hm.flag == "⚠"
    # The flag rule: |Δ| > half-width + the paper's rounding (0.005).
    assert not rows["eurosat"]["HM"].flag and abs(rows["eurosat"]["HM"].delta) < 0.01


def test_average_rows_the_papers_way(tree):
    comps = _comparisons(tree)
    avg = _cells(comps["base2new", "PromptSRC"])["Average"]
    base, novel = (83.37 + 92.90 + 87.10) / 3, (62.97 + 73.90 + 78.80) / 3
    assert avg["Base"].published == pytest.approx(base) and avg["Novel"].published == pytest.approx(novel)
    assert avg["HM"].published == pytest.approx(harmonic_mean(base, novel))       # not the mean of the HMs
    assert avg["HM"].published != pytest.approx((71.75 + 82.32 + 82.74) / 3, abs=0.01)
    ours_b, ours_n = (83.37 + 92.90 + 80.10) / 3, (52.97 + 73.90 + 78.80) / 3
    assert avg["HM"].ours == pytest.approx(harmonic_mean(ours_b, ours_n))
    assert any("Average: published average recomputed the papers' way over our 3 datasets (dtd, eurosat, ucf101)"
               in n for n in comps["base2new", "PromptSRC"].notes)
    # MMLoP on all 11 datasets: the abstract's printed HM, and no base/novel averages exist.
    mmlop = _cells(comps["base2new", "MMLoP"])
    assert mmlop["Average"]["HM"].published == 79.70 and mmlop["Average"]["Base"].published is None
    assert mmlop["Average"]["HM"].ours == pytest.approx(harmonic_mean(85.0, 75.0))
    assert mmlop["Average"]["HM"].flag == "" and all(mmlop[d]["HM"].published is None for d in BENCHMARK_11)
    # DG: the source row is not averaged; the targets' average is recomputed over our two targets.
    dg = _cells(comps["dg", "MaPLe"])
    assert dg["imagenet (source)"]["Accuracy"].published == 70.72
    assert dg["imagenet_sketch"]["Accuracy"].delta == pytest.approx(40.5 - 49.15)
    assert dg["imagenet_sketch"]["Accuracy"].half == pytest.approx(T1 * 0.5 ** 0.5 / 2 ** 0.5)
    assert dg["imagenet_sketch"]["Accuracy"].flag == "⚠" and dg["imagenetv2"]["Accuracy"].flag == ""
    assert dg["Average (targets)"]["Accuracy"].published == pytest.approx((64.07 + 49.15) / 2)


def test_missing_values_are_dashes_never_zero(tree):
    comps = _comparisons(tree)
    md = to_markdown(comps["base2new", "CoOp"])
    row = next(line for line in md.splitlines() if line.startswith("| synthetic_small"))
    assert [c.strip() for c in row.split("|")[1:-1]] == ["synthetic_small", "60.00", "–", "–", "50.00", "–", "–",
                                                         "54.55", "–", "–", "1/1"]
    zs = _cells(comps["zeroshot", "ZeroshotCLIP"])
    assert zs["imagenet"]["Accuracy"].published == 66.73 and zs["imagenet"]["Accuracy"].flag == "?"   # one run
    assert zs["dtd"]["Accuracy"].published is None and zs["Average"]["Accuracy"].published is None
    fs = _cells(comps["few_shot", "CoOp"])
    assert fs["dtd"]["16 shots"].flag == "?" and fs["eurosat"]["16 shots"].ours is None
    assert fs["eurosat"]["16 shots"].delta is None and fs["Average"]["16 shots"].published is None
    fs_md = to_markdown(comps["few_shot", "CoOp"])
    eurosat = next(line for line in fs_md.splitlines() if line.startswith("| eurosat"))
    assert [c.strip() for c in eurosat.split("|")[1:-1]][-4:] == ["–", "84.93", "–", "3/3/3/0"]


def test_recipe_differences_from_the_run_records(tree, tmp_path):
    comps = _comparisons(tree)
    assert comps["base2new", "PromptSRC"].recipe == [
        "epochs (OPTIM.MAX_EPOCH): ours 5 in 18 of 18 runs, the paper's row 20",
        "PROMPT_PREC (TRAINER.PROMPTSRC.PROMPT_PREC): ours fp32 in 18 of 18 runs, the paper's row upstream"]
    assert comps["base2new", "CoOp"].recipe == [
        "backbone (MODEL.BACKBONE.NAME): ours tiny_clip in 2 of 2 runs, the paper's row ViT-B/16",
        "PromptSRC Table 1 (arXiv 2307.06948), CoOp: the source does not print this row's training recipe; "
        "only shots and backbone are compared"]
    md = to_markdown(comps["base2new", "PromptSRC"])
    assert "Recipe differences from the published row:\n- epochs (OPTIM.MAX_EPOCH): ours 5" in md
    # Without config.yaml (an upstream tree, say) shots and backbone still come from results.json.
    root = str(tmp_path / "out")
    for seed in (1, 2):
        for split in ("train_base", "test_new"):
            run = f"{root}/base2new/{split}/dtd/shots_16/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx/seed{seed}"
            write_run(run, 80.0 + seed, trainer="PromptSRC", dataset="dtd", seed=seed, shots=8, epochs=20)
            os.remove(os.path.join(run, "config.yaml"))
    (comp,) = compare_tables(tables.build_tables(tables.Tree(root)))
    assert comp.recipe == ["shots (DATASET.NUM_SHOTS): ours 8 in 4 of 4 runs, the paper's row 16"]
    # An upstream run: only log.txt, which prints its config; read like config.yaml.
    upstream = str(tmp_path / "upstream")
    for seed in (1, 2):
        for split in ("train_base", "test_new"):
            run = f"{upstream}/base2new/{split}/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed{seed}"
            os.makedirs(run)
            with open(os.path.join(run, "log.txt"), "w") as f:
                f.write("** Config **\nDATALOADER:\n  TRAIN_X:\n    BATCH_SIZE: 4\nOPTIM:\n  MAX_EPOCH: 2\n"
                        "TRAINER:\n  MAPLE:\n    PREC: fp16\nCollecting env info ...\n"
                        f"=> result\n* accuracy: {70 + seed}.0%\n")
    (comp,) = compare_tables(tables.build_tables(tables.Tree(upstream)))
    assert _cells(comp)["dtd"]["Base"].ours == 71.5
    assert comp.recipe == ["epochs (OPTIM.MAX_EPOCH): ours 2 in 4 of 4 runs, the paper's row 5"]


def test_documented_misprint_is_named_and_kept(tmp_path):
    """MaPLe's printed 4-shot average (75.37) is compared as printed, with the misprint named."""
    root = str(tmp_path / "out")
    for d in BENCHMARK_11:
        for seed in (1, 2):
            write_run(f"{root}/{d}/MaPLe/f_4shots/seed{seed}", 75.0 + seed, trainer="MaPLe", dataset=d, seed=seed,
                      shots=4)
    (comp,) = compare_tables(tables.build_tables(tables.Tree(root)))
    avg = _cells(comp)["Average"]["4 shots"]
    assert avg.published == 75.37 and avg.ours == pytest.approx(76.5)
    misprint = "Average: documented misprint: MaPLe's 4-shot average is printed 75.37"
    assert any(n.startswith(misprint) for n in comp.notes)


def test_choosing_a_paper(tree):
    comps = _comparisons(tree, ("maple",))
    assert comps["base2new", "PromptSRC"].published is None
    assert all(c.published is None for r in comps["base2new", "PromptSRC"].rows for c in r["cells"].values())
    assert comps["base2new", "CoOp"].published.citation == "MaPLe Table 3 (arXiv 2210.03117)"
    assert "No published table has a PromptSRC row for this protocol (base2new)" in \
        to_markdown(comps["base2new", "PromptSRC"])


def _sweep(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "sweep.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_compare_and_bad_paper(tree, tmp_path):
    proc = _sweep("--table", tree, "--compare", "published", "--table-dir", str(tmp_path / "t"))
    assert proc.returncode == 0, proc.stderr
    assert "#### Base-to-novel: PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx, 16 shots vs PromptSRC Table 1 " \
           "(arXiv 2307.06948), PromptSRC" in proc.stdout
    assert "| dtd       | 83.37 ± 2.48 | 83.37          | +0.00    | 52.97 ± 2.48 | 62.97           | -10.00 ⚠" \
           in proc.stdout
    bad = _sweep("--table", tree, "--compare", "published:coop", "--table-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0] == ("error: --compare published:coop: unknown paper coop; use published or "
                                          "published:<paper> with one of promptsrc, maple, mmlop")
    assert bad.stdout == "" and not os.path.exists(tmp_path / "bad")


def test_cli_report_writes_markdown_and_labelled_pngs(tree, tmp_path):
    from PIL import Image

    root = str(tmp_path / "output")
    shutil.copytree(tree, root)
    proc = _sweep("--report", root)
    assert proc.returncode == 0, proc.stderr
    report = os.path.join(root, ".sweep", "report", "REPORT.md")
    assert f"Report written: {report}" in proc.stdout
    text = open(report).read()
    images = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(images) == 6 and "| dtd       | 83.37 ± 2.48 |" in text
    for name in images:
        with Image.open(os.path.join(root, ".sweep", "report", name)) as png:
            assert png.format == "PNG" and png.size[0] > 300
            axes = png.text["Axes"]
        if "few_shot" in name:
            assert "x=shots per class, y=accuracy (%)" in axes
        else:
            assert "x=dataset, y=" in axes
    assert "x=dataset, y=harmonic mean of base and novel (%)" in \
        Image.open(os.path.join(root, ".sweep", "report", images[2])).text["Axes"]


def test_committed_example_report_is_current(tmp_path):
    """docs/reproduction_example/REPORT.md is what the report writes for this tree today (its
    PNGs are committed beside it)."""
    path = write_example(str(tmp_path / "r"), str(tmp_path / "work"))
    expected = open(os.path.join(EXAMPLE, "REPORT.md")).read()
    assert open(path).read() == expected, \
        "regenerate with: python tests/published_tree.py --example docs/reproduction_example"
    for name in sorted(os.listdir(tmp_path / "r")):
        assert os.path.isfile(os.path.join(EXAMPLE, name)), name


def test_with_another_tree_and_a_sweep_selection(tree, tmp_path, capsys):
    """Published beside a second tree (both printed), and the end-of-sweep call: the sweep's
    selection restricts the tables, the report goes to the folder given."""
    from sweep import cli

    code = cli.main(["--table", tree, "--compare", f"{tree}:again", "--compare", "published:promptsrc",
                     "--table-dir", str(tmp_path / "t")])
    out = capsys.readouterr().out
    assert code == 0 and "Base [again]" in out and "vs PromptSRC Table 1 (arXiv 2307.06948), PromptSRC" in out
    assert out.index("### Base-to-novel: PromptSRC") < out.index("#### Base-to-novel: PromptSRC")
    selection = tables.Selection(protocols=["base2new"], methods=[("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx")])
    report = str(tmp_path / "sweep" / "report")
    assert cli.print_tables(tree, [], str(tmp_path / "t2"), selection, None, report) == 0
    text = open(os.path.join(report, "REPORT.md")).read()
    assert "## 1. Base-to-novel: PromptSRC" in text and "## 2." not in text
    assert sorted(os.listdir(report)) == ["01_base2new_promptsrc_vit_b16_c2_ep20_batch4_4_4ctx_16_shots.png",
                                          "REPORT.md"]
