"""gendiff/experiments/table1_small.py's markdown report: every row lines up with its header, and each cell
holds the number it names (the tables of docs/results.md are pasted from it)."""


def nll(bpd, diff, se):
    return {"bpd": bpd, "bpd_se": 0.04, "bpd_diffusion": bpd - 1.6, "bpd_decoder": 1.6,
            "diff_vs_no-blur": {"mean": diff, "se": se}}


SUMMARY = {k: {"mean": v, "std": 1.5} for k, v in
           {"swd_16": 143.2, "swd_8": 132.0, "swd_mean": 137.6, "train_swd_mean": 129.0,
            "spec_low": 0.1, "spec_high": 2.728, "spec_mean_abs": 1.136}.items()}


def results():
    return {"no-blur": {"schedule": {"f_N": 0.0},
                        "nll": {"posterior": nll(2.9, 0.0, 0.0), "reverse": nll(3.058, 0.0, 0.0)},
                        "nll_uniform": {"posterior": nll(3.137, 0.0, 0.0), "reverse": nll(3.2, 0.0, 0.0)},
                        "summary": SUMMARY},
            "log": {"schedule": {"f_N": 0.0375},
                    "nll": {"posterior": nll(3.5, 0.6, 0.05), "reverse": nll(4.329, 1.2712, 0.11)},
                    "summary": SUMMARY},
            "data": {"summary": SUMMARY}}


def table(md: str, title: str) -> list[list[str]]:
    block = md.split(f"#### {title}")[1].strip().split("\n\n")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


def bits_rows(md: str) -> dict:
    bpd = table(md, "Bits/dim")
    assert all(len(r) == len(bpd[0]) for r in bpd)
    return {r[0]: dict(zip(bpd[0], r)) for r in bpd[2:]}


def test_markdown_tables_put_each_number_under_its_header():
    from gendiff.experiments import table1_small
    md = table1_small.markdown_tables(results())
    rows = bits_rows(md)
    assert rows["no blur"]["bits/dim"] == "2.900 ± 0.040" and rows["no blur"]["Δ vs no blur (paired)"] == "0"
    assert rows["no blur"]["Eq. 19–20 mean: bits/dim"] == "3.058 ± 0.040"
    assert rows["no blur"]["uniform steps: bits/dim"] == "3.137 ± 0.040"  # the posterior mean's
    assert rows["log, scaled"]["Δ vs no blur (paired)"] == "+0.600 ± 0.050"
    assert rows["log, scaled"]["Eq. 19–20: Δ vs no blur"] == "+1.271 ± 0.110"
    assert rows["log, scaled"]["f(N)"] == "0.0375" and rows["log, scaled"]["diffusion terms"] == "1.900"
    assert rows["log, scaled"]["uniform steps: bits/dim"] == "—"  # not scored that way
    samples = table(md, "Sample metrics")
    assert all(len(r) == len(samples[0]) for r in samples)
    cells = {r[0]: dict(zip(samples[0], r)) for r in samples[2:]}
    assert list(cells) == ["data (training images)", "no blur", "log, scaled"]
    assert cells["no blur"]["SWD 16 px"] == "143 ± 1.5" and cells["no blur"]["SWD mean"] == "138 ± 1.5"
    assert cells["no blur"]["SWD mean vs training set"] == "129 ± 1.5"
    assert cells["no blur"]["spectrum high"] == "2.728 ± 1.500"


def test_rows_scored_before_both_means_show_under_eq_19_20():
    """An eval.json written before the posterior mean holds Eq. 19–20's bound under "nll" itself."""
    from gendiff.experiments import table1_small
    old = {"schedule": {"f_N": 0.0}, "nll": nll(3.058, 0.0, 0.0), "nll_uniform": nll(3.2, 0.0, 0.0), "summary": SUMMARY}
    row = table1_small.by_mean(old)
    assert row["nll"] == {"reverse": old["nll"]} and row["nll_uniform"] == {"reverse": old["nll_uniform"]}
    cells = bits_rows(table1_small.markdown_tables({"no-blur": row, "data": {"summary": SUMMARY}}))["no blur"]
    assert cells["bits/dim"] == cells["uniform steps: bits/dim"] == "—"
    assert cells["Eq. 19–20 mean: bits/dim"] == "3.058 ± 0.040"


def test_paired_differences_per_mean():
    from gendiff.experiments import table1_small
    per = {"no-blur": ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]), "log": ([2.0, 3.0, 5.0], [3.0, 4.0, 5.0])}
    res = {row: {"nll": {"posterior": {"bpd_per_image": p}, "reverse": {"bpd_per_image": r}}}
           for row, (p, r) in per.items()}
    table1_small.paired_difference(res)
    assert res["log"]["nll"]["posterior"]["diff_vs_no-blur"]["mean"] == 4 / 3
    assert res["log"]["nll"]["reverse"]["diff_vs_no-blur"] == {"mean": 2.0, "se": 1 / 3 ** 0.5}
    assert res["no-blur"]["nll"]["reverse"]["diff_vs_no-blur"] == {"mean": 0.0, "se": 0.0}
