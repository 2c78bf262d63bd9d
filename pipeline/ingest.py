"""Ingestion: request, cache and session logs -> a hive-partitioned Parquet lake (placeholder, see issue 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class IngestResult:
    out: Path
    manifest: dict[str, Any]
    totals: dict[str, int] = field(default_factory=dict)


def ingest(inputs, out, config=None, kind=None, progress=None) -> IngestResult:
    raise NotImplementedError
