"""whosaw: who saw whose data, when, and what kind, from request and cache logs.

The Python API has the CLI's verbs: ``ingest``, ``analyze``, ``report``, ``run``, ``simulate``, and
``connect`` for exploring a finished run in DuckDB (notebooks).
"""

__version__ = "0.1.0"

from .api import analyze, connect, ingest, report, run, simulate  # noqa: E402

__all__ = ["__version__", "analyze", "connect", "ingest", "report", "run", "simulate"]
