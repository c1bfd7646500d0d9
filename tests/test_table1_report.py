"""recipes/table1_small.py's markdown report: every row lines up with its header, and each cell
holds the number it names (the tables of docs/results.md are pasted from it)."""


def results():
    def nll(bpd, diff, se):
        return {"bpd": bpd, "bpd_se": 0.04, "bpd_diffusion": bpd - 1.6, "bpd_decoder": 1.6,
                "diff_vs_no-blur": {"mean": diff, "se": se}}
    summary = {k: {"mean": v, "std": 1.5} for k, v in
               {"swd_16": 143.2, "swd_8": 132.0, "swd_mean": 137.6, "train_swd_mean": 129.0,
                "spec_low": 0.1, "spec_high": 2.728, "spec_mean_abs": 1.136}.items()}
    return {"no-blur": {"schedule": {"f_N": 0.0}, "nll": nll(3.058, 0.0, 0.0), "nll_uniform": nll(3.137, 0.0, 0.0),
                        "summary": summary},
            "log": {"schedule": {"f_N": 0.0375}, "nll": nll(4.329, 1.2712, 0.11), "summary": summary},
            "data": {"summary": summary}}


def table(md: str, title: str) -> list[list[str]]:
    block = md.split(f"#### {title}")[1].strip().split("\n\n")[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


def test_markdown_tables_put_each_number_under_its_header(recipes_importable):
    import table1_small
    md = table1_small.markdown_tables(results())
    bpd = table(md, "Bits/dim")
    assert all(len(r) == len(bpd[0]) for r in bpd)
    rows = {r[0]: dict(zip(bpd[0], r)) for r in bpd[2:]}
    assert rows["no blur"]["bits/dim"] == "3.058 ± 0.040" and rows["no blur"]["Δ vs no blur (paired)"] == "0"
    assert rows["log, scaled"]["Δ vs no blur (paired)"] == "+1.271 ± 0.110"
    assert rows["log, scaled"]["f(N)"] == "0.0375" and rows["log, scaled"]["diffusion terms"] == "2.729"
    assert rows["log, scaled"]["uniform steps: bits/dim"] == "—"  # not scored that way
    samples = table(md, "Sample metrics")
    assert all(len(r) == len(samples[0]) for r in samples)
    cells = {r[0]: dict(zip(samples[0], r)) for r in samples[2:]}
    assert list(cells) == ["data (training images)", "no blur", "log, scaled"]
    assert cells["no blur"]["SWD 16 px"] == "143 ± 1.5" and cells["no blur"]["SWD mean"] == "138 ± 1.5"
    assert cells["no blur"]["SWD mean vs training set"] == "129 ± 1.5"
    assert cells["no blur"]["spectrum high"] == "2.728 ± 1.500"
