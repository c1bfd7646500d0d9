"""benchmarks/gpu.py --quick --device cpu runs every section's code path (the GPU run's dry run)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~1 min on 2 busy cores: a subprocess running every section
def test_gpu_script_quick_on_cpu(tmp_path):
    out = tmp_path / "gpu"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--device", "cpu",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    report = (out / "report.md").read_text()
    assert r.returncode == 0, report + r.stderr[-3000:]
    for title in ["(a) GPU tests", "(b) Training step", "(c) Sampling", "(d) Peak GPU memory",
                  "(e) Short training run"]:
        assert f"## {title}" in report
    assert report.count("Status: **ok**") == 5, report
    for word in ("FAILED", "SKIPPED", "NOT RUN"):
        assert word not in report
    for table_row in ("| eager | 32-true | blur |", "| eager | bf16-mixed | identity |",
                      "| compiled | bf16-mixed | blur |", "| blur | dpm++2m 5 |", "| identity | reverse 1000"):
        assert table_row in report, table_row
    assert "steps in" in report  # section (e) trained and reported its step count
    for png in ("loss.png", "samples.png"):
        assert (out / png).stat().st_size > 1000
