"""An appending CSV log. Fabric's CSVLogger deletes an existing metrics.csv when a run starts
(``_check_log_dir_exists``), which would erase a resumed run's history, so we keep our own."""
from __future__ import annotations

import csv
from pathlib import Path


class CSVLog:
    """``step,<metric>,…`` rows appended to ``path``.

    Args:
        path: the CSV file.
        start_step: the step training (re)starts from: rows after it — logged after the
            checkpoint a resumed run restarts from — are dropped; 0 starts a new file.
    """

    def __init__(self, path: str | Path, start_step: int = 0):
        self.path = Path(path)
        rows = []
        if start_step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        self.path.unlink(missing_ok=True)
        if rows:
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)

    def log(self, metrics: dict[str, float], step: int) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", *metrics])
            if new:
                w.writeheader()
            w.writerow({"step": step, **metrics})
