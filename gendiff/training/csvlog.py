"""An appending CSV log. Fabric's CSVLogger deletes an existing metrics.csv when a run starts
(``_check_log_dir_exists``), which would erase a resumed run's history, so we keep our own."""
from __future__ import annotations

import csv
import io
import os
import time
import warnings
from pathlib import Path

from gendiff.files import open_append, write_text_atomic


class CSVLog:
    """``step,<metric>,…`` rows appended to ``path`` (never through a symlink).

    Args:
        path: the CSV file.
        start_step: the step training (re)starts from: rows after it — logged after the
            checkpoint a resumed run restarts from — are dropped; 0 starts a new file. A row
            that does not parse (a last line cut short by a kill or a full disk) is dropped
            with a warning instead of stopping the resume.
    """

    def __init__(self, path: str | Path, start_step: int = 0):
        self.path = Path(path)
        rows, fields = (self._read(start_step) if start_step > 0 and self.path.is_file() else ([], None))
        if rows:
            out = io.StringIO()
            w = csv.DictWriter(out, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
            write_text_atomic(self.path, out.getvalue())
        elif start_step > 0 and self.path.is_file() and self.path.stat().st_size:
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.path, aside)  # a resumed run's history is never deleted
            warnings.warn(f"{self.path}: no row parses; the file was moved to {aside} and a new one starts",
                          stacklevel=2)
        elif self.path.is_file() or self.path.is_symlink():
            self.path.unlink()  # a fresh start (the trainer set any old run aside first)

    def _read(self, start_step: int) -> tuple[list[dict], list[str] | None]:
        with open(self.path, newline="", errors="replace") as f:
            reader = csv.DictReader(f)
            rows, bad = [], 0
            for r in reader:
                try:
                    step = int(r["step"])
                    [float(v) for k, v in r.items() if k != "step" and v != ""]
                    ok = None not in r and None not in r.values()
                except (KeyError, ValueError, TypeError):
                    ok = False
                if not ok:
                    bad += 1
                elif step <= start_step:
                    rows.append(r)
            fields = reader.fieldnames
        if bad:
            warnings.warn(f"{self.path}: dropped {bad} row(s) that do not parse (a line cut short when the run "
                          "stopped?); the rows before them are kept", stacklevel=3)
        return rows, list(fields) if fields else None

    def log(self, metrics: dict[str, float], step: int) -> None:
        new = not self.path.is_file()
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=["step", *metrics])
        if new:
            w.writeheader()
        w.writerow({"step": step, **metrics})
        with open_append(self.path) as f:
            f.write(out.getvalue().encode())
