"""Seed statistics of the proxy tables (proxy.stats) and the tables built from them
(proxy.protocols): known quantiles, intervals, paired differences, table centres."""
import math

import pytest

from proxy.protocols import Record, base2new_tables, few_shot_tables, paired_rows, per_seed, stat_rows, transfer_tables
from proxy.runs import Method, RunResult, harmonic_mean
from proxy.stats import Interval, mean_ci, paired_difference, student_t_two_sided, t_quantile


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706),
                                          (10, 2.2281), (30, 2.0423), (120, 1.9799)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_other_confidence_and_cdf():
    assert t_quantile(2, 0.90) == pytest.approx(2.9200, abs=1e-4)
    assert t_quantile(9, 0.99) == pytest.approx(3.2498, abs=1e-4)
    # df 1 is the Cauchy distribution: P(|T| <= 1) = 1/2; df 2: t / sqrt(t^2 + 2).
    assert student_t_two_sided(1.0, 1) == pytest.approx(0.5)
    assert student_t_two_sided(3.0, 2) == pytest.approx(3.0 / math.sqrt(11.0))
    assert student_t_two_sided(0.0, 5) == 0.0
    with pytest.raises(ValueError):
        t_quantile(0)


def test_mean_ci_three_seeds():
    iv = mean_ci([1.0, 2.0, 3.0])          # s = 1, half = 4.3027 / sqrt(3)
    assert iv.mean == 2.0 and iv.n == 3
    assert iv.half == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert iv.contains_zero() and iv.format() == "2.00 ± 2.48"
    assert mean_ci([5.0, 5.0, 5.0]).half == 0.0
    single = mean_ci([7.0])
    assert single.half is None and single.contains_zero() is None and single.format() == "7.00"
    # ``centre`` moves the interval, not its width (the HM column).
    assert mean_ci([1.0, 2.0, 3.0], centre=10.0) == Interval(10.0, iv.half, 3)


def test_paired_difference_removes_the_shared_seed_effect():
    a, b = [60.0, 70.0, 80.0], [58.0, 68.5, 77.5]     # big seed spread, consistent gap
    unpaired = mean_ci(a)
    iv = paired_difference(a, b)
    assert iv.mean == pytest.approx(2.0)
    assert iv.half == pytest.approx(4.302653 * 0.5 / math.sqrt(3), abs=1e-5)   # d = 2, 1.5, 2.5: s = .5
    assert iv.half < unpaired.half and not iv.contains_zero()
    assert iv.format(signed=True, mark=True) == "+2.00 ± 1.24*"
    assert paired_difference(a, [59.0, 69.5, 78.5]).format(signed=True, mark=True) == "+1.00 ± 1.24"
    assert paired_difference([1.0, 2.0], [2.0, 1.0]).format(signed=True, mark=True) == "+0.00 ± 12.71"
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def _rec(method, trainer, dataset, seed, acc, kind="test", shots=16, params=0):
    return Record(method, trainer, dataset, seed, shots, kind, acc, params, "", False)


