"""The one registry mechanism: names, import paths, and configs that rebuild custom components."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from gendiff import Diffusion, build_basis
from gendiff.bases import BASES, IdentityBasis, OrthoBasis
from gendiff.models import PRESETS
from gendiff.parameterization import PARAMETERIZATIONS
from gendiff.priors import PRIORS
from gendiff.registry import Registry, UnknownNameError, import_path
from gendiff.samplers import SAMPLERS
from gendiff.schedules import SCHEDULES, SpeedSchedule, VPBlurSchedule, build_schedule
from gendiff.schedules.noise import NOISE
from gendiff.schedules.speed import SPEEDS

ALL = {"basis": BASES, "schedule": SCHEDULES, "blur speed": SPEEDS, "noise schedule": NOISE, "UNet preset": PRESETS,
       "parameterization": PARAMETERIZATIONS, "prior": PRIORS, "sampler": SAMPLERS}

PLUGIN = '''
import numpy as np

from gendiff.bases import IdentityBasis
from gendiff.samplers import Sampler, sample_ancestral
from gendiff.schedules.speed import SPEEDS

TEN_ANCESTRAL = Sampler(sample_ancestral, "uniform", 10)


class TaggedIdentity(IdentityBasis):
    """Not registered: a config records it by import path."""

    def __init__(self, shape, tag="a"):
        super().__init__(shape)
        self.tag = tag

    def config_args(self):
        return {**super().config_args(), "tag": self.tag}


@SPEEDS.register("test-sqrt")
def sqrt_speed(i, N, f_N, f_1):
    return f_1 + (f_N - f_1) * np.sqrt(i / N)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A fresh module ``mylab_plugin`` on sys.path; the registries are restored afterwards."""
    (tmp_path / "mylab_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mylab_plugin", raising=False)
    for reg in ALL.values():
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    return tmp_path


def test_every_component_kind_uses_the_registry():
    for kind, reg in ALL.items():
        assert isinstance(reg, Registry) and reg.kind == kind and len(reg) >= 2


def test_duplicate_name_is_refused():
    reg = Registry("widget")
    reg.register("a", int)
    reg.register("a", int)  # the same object again is harmless
    with pytest.raises(ValueError, match=r"widget name 'a' is already registered to builtins:int; "
                                         r"refusing to register builtins:float"):
        reg.register("a", float)
    with pytest.raises(ValueError, match=r"without ':'"):
        reg.register("pkg:a", float)


def test_duplicate_basis_name_is_refused_at_class_definition(monkeypatch):
    monkeypatch.setattr(BASES, "_entries", dict(BASES._entries))
    with pytest.raises(ValueError, match=r"basis name 'blur' is already registered to "
                                         r"gendiff.bases.blur:GaussianBlurBasis"):
        class Blur2(IdentityBasis):
            name = "blur"


@pytest.mark.parametrize("kind", sorted(ALL))
def test_unknown_name_lists_the_valid_ones(kind):
    reg = ALL[kind]
    with pytest.raises(UnknownNameError) as err:
        reg.resolve("nope")
    msg = str(err.value)
    assert msg.startswith(f"unknown {kind} 'nope'; valid names: {reg.names()}")
    assert "import path 'package.module:Name'" in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)


def test_import_path_resolves_a_class_in_a_module(plugin):
    b = build_basis({"name": "mylab_plugin:TaggedIdentity", "shape": [3, 4], "tag": "z"})
    assert type(b).__name__ == "TaggedIdentity" and b.shape == (3, 4) and b.tag == "z"
    # a custom component records its import path, a built-in its name
    assert b.config() == {"name": "mylab_plugin:TaggedIdentity", "shape": [3, 4], "tag": "z"}
    assert IdentityBasis((3, 4)).config()["name"] == "identity"
    assert build_basis(b.config()).config() == b.config()


