"""The recognition gallery: subjects, their example faces, and an in-memory exact index.

(Being implemented: ``load_gallery`` and ``Gallery``.)
"""

from __future__ import annotations

from typing import Any


def load_gallery(store: Any) -> Any:  # replaced by the real implementation
    return None
