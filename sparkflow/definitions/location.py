"""Where in a DAG file a DAG or task was written, so errors can name the line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True)
class Location:
    filename: str
    lineno: int

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno}"


def caller_location() -> Location | None:
    """The first frame on the stack that is not sparkflow's own code (the user's DAG file)."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE_DIR) and not filename.startswith("<frozen"):
            return Location(filename, frame.f_lineno)
        frame = frame.f_back  # type: ignore[assignment]
    return None
