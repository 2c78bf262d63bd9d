"""The incident config (TOML, every part optional) and the exposure window.

The config says how to read the logs (field maps, zones, file globs), how to tell who owns a cache key and
what kind of data it holds (key rules), which side tables exist (ownership, grants, users) and, optionally,
the exposure window. Everything is validated here, once, so later stages can trust it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import WhosawError
from .schema import (
    DEFAULT_READ_OPS,
    DEFAULT_RESET_OPS,
    DEFAULT_WRITE_OPS,
    KINDS,
    LAKE_COLUMNS,
    UNCATEGORIZED,
)

TABLE_NAMES = ("ownership", "grants", "users")
SEVERITIES = ("low", "medium", "high", "critical")
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>")


@dataclass(frozen=True)
class FieldSpec:
    """Where a canonical field comes from: a path into the record (dotted for nested JSON) or a constant."""

    path: tuple[str, ...] | None = None
    const: str | None = None

    @property
    def is_const(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class SourceConfig:
    """How to read one log kind."""

    kind: str
    match: tuple[str, ...] = ()
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    timezone: str = "UTC"

    def field_spec(self, name: str) -> FieldSpec:
        """The spec for canonical field ``name``: mapped, or the field of the same name."""
        return self.fields.get(name, FieldSpec(path=(name,)))


@dataclass(frozen=True)
class KeyRule:
    """A key family: a regex over cache keys naming the owner (or a resource) and the data's category."""

    order: int
    pattern: str  # as written in the config (Python/RE2 syntax with named groups)
    sql_pattern: str  # the same regex with named groups made plain, for DuckDB's and Spark's regexp_extract
    owner_group: int  # 0 = the rule names no owner
    resource_group: int  # 0 = the rule names no resource
    category: str
    severity: str


@dataclass(frozen=True)
class Window:
    """A half-open interval [start, end) in UTC; ``auto`` means: find it from the data."""

    start: datetime | None = None
    end: datetime | None = None
    auto: bool = False
    source: str = "all"  # "cli", "config", "auto" or "all" (no window: all time in the logs)

    def iso(self) -> str:
        if self.auto:
            return "auto"
        if self.start is None and self.end is None:
            return "all"
        return f"{_iso(self.start)}/{_iso(self.end)}"


@dataclass(frozen=True)
class CacheOps:
    """Which cache operations return data, write data, or reset a connection."""

    read: tuple[str, ...] = DEFAULT_READ_OPS
    write: tuple[str, ...] = DEFAULT_WRITE_OPS
    reset: tuple[str, ...] = DEFAULT_RESET_OPS


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    window: Window | None = None
    sources: dict[str, SourceConfig] = field(default_factory=lambda: {k: SourceConfig(k) for k in KINDS})
    keys: tuple[KeyRule, ...] = ()
    tables: dict[str, Path] = field(default_factory=dict)
    cache_ops: CacheOps = field(default_factory=CacheOps)
    raw: dict[str, Any] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """What the manifest records: where the config came from and what it said."""
        return {"path": str(self.path) if self.path else None, "settings": self.raw}


