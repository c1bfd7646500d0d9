"""The one value-range mapper used by data, metrics and figures."""
import numpy as np
import pytest
import torch

from gendiff.value_range import map_range


@pytest.mark.parametrize("vr", [(-1.0, 1.0), (0.0, 1.0), (-0.5, 2.0)])
def test_map_range_is_affine_and_inverts(vr):
    x01 = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = map_range(x01, (0.0, 1.0), vr)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, x01 * (vr[1] - vr[0]) + vr[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(map_range(x, vr), x01, atol=1e-6, rtol=0)
    assert float(map_range(torch.tensor(vr[0]), vr)) == 0.0 and float(map_range(torch.tensor(vr[1]), vr)) == 1.0


def test_uint8_is_read_as_0_255_and_clamp_is_optional():
    u8 = np.array([0, 51, 255], dtype=np.uint8)
    torch.testing.assert_close(map_range(u8, (-1.0, 1.0)), torch.tensor([0.0, 0.2, 1.0]))
    over = torch.tensor([-1.5, 0.0, 1.5])
    torch.testing.assert_close(map_range(over), torch.tensor([-0.25, 0.5, 1.25]))
    torch.testing.assert_close(map_range(over, clamp=True), torch.tensor([0.0, 0.5, 1.0]))


def test_bad_ranges_and_dtypes_name_the_value():
    with pytest.raises(ValueError, match=r"src must be \(lo, hi\) with lo < hi, got \(1.0, 1.0\)"):
        map_range(torch.zeros(1), (1.0, 1.0))
    with pytest.raises(ValueError, match=r"dst must be \(lo, hi\) with lo < hi, got \(1, -1\)"):
        map_range(torch.zeros(1), (0.0, 1.0), (1, -1))
    with pytest.raises(TypeError, match=r"uint8 or floating-point images, got torch.int64"):
        map_range(torch.zeros(1, dtype=torch.int64))