def test_transfer_table_sources_targets_average_and_paired_rows():
    records = []
    for seed, (src, t1, t2) in enumerate([(80.0, 60.0, 50.0), (82.0, 62.0, 54.0), (84.0, 61.0, 52.0)], 1):
        records += [_rec("CoOp", "CoOp", "src", seed, src, "train", params=512),
                    _rec("CoOp", "CoOp", "t1", seed, t1), _rec("CoOp", "CoOp", "t2", seed, t2),
                    _rec("MMLoP", "MMLoP", "src", seed, src + 1, "train", params=780),
                    _rec("MMLoP", "MMLoP", "t1", seed, t1 + 2), _rec("MMLoP", "MMLoP", "t2", seed, t2 + seed)]
    out = transfer_tables(records, ["t1", "t2"], source="src")
    rows = {r["method"]: r for r in out["rows"]}
    assert rows["CoOp"]["params"] == 512 and rows["MMLoP"]["params"] == 780
    assert rows["CoOp"]["mean"]["source"] == pytest.approx(82.0)
    assert rows["CoOp"]["ci"]["source"] == pytest.approx(4.302653 * 2.0 / math.sqrt(3), abs=1e-5)
    assert rows["CoOp"]["mean"]["average"] == pytest.approx((61.0 + 52.0) / 2)
    assert out["reference"] == "MMLoP"
    (diff,) = out["paired"]
    assert diff["method"] == "CoOp" and diff["seeds"] == [1, 2, 3]
    assert diff["diff"]["source"] == {"mean": pytest.approx(1.0), "ci": pytest.approx(0.0), "inside_noise": False}
    # t2 gap is 1, 2, 3 by seed: mean 2, s = 1; average gap (2 + seed) / 2.
    assert diff["diff"]["t2"]["mean"] == pytest.approx(2.0)
    assert diff["diff"]["t2"]["ci"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert diff["diff"]["average"]["mean"] == pytest.approx(2.0)
    header = out["table"].splitlines()[0]
    assert "src" in header and "t1" in header and "average" in header
    assert "| CoOp" in out["paired_table"] and "MMLoP minus" in out["paired_table"]


def test_base2new_table_hm_is_hm_of_means_with_per_seed_spread():
    methods = [Method("ZS", "ZeroshotCLIP", "tiny_clip", trains=False), Method("M", "MMLoP", "tiny")]
    results = []
    for seed, (b, n) in enumerate([(80.0, 60.0), (90.0, 70.0), (85.0, 62.0)], 1):
        results += [RunResult("M", "d1", seed, b, n, 780), RunResult("M", "d2", seed, b - 10, n - 10, 780),
                    RunResult("ZS", "d1", seed, 70.0, 65.0, 0), RunResult("ZS", "d2", seed, 60.0, 55.0, 0)]
    out = base2new_tables(results, ["d1", "d2"], methods)
    rows = {r["method"]: r for r in out["rows"]}
    m = rows["M"]
    assert m["mean"]["base"] == pytest.approx(80.0) and m["mean"]["novel"] == pytest.approx(59.0)
    assert m["mean"]["hm"] == pytest.approx(harmonic_mean(80.0, 59.0))
    seed_hms = [harmonic_mean(b - 5, n - 5) for b, n in [(80.0, 60.0), (90.0, 70.0), (85.0, 62.0)]]
    assert m["ci"]["hm"] == pytest.approx(mean_ci(seed_hms).half)
    assert rows["ZS"]["ci"]["base"] == 0.0
    (diff,) = out["paired"]
    assert diff["method"] == "ZS"
    zs_hm = harmonic_mean(65.0, 60.0)
    assert diff["diff"]["hm"]["mean"] == pytest.approx(sum(seed_hms) / 3 - zs_hm)
    assert diff["diff"]["novel"]["mean"] == pytest.approx(59.0 - 60.0)


def test_few_shot_table_zero_shot_fills_every_column():
    records = [_rec("ZS", "ZeroshotCLIP", "src", s, 50.0, "train", shots=4) for s in (1, 2)]
    for s in (1, 2):
        for k, acc in ((1, 55.0), (4, 65.0)):
            records.append(_rec("MMLoP", "MMLoP", "src", s, acc + s, "train", shots=k, params=780))
    out = few_shot_tables(records, (1, 4))
    rows = {r["method"]: r for r in out["rows"]}
    assert rows["ZS"]["mean"] == {"1": 50.0, "4": 50.0, "average": 50.0}
    assert rows["MMLoP"]["mean"]["4"] == pytest.approx(66.5) and rows["MMLoP"]["params"] == 780
    assert out["paired"][0]["diff"]["1"]["mean"] == pytest.approx(6.5)


def test_rows_without_a_reference_or_with_missing_seeds():
    values = per_seed([_rec("A", "CoOp", "d", 1, 10.0), _rec("A", "CoOp", "d", 2, 20.0),
                       _rec("B", "MMLoP", "d", 1, 15.0)], lambda r: r.dataset)
    rows = stat_rows(values, ["d"], {}, {"A": "CoOp", "B": "MMLoP"})
    assert rows[1]["ci"]["d"] is None                 # one seed: no interval
    assert paired_rows(values, ["d"], "C") == []
    (diff,) = paired_rows(values, ["d"], "B")
    assert diff["seeds"] == [1] and diff["diff"]["d"]["ci"] is None and diff["diff"]["d"]["mean"] == 5.0


def test_ablation_steps_are_paired_differences_of_consecutive_rows():
    from proxy.protocols import step_differences

    rows = [{"method": "IVLP", "per_seed": {"1": {"hm": 50.0}, "2": {"hm": 52.0}, "3": {"hm": 54.0}}},
            {"method": "+ x", "per_seed": {"1": {"hm": 51.0}, "2": {"hm": 54.0}, "3": {"hm": 57.0}}}]
    (step,) = step_differences(rows, ["hm"])
    assert step["method"] == "+ x vs IVLP" and step["seeds"] == [1, 2, 3]
    assert step["diff"]["hm"]["mean"] == pytest.approx(2.0)          # d = 1, 2, 3
    assert step["diff"]["hm"]["ci"] == pytest.approx(4.302653 / math.sqrt(3), abs=1e-5)
    assert step["diff"]["hm"]["inside_noise"] is True             # 2 ± 2.48 contains 0
