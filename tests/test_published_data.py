"""The published tables carried in ``sweep/published/data``: their arithmetic (every HM against
2bn/(b+n), every average row against its columns), with the papers' documented misprints as the
only exceptions, and the facts the comparison relies on (sources, trainers, the MMLoP abstract)."""
import json
import os

import pytest

from sweep import published
from sweep.published import PublishedDataError, consistency_problems, load_tables, parse_selector
from sweep.spec import BENCHMARK_11


def test_every_hm_and_average_checks_out_except_the_documented_misprints():
    found, documented = set(), set()
    for t in load_tables():
        found |= {(t.id, m, row, col) for m, row, col, _, _ in consistency_problems(t)}
        documented |= {(t.id, m["method"], m["row"], m["fails"]) for m in t.misprints}
    assert found == documented == {
        ("promptsrc_table12_components", "PromptSRC", "oxford_pets", "hm"),     # base printed 95.43, not 95.33
        ("promptsrc_table13_few_shot", "MaPLe", "average", "4"),                # 75.37 printed, columns give 75.75
    }


def test_the_check_catches_a_changed_value(tmp_path):
    """A single digit changed in a per-dataset value breaks its HM and its column's average."""
    data = json.load(open(os.path.join(published.DATA_DIR, "promptsrc_table1_base2new.json")))
    data["methods"]["CoOp"]["values"]["dtd"]["novel"] = 51.18           # printed 41.18
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    problems = {(m, row, col) for m, row, col, _, _ in consistency_problems(published.read_table(str(path)))}
    assert problems == {("CoOp", "dtd", "hm"), ("CoOp", "average", "novel")}


def test_tables_cover_the_papers_with_sources():
    tables = {t.id: t for t in load_tables()}
    assert list(tables) == ["promptsrc_table1_base2new", "promptsrc_table12_components",
                            "maple_table1_prompting_variants", "maple_table3_base2new",
                            "promptsrc_table3_cross_dataset", "promptsrc_table4_domain_generalization",
                            "promptsrc_table13_few_shot", "mmlop_abstract"]
    for t in tables.values():
        assert t.source["arxiv"] in ("2307.06948", "2210.03117", "2602.21397")
        assert t.source["url"] == f"https://arxiv.org/abs/{t.source['arxiv']}"
    t1 = tables["promptsrc_table1_base2new"]
    assert t1.citation == "PromptSRC Table 1 (arXiv 2307.06948)" and t1.source["backbone"] == "ViT-B/16"
    assert [m.name for m in t1.methods.values()] == ["CLIP", "CoOp", "CoCoOp", "ProDA", "MaPLe", "PromptSRC"]
    assert set(t1.methods["PromptSRC"].values) == {*BENCHMARK_11, "average"}
    assert t1.methods["PromptSRC"].values["oxford_pets"]["base"] == 95.33
    assert t1.methods["ProDA"].trainer is None and t1.methods["CLIP"].trainer == "ZeroshotCLIP"
    fs = tables["promptsrc_table13_few_shot"]
    assert fs.methods["PromptSRC"].values["average"] == {"1": 72.32, "2": 75.29, "4": 78.35, "8": 80.69, "16": 82.87}
    assert fs.rounding("PromptSRC", "food101", "16") == 0.05 and fs.rounding("PromptSRC", "dtd", "16") == 0.005
    # MaPLe's Table 3 is a second printing of PromptSRC Table 1's columns.
    t3 = tables["maple_table3_base2new"]
    for name, m in t3.methods.items():
        assert m.values == t1.methods[name].values


def test_mmlop_has_only_the_abstract():
    t = {t.id: t for t in load_tables()}["mmlop_abstract"]
    assert t.source["table"] is None and t.source["trainable_params"] == "11.5K"
    assert t.methods["MMLoP"].values == {"average": {"hm": 79.7}}
    assert "No per-dataset numbers" in t.source["notes"]


def test_selector():
    assert parse_selector("published") == ("promptsrc", "maple", "mmlop")
    assert parse_selector("published:maple") == ("maple",)
    assert parse_selector("../PromptSRC/output:upstream") is None
    with pytest.raises(ValueError, match="unknown paper coop; use published or published:<paper> with one of "
                                         "promptsrc, maple, mmlop"):
        parse_selector("published:coop")


def test_a_broken_file_is_named(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"source": {"paper_key": "p", "paper": "P", "arxiv": "1"}, "protocol": "b2n",
                                "methods": {}}))
    with pytest.raises(PublishedDataError, match=r"x\.json: protocol 'b2n' is not one of base2new"):
        published.read_table(str(path))
    path.write_text("{")
    with pytest.raises(PublishedDataError, match=r"x\.json: cannot read it as JSON"):
        published.read_table(str(path))
