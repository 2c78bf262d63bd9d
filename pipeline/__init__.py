"""whosaw: who saw whose data, when, and what kind, from request and cache logs.

The Python API has the CLI's verbs: ``ingest``, ``analyze``, ``report``, ``run``, ``simulate``, and
``connect`` for exploring a finished run in DuckDB (notebooks), with the investigator's helpers
``user_trail``, ``connection_timeline``, ``source_lines``, ``export_csv`` and ``reanalyze``
(:mod:`pipeline.explore`).
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The API is imported on first use, not with the package: DuckDB, NumPy, pyarrow and pandas take a second
# to import, and `whosaw --help` or `import pipeline.cli` need none of them. Name -> the module it is in.
_LAZY = {
    **dict.fromkeys(("analyze", "ingest", "report", "run", "simulate"), "api"),
    **dict.fromkeys(
        ("connect", "connection_timeline", "export_csv", "reanalyze", "source_lines", "user_trail"), "explore"
    ),
}

__all__ = [
    "__version__", "analyze", "connect", "connection_timeline", "export_csv", "ingest", "reanalyze", "report",
    "run", "simulate", "source_lines", "user_trail",
]

if TYPE_CHECKING:
    from .api import analyze, ingest, report, run, simulate
    from .explore import connect, connection_timeline, export_csv, reanalyze, source_lines, user_trail


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{where}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(ModuleType):
    """The package, whose verbs keep their names when the modules of the same names are imported.

    ``pipeline.report`` is the function ``report``, as it always was, although ``pipeline/report.py`` is a
    module too: Python sets the package's attribute ``report`` to that module whenever it is first imported,
    which now happens after the package is (``sys.modules["pipeline.report"]`` is the module).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
