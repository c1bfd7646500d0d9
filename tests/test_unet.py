"""Tests of the guided-diffusion UNet (gendiff.models.unet)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
import torch

from gendiff.models import PRESETS, UNet, UNetConfig, build_model, timestep_embedding
from gendiff.models.unet import AttentionBlock


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper64_has_the_papers_parameter_count():
    # The meta device allocates nothing, so counting 121M parameters costs no memory or time.
    with torch.device("meta"):
        model = UNet(PRESETS["paper64"])
    assert n_params(model) == 121_060_483


def test_paper64_matches_guided_diffusion_layout():
    with torch.device("meta"):
        model = UNet(PRESETS["paper64"])
    # 1 conv_in + 4 levels x 3 res blocks + 3 downsamples; 4 x 4 blocks on the way up.
    assert len(model.input_blocks) == 16
    assert len(model.output_blocks) == 16
    n_attn = sum(isinstance(m, AttentionBlock) for m in model.modules())
    # ds 4 and 8: 3 + 3 down, 4 + 4 up, 1 in the middle.
    assert n_attn == 15
    assert model.time_embed[0].in_features == 128 and model.time_embed[2].out_features == 512


@pytest.mark.parametrize("name", ["tiny", "small", "medium"])
def test_presets_are_small(name):
    limits = {"tiny": 150_000, "small": 1_000_000, "medium": 3_000_000}
    assert n_params(build_model(name)) < limits[name]


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_forward_shape_and_zero_at_init(name):
    torch.manual_seed(0)
    model = build_model(name)
    cfg = model.config
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    out = model(x, torch.tensor([0, 17, 999]))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv


def test_output_becomes_nonzero_after_one_step():
    torch.manual_seed(0)
    model = build_model("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, i = torch.randn(4, 3, 16, 16), torch.randint(0, 1000, (4,))
    loss = (model(x, i) - torch.randn_like(x)).square().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        out = model(x, i)
    assert out.abs().max() > 0
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient_eventually():
    # Step 1 opens the output conv, step 2 the zero convs inside the blocks, so the third
    # backward pass reaches every parameter; one left untouched would mean a wiring mistake.
    torch.manual_seed(0)
    model = build_model("tiny")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, i = torch.randn(2, 3, 8, 8), torch.tensor([5, 500])
    for _ in range(3):
        opt.zero_grad()
        (model(x, i) - x).square().mean().backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_float64_forward():
    torch.manual_seed(0)
    model = build_model("tiny").double()
    with torch.no_grad():
        for p in model.out[-1].parameters():
            p.normal_()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    out = model(x, torch.tensor([1, 2]))
    assert out.dtype == torch.float64 and out.shape == x.shape and out.abs().max() > 0


def test_non_square_input():
    model = build_model("small")
    x = torch.randn(2, 1, 8, 24)
    assert model(x, torch.tensor([3, 4])).shape == x.shape


def test_scalar_step_broadcasts_and_steps_matter():
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(std=0.1)  # open the zero-initialised layers
    x = torch.randn(2, 3, 8, 8)
    a = model(x, torch.tensor(7))
    assert torch.allclose(a, model(x, torch.tensor([7, 7])))
    assert not torch.allclose(a, model(x, torch.tensor([8, 8])))


def test_bad_size_raises_clear_error():
    model = build_model("small")  # three levels: sides must be multiples of 4
    with pytest.raises(ValueError, match=r"divisible by 2\*\*\(len\(channel_mult\)-1\)=4"):
        model(torch.randn(1, 1, 16, 10), torch.tensor([0]))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 3, 16, 16), torch.tensor([0]))
    with pytest.raises(ValueError, match="steps"):
        model(torch.randn(2, 1, 16, 16), torch.tensor([0, 1, 2]))


def test_bad_config_raises():
    with pytest.raises(ValueError, match="num_groups"):
        UNetConfig(model_channels=24, num_groups=32)
    with pytest.raises(ValueError, match="num_heads"):
        UNetConfig(model_channels=32, channel_mult=(1, 2, 3), attention_ds=(4,), num_heads=5)
    with pytest.raises(ValueError, match="image_size"):
        UNetConfig(image_size=20)


def test_config_round_trip_through_asdict_and_json():
    cfg = PRESETS["small"]
    d = json.loads(json.dumps(asdict(cfg)))  # lists instead of tuples, as a checkpoint would hold
    rebuilt = UNetConfig(**d)
    assert rebuilt == cfg and hash(rebuilt) == hash(cfg)
    assert isinstance(rebuilt.channel_mult, tuple) and isinstance(rebuilt.attention_ds, tuple)
    # Same config gives the same architecture, so a state dict loads strictly.
    build_model(d).load_state_dict(build_model("small").state_dict())


def test_build_model_overrides():
    model = build_model("small", image_size=32, in_channels=3)
    assert model.config.image_size == 32
    assert model.config.in_channels == 3 and model.config.out_channels == 3
    assert build_model("tiny", out_channels=6).config.out_channels == 6
    with pytest.raises(TypeError, match="unknown"):
        build_model("tiny", channels=3)
    with pytest.raises(KeyError, match="paper64"):
        build_model("huge")


def test_no_scale_shift_variant_runs():
    model = build_model("tiny", use_scale_shift_norm=False, dropout=0.1)
    x = torch.randn(2, 3, 8, 8)
    assert model(x, torch.tensor([0, 1])).shape == x.shape


def test_timestep_embedding_is_the_standard_sinusoid():
    steps = torch.tensor([0, 1, 250, 999])
    emb = timestep_embedding(steps, 8)
    freqs = [math.exp(-math.log(10000.0) * k / 4) for k in range(4)]
    expected = torch.tensor([[math.cos(s * f) for f in freqs] + [math.sin(s * f) for f in freqs]
                             for s in steps.tolist()])
    assert torch.allclose(emb, expected, atol=1e-5)
    assert timestep_embedding(steps, 7).shape == (4, 7)


def test_attention_matches_legacy_head_order():
    # Reference: guided diffusion's legacy attention, heads major, [q, k, v] within each head.
    torch.manual_seed(0)
    block = AttentionBlock(8, num_heads=2, groups=4)
    torch.nn.init.normal_(block.proj_out.weight)
    x = torch.randn(2, 8, 3, 5)
    b, c, h, w = x.shape
    qkv = block.qkv(block.norm(x).reshape(b, c, h * w))
    q, k, v = qkv.reshape(b * 2, 3 * 4, h * w).split(4, dim=1)
    scale = 1 / math.sqrt(math.sqrt(4))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    a = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
    expected = x + block.proj_out(a).reshape(b, c, h, w)
    assert torch.allclose(block(x), expected, atol=1e-5)