def test_import_failure_names_the_module(plugin):
    with pytest.raises(ImportError, match=r"cannot import module 'mylab_missing' for basis "
                                          r"'mylab_missing:PCABasis'") as err:
        build_basis({"name": "mylab_missing:PCABasis", "shape": [4, 4]})
    assert err.value.name == "mylab_missing"
    (plugin / "mylab_broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ImportError, match=r"cannot import module 'mylab_broken' .*RuntimeError: boom"):
        build_basis({"name": "mylab_broken:X", "shape": [4, 4]})
    with pytest.raises(ValueError, match=r"module 'mylab_plugin' has no attribute 'PCABasis'"):
        build_basis({"name": "mylab_plugin:PCABasis", "shape": [4, 4]})
    with pytest.raises(TypeError, match=r"basis 'mylab_plugin:sqrt_speed' is mylab_plugin:sqrt_speed, "
                                        r"not a OrthoBasis"):
        build_basis({"name": "mylab_plugin:sqrt_speed", "shape": [4, 4]})


def test_registered_custom_speed_round_trips_through_the_config(plugin):
    from mylab_plugin import sqrt_speed

    assert SPEEDS.resolve("test-sqrt") is sqrt_speed
    for kind in ("test-sqrt", sqrt_speed, "mylab_plugin:sqrt_speed"):
        s = VPBlurSchedule(f_type="linear", speed=SpeedSchedule(kind, 0.5), N=20)
        cfg = s.config()
        assert cfg["f_type"] == "mylab_plugin:sqrt_speed"  # rebuildable where "test-sqrt" is not
        json.dumps(cfg)  # a checkpoint stores it as plain data
        s2 = build_schedule(cfg)
        np.testing.assert_array_equal(s2.F.numpy(), s.F.numpy())
    i = np.arange(1, 21.0)
    np.testing.assert_allclose(np.diff(s.F.numpy()), 0.5 * np.sqrt(i / 20), rtol=1e-13)


def test_custom_components_rebuild_in_a_fresh_process(plugin):
    cfg = {"basis": build_basis({"name": "mylab_plugin:TaggedIdentity", "shape": [2, 2], "tag": "q"}).config(),
           "schedule": VPBlurSchedule("test-sqrt", 0.5, N=10).config()}
    code = ("import json, sys; from gendiff import build_basis; from gendiff.schedules import build_schedule; "
            "c = json.loads(sys.argv[1]); s = build_schedule(c['schedule']); "
            "print(json.dumps([build_basis(c['basis']).config(), s.config(), s.F.tolist()]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    basis_cfg, sched_cfg, F = json.loads(out.stdout)
    assert basis_cfg == cfg["basis"] and sched_cfg == cfg["schedule"]
    np.testing.assert_array_equal(F, build_schedule(cfg["schedule"]).F.numpy())


def test_what_cannot_be_imported_again_is_refused_with_a_hint():
    s = VPBlurSchedule(speed=SpeedSchedule(lambda i, N, f_N, f_1: f_N * i / N, 0.3), N=10)
    with pytest.raises(TypeError, match=r"blur speed .* cannot be recorded in a config.*register it under a name"):
        s.config()

    class Local(IdentityBasis):
        pass

    with pytest.raises(TypeError, match=r"cannot be recorded in a config"):
        Local((2, 2)).config()
    assert import_path(IdentityBasis) == "gendiff.bases.identity:IdentityBasis"


def test_old_dict_style_access_still_works():
    assert "dpm++2m" in SAMPLERS and SAMPLERS["dpm++2m"].grid == "cubic"
    assert sorted(SPEEDS) == SPEEDS.names() and "quartic" in SPEEDS
    assert all(issubclass(cls, OrthoBasis) for cls in BASES.values())
    assert torch.equal(build_basis({"name": "identity", "shape": [2, 2]}).rates, torch.zeros(1, 2, 2, dtype=torch.float64))


def test_a_sampler_resolves_by_import_path_and_a_temporary_one_unregisters(plugin):
    d = Diffusion(IdentityBasis((2, 2)), VPBlurSchedule(N=20))
    path = "mylab_plugin:TEN_ANCESTRAL"
    assert len(d.grid(path)) == 11  # its own default of 10 steps

    def draw(sampler, steps=None):
        return d.sample(lambda x, i: 0.1 * x, (3, 1, 2, 2), sampler=sampler, steps=steps,
                        generator=torch.Generator().manual_seed(0), progress=False, dtype=torch.float64)
    assert torch.equal(draw(path), draw("ancestral", 10))
    spec = SAMPLERS.resolve(path)
    SAMPLERS.register("tmp-ancestral", spec)
    assert "tmp-ancestral" in SAMPLERS and SAMPLERS.unregister("tmp-ancestral") is spec
    assert "tmp-ancestral" not in SAMPLERS
    with pytest.raises(UnknownNameError, match="unknown sampler 'tmp-ancestral'"):
        SAMPLERS.unregister("tmp-ancestral")