def _iso(ts: datetime | None) -> str:
    if ts is None:
        return ""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: str, what: str = "time") -> datetime:
    """An ISO-8601 instant; without a zone it is UTC. Always returned in UTC."""
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WhosawError(f"{what}: {text.strip()[:40]!r} is not an ISO-8601 time") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def parse_window(text: str | None, source: str = "cli") -> Window | None:
    """``START/END`` (ISO-8601), ``auto``, or None (no window given)."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() == "auto":
        return Window(auto=True, source="auto")
    if text.lower() == "all":
        return Window(source="all")
    if text.count("/") != 1:
        raise WhosawError("window: expected START/END (ISO-8601), 'auto' or 'all'")
    start_text, end_text = text.split("/")
    start = parse_timestamp(start_text, "window start")
    end = parse_timestamp(end_text, "window end")
    if end <= start:
        raise WhosawError("window: the end must come after the start")
    return Window(start=start, end=end, source=source)


def _field_spec(kind: str, name: str, value: Any) -> FieldSpec:
    if name not in LAKE_COLUMNS[kind]:
        known = ", ".join(LAKE_COLUMNS[kind])
        raise WhosawError(f"config: sources.{kind}.fields: unknown field {name!r} (known: {known})")
    if isinstance(value, dict) and set(value) == {"const"}:
        return FieldSpec(const=str(value["const"]))
    if isinstance(value, str) and value:
        if len(value) >= 2 and value[0] == value[-1] == '"':
            return FieldSpec(path=(value[1:-1],))  # a quoted name is one literal field, dots and all
        return FieldSpec(path=tuple(value.split(".")))
    raise WhosawError(
        f"config: sources.{kind}.fields.{name}: expected a field name, a dotted path or {{ const = \"...\" }}"
    )


def _source(kind: str, table: dict[str, Any]) -> SourceConfig:
    unknown = set(table) - {"match", "fields", "timezone"}
    if unknown:
        raise WhosawError(f"config: sources.{kind}: unknown setting {sorted(unknown)[0]!r}")
    match = table.get("match", [])
    if isinstance(match, str):
        match = [match]
    zone = table.get("timezone", "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WhosawError(f"config: sources.{kind}.timezone: unknown time zone {zone!r}") from None
    fields = {name: _field_spec(kind, name, value) for name, value in table.get("fields", {}).items()}
    return SourceConfig(kind=kind, match=tuple(match), fields=fields, timezone=zone)


def _key_rule(order: int, table: dict[str, Any]) -> KeyRule:
    pattern = table.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise WhosawError(f"config: keys[{order}]: a pattern is required")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise WhosawError(f"config: keys[{order}]: invalid pattern ({exc})") from None
    groups = compiled.groupindex
    if "owner" in groups and "resource" in groups:
        raise WhosawError(f"config: keys[{order}]: a pattern names an owner or a resource, not both")
    severity = str(table.get("severity", "medium")).lower()
    if severity not in SEVERITIES:
        raise WhosawError(f"config: keys[{order}].severity: expected one of {', '.join(SEVERITIES)}")
    return KeyRule(
        order=order,
        pattern=pattern,
        sql_pattern=_NAMED_GROUP.sub("(", pattern),
        owner_group=groups.get("owner", 0),
        resource_group=groups.get("resource", 0),
        category=str(table.get("category", UNCATEGORIZED)),
        severity=severity,
    )


def _ops(table: dict[str, Any]) -> CacheOps:
    def upper(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(op).upper() for op in table.get(name, default))

    return CacheOps(
        read=upper("read_ops", DEFAULT_READ_OPS),
        write=upper("write_ops", DEFAULT_WRITE_OPS),
        reset=upper("reset_ops", DEFAULT_RESET_OPS),
    )


def load_config(path: str | Path | None) -> Config:
    """Read and validate a TOML config; ``None`` gives the defaults (no rules, no tables, all time)."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WhosawError(f"config: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WhosawError(f"config: cannot read {path} ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise WhosawError(f"config: {path} is not valid TOML ({exc})") from None
    return config_from_dict(raw, path)


def config_from_dict(raw: dict[str, Any], path: Path | None = None) -> Config:
    """Build a Config from already-parsed TOML; table paths are relative to ``path``'s folder."""
    unknown = set(raw) - {"window", "sources", "keys", "tables", "cache"}
    if unknown:
        raise WhosawError(f"config: unknown section {sorted(unknown)[0]!r}")

    window = None
    window_table = raw.get("window", {})
    if window_table.get("auto"):
        window = Window(auto=True, source="auto")
    elif "start" in window_table or "end" in window_table:
        if not ("start" in window_table and "end" in window_table):
            raise WhosawError("config: [window] needs both start and end (or auto = true)")
        window = parse_window(f"{window_table['start']}/{window_table['end']}", source="config")

    sources_table = raw.get("sources", {})
    for kind in sources_table:
        if kind not in KINDS:
            raise WhosawError(f"config: unknown source kind {kind!r} (known: {', '.join(KINDS)})")
    sources = {kind: _source(kind, sources_table.get(kind, {})) for kind in KINDS}

    keys = tuple(_key_rule(i, table) for i, table in enumerate(raw.get("keys", [])))

    base = path.parent if path else Path.cwd()
    tables: dict[str, Path] = {}
    for name, rel in raw.get("tables", {}).items():
        if name not in TABLE_NAMES:
            raise WhosawError(f"config: unknown table {name!r} (known: {', '.join(TABLE_NAMES)})")
        table_path = (base / rel).resolve()
        if not table_path.is_file():
            raise WhosawError(f"config: tables.{name}: {table_path} does not exist")
        tables[name] = table_path

    return Config(
        path=path.resolve() if path else None,
        window=window,
        sources=sources,
        keys=keys,
        tables=tables,
        cache_ops=_ops(raw.get("cache", {})),
        raw=raw,
    )


def resolve_window(cli_window: str | None, config: Config) -> Window:
    """--window wins over the config's [window]; neither means all time in the logs."""
    return parse_window(cli_window, source="cli") or config.window or Window(source="all")


def as_config(config: str | Path | Config | None) -> Config:
    """Accept a Config, a path to a TOML file, or None (defaults)."""
    if isinstance(config, Config):
        return config
    return load_config(config)
