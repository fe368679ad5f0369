"""Where a benchmark's result goes: <folder>/<stem>_<date>.json, or _2, _3, ... after it, never over an earlier run."""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any


def write_result(folder: Path, stem: str, result: dict[str, Any]) -> Path:
    """Write `result` as indented JSON to the first free <stem>_<date>[_<n>].json in `folder`; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}_{datetime.date.today().isoformat()}"
    n = 1
    while True:
        path = folder / (f"{base}.json" if n == 1 else f"{base}_{n}.json")
        try:
            with path.open("x") as out:  # "x": fails rather than replace a file another run wrote meanwhile
                out.write(json.dumps(result, indent=2) + "\n")
            return path
        except FileExistsError:
            n += 1
