"""docs/extending.md runs: its python blocks, executed in order in one namespace, build a PCA
basis, a schedule, a sampler and a network, check them with gendiff.testing, train and sample."""
import re
from pathlib import Path

import pytest
import torch

from gendiff.samplers import SAMPLERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def module_block(name: str) -> str:
    """The page's python block that is the module ``name`` (it starts with ``# <name>``)."""
    found = [b for b in python_blocks(DOC.read_text()) if b.startswith(f"# {name}\n")]
    assert len(found) == 1, f"{DOC} should hold one python block starting with '# {name}'"
    return found[0]


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")  # diffusers'
def test_extending_md_runs_and_its_components_work(monkeypatch):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6, f"expected the example blocks in {DOC}, found {len(blocks)}"
    ns = {"__name__": "extending_md"}
    try:
        for k, code in enumerate(blocks):
            exec(compile(code, f"{DOC.name}[block {k}]", "exec"), ns)
        assert "my-ancestral" in SAMPLERS
    finally:  # the page registers "my-ancestral"; undo it
        if "my-ancestral" in SAMPLERS:
            SAMPLERS.unregister("my-ancestral")
    assert "my-ancestral" not in SAMPLERS
    # what the page claims, checked on its own objects
    basis, diffusion, samples = ns["basis"], ns["diffusion"], ns["samples"]
    u = basis.U
    assert torch.allclose(u.T @ u, torch.eye(64, dtype=torch.float64), atol=1e-10)
    assert float(basis.rates.min()) == 0 and bool((basis.rates.flatten()[1:] >= basis.rates.flatten()[:-1]).all())
    assert diffusion.basis is basis and diffusion.schedule is ns["schedule"]
    assert samples.shape == (16, 1, 8, 8) and torch.isfinite(samples).all()
    assert ns["fast"].shape == (16, 1, 8, 8) and torch.isfinite(ns["fast"]).all()
    assert torch.isfinite(ns["loss"])
    assert ns["ckpt"].is_file() and ns["trainer"].step == 5  # the Trainer with ready components
    # section 9: a 24×16 run from an array file, rebuilt from its checkpoint, sampled at its shape
    assert ns["run"].event_shape == (1, 24, 16) and ns["x"].shape == (4, 1, 24, 16)
    # the conditional network: trained with labels, sampled for one class and with a per-coordinate gate
    assert ns["sevens"].shape == ns["gated"].shape == (8, 1, 8, 8) and torch.isfinite(ns["gated"]).all()
    assert torch.isfinite(ns["closs"]) and not torch.allclose(ns["sevens"], ns["gated"])
    # section 10: colour with chroma twice as fast, a 1-D and a 3-D model, each trained, sampled, evaluated
    colour, snr = ns["colour"], ns["colour_run"].diffusion.schedule
    assert ns["colour_run"].diffusion.basis.rates.equal(colour.rates) and snr.variance.shape == (3, 16, 16)
    assert torch.equal(colour.rates[1:], 2 * colour.rates[:1].expand(2, -1, -1))
    tau, moving = ns["tau"], colour.rates[0] > 0  # chroma's SNR crosses 1 before luma's at every frequency but 0
    assert bool((tau[1:, moving] < tau[0, moving]).all()) and bool((tau[:, ~moving] == 0.75).all())
    assert ns["rgb"].shape == (4, 3, 16, 16) and "swd_mean" in ns["rgb_report"]["summary"]
    assert ns["sig"].shape == (4, 1, 64) and "spec_mean_abs" in ns["sig_report"]["summary"]
    assert ns["vol"].shape == (4, 1, 8, 8, 8) and ns["vol_report"]["summary"] == {}
    for key in ("sig_report", "vol_report"):
        assert "defined for 2-D images" in ns[key]["per_seed"][0]["fid_unavailable"]
    for key in ("sig_report", "vol_report"):
        assert 0 < ns[key]["nll"]["posterior"]["bpd"] < float("inf")
    assert ns["mine"].rates.shape == (3, 16, 16) and torch.equal(ns["mine"].rates[1], 3 * ns["mine"].rates[0])


def test_the_blocks_are_found():
    assert python_blocks("text\n```python\na = 1\n```\nmore\n```bash\nls\n```\n") == ["a = 1\n"]


def test_readme_api_lines_run_as_written():
    """The README's ten lines, at 16×16 with a tiny UNet standing in for the data and network
    they name in their comment, run and give what they say (N = 1000, so nll is exact)."""
    readme = DOC.parents[1] / "README.md"
    code = python_blocks(readme.read_text().split("## The API in ten lines", 1)[1])[0]
    code = code.replace("(64, 64)", "(16, 16)").replace("3, 64, 64)", "3, 16, 16)").replace("(16, 3,", "(2, 3,")
    from gendiff.models import UNet, UNetConfig
    g = torch.Generator().manual_seed(0)
    model = UNet(UNetConfig(image_size=16, model_channels=8, num_res_blocks=1, channel_mult=(1, 2),
                            attention_ds=(), num_groups=4)).eval()
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    ns = {"x0": x0, "i": torch.tensor([1, 999]), "model": model, "g": g, "x_test": x0.clone()}
    with torch.no_grad():
        exec(compile(code, "README.md[API]", "exec"), ns)
    assert ns["x_i"].shape == x0.shape and torch.isfinite(ns["loss"])
    assert ns["samples"].shape == (2, 3, 16, 16) and torch.isfinite(ns["samples"]).all()
    bpd = ns["bpd"]
    assert bpd.exact and bpd.n == 2 and abs(bpd.prior + bpd.diffusion + bpd.decoder - bpd.bpd) < 1e-9
