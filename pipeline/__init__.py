"""whosaw: who saw whose data, when, and what kind, from request and cache logs.

The Python API has the CLI's verbs: ``ingest``, ``analyze``, ``report``, ``run``, ``simulate``, and
``connect`` for exploring a finished run in DuckDB (notebooks), with the investigator's helpers
``user_trail``, ``connection_timeline``, ``source_lines``, ``export_csv`` and ``reanalyze``
(:mod:`pipeline.explore`).
"""

__version__ = "0.1.0"

from .api import analyze, connect, ingest, report, run, simulate  # noqa: E402
from .explore import connection_timeline, export_csv, reanalyze, source_lines, user_trail  # noqa: E402

__all__ = [
    "__version__", "analyze", "connect", "connection_timeline", "export_csv", "ingest", "reanalyze", "report",
    "run", "simulate", "source_lines", "user_trail",
]
