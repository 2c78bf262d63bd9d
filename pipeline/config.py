"""The incident config (TOML, every part optional) and the exposure window.

The config says how to read the logs (field maps, zones, file globs), how to tell who owns a cache key and
what kind of data it holds (key rules), which side tables exist (ownership, grants, users) and, optionally,
the exposure window. Everything is validated here, once, so later stages can trust it.
"""

from __future__ import annotations

import json
import re
import tomllib
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import NO_SPILL, WhosawError
from .manifest import load_manifest
from .schema import (
    CACHE_STATUSES,
    DEFAULT_READ_OPS,
    DEFAULT_RESET_OPS,
    DEFAULT_WRITE_OPS,
    KINDS,
    LAKE_COLUMNS,
    SESSION_EVENTS,
    UNCATEGORIZED,
)

TABLE_NAMES = ("ownership", "grants", "users")
SEVERITIES = ("low", "medium", "high", "critical")
# sources.<kind>.format: how to read a file of that kind whose name does not tell (access.log, app.log.2.gz)
SOURCE_FORMATS = {"jsonl": "json", "ndjson": "json", "json": "json", "csv": "csv"}
# sources.<kind>.ts_format: DuckDB strptime specifiers (``%-d`` is ``%d`` without padding; ``%%`` a literal %)
_SPECIFIER = re.compile(r"%-?(.)", re.DOTALL)
_YEARS = frozenset("Yycx")  # a format without one of these reads every time into 1900
# sources.<kind>.values: the fields SPEC gives words to, with those words (what a map may map a logged word to).
# Not a request's status (a number), nor a cache op: ops are free words, named as logged in [cache].
VALUE_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "requests": {},
    "cache": {"status": CACHE_STATUSES},
    "sessions": {"event": SESSION_EVENTS},
}
_VALUE_FIELDS_NOTE = {
    "requests": "none; a request's status is a number",
    "cache": "status; an op needs no map: [cache] read_ops, write_ops and reset_ops name ops as logged",
    "sessions": "event",
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>")
_PATH_PART = re.compile(r'"([^"]+)"|([^."]+)')  # one part of a field path: a quoted name, or a name without dots
# An ISO-8601 duration of fixed length: weeks, or days and a time of hours, minutes, seconds (a decimal fraction on
# the seconds). Not pandas' Timedelta, which reads P1M as a minute, PT1H30 as an hour and P1.5D as five days.
_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W|(?=\d|T\d)(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d{1,6})?)S)?)?)"
)


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
    format: str | None = None  # json | csv | parquet: for a file of this kind whose name does not say (access.log)
    ts_format: tuple[str, ...] = ()  # DuckDB strptime formats tried on a ts text before ISO-8601 and epochs
    # field -> {logged word, lower case -> SPEC's word}: cache status, sessions event (VALUE_WORDS)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    # where in each line the log record is (the field map reads inside it): the path of a field, or a CSV column,
    # holding it as JSON text (Docker's "log", a Splunk export's "result._raw" or CSV "_raw", CloudWatch's
    # "message"), or payload_pattern, a regex whose one group is it in a text line (JSON logs only: a Kubernetes
    # node's container log, CloudWatch's export to S3: a time and more before the JSON)
    payload: tuple[str, ...] | None = None
    payload_pattern: str | None = None

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


def strptime_specifiers(fmt: str) -> set[str]:
    """The specifier letters of a strptime format (``z`` for ``%z``): what ingest and the config check need."""
    return set(_SPECIFIER.findall(fmt))


def _iso(ts: datetime | None) -> str:
    if ts is None:
        return ""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def resolve_config(out: Path, config: str | Path | Config | None) -> Config:
    """The config given, else the one the latest ingest into ``out`` recorded in its manifest (a later ingest of
    late logs, an analysis: the same field map, zones and key rules without --config), else the defaults."""
    if config is not None:
        return as_config(config)
    recorded = load_manifest(out).get("config") or {}
    path = recorded.get("path") if isinstance(recorded, dict) else None
    if path and Path(path).is_file():
        return load_config(path)
    settings = recorded.get("settings") if isinstance(recorded, dict) else None
    if settings:
        return config_from_dict(settings, Path(path) if path else None)
    return Config()


def analysis_config(out: str | Path) -> Config:
    """The config the analysis of ``out`` used: the settings its manifest recorded (``analysis.config_settings``:
    also those of a Config built in code, and as they were, whatever the file says now), else its file, else the
    one ingest recorded: the key rules behind ``exposures``, which an explanation of them must use too."""
    out = Path(out)
    analysis = load_manifest(out).get("analysis") or {}
    path, settings = analysis.get("config"), analysis.get("config_settings")
    if isinstance(settings, dict) and settings:
        return config_from_dict(settings, Path(path) if isinstance(path, str) else None)
    if isinstance(path, str) and Path(path).is_file():
        return load_config(path)
    return resolve_config(out, None)


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
    """An ISO-8601 interval: ``START/END``, ``START/DURATION`` or ``DURATION/END`` (``PT9H``, ``P1DT2H``, ``P2W``);
    ``auto``, ``all``, or None (no window given)."""
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
    start_is_duration, end_is_duration = (part.strip().upper().startswith("P") for part in (start_text, end_text))
    if start_is_duration and end_is_duration:
        raise WhosawError("window: an interval of two durations has no time: write START/END or START/DURATION")
    if end_is_duration:
        start = parse_timestamp(start_text, "window start")
        end = _add(start, parse_duration(end_text, "window end"), "window end")
    elif start_is_duration:
        end = parse_timestamp(end_text, "window end")
        start = _add(end, -parse_duration(start_text, "window start"), "window start")
    else:
        start = parse_timestamp(start_text, "window start")
        end = parse_timestamp(end_text, "window end")
    if end <= start:
        raise WhosawError("window: the end must come after the start")
    return Window(start=start, end=end, source=source)


def parse_duration(text: str, what: str) -> timedelta:
    """An ISO-8601 duration of fixed length (:data:`_DURATION`); years and months, whose length varies, are an error."""
    value = text.strip().upper()
    match = _DURATION.fullmatch(value)
    if match is None:
        if re.search(r"\d[YM]", value.split("T")[0]):  # a number of years or months before any time part
            raise WhosawError(f"{what}: {text!r} counts years or months, whose length varies: write days (P30D)")
        raise WhosawError(f"{what}: {text!r} is not an ISO-8601 duration such as PT9H, P1DT2H or P2W")
    parts = {name: float(number.replace(",", ".")) for name, number in match.groupdict().items() if number}
    try:
        return timedelta(**parts)
    except OverflowError:
        raise WhosawError(f"{what}: {text!r} reaches past the years a time can have") from None


def _add(moment: datetime, duration: timedelta, what: str) -> datetime:
    try:
        return moment + duration
    except OverflowError:
        raise WhosawError(f"{what}: the duration reaches past the years a time can have") from None


# ------------------------------------------------------------------------------ the TOML values' types

_TOML_TYPES = ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
               (list, "an array"), (dict, "a table"), (datetime, "a date-time"), (date, "a date"))


def _a(value: Any) -> str:
    """What a TOML value is, in words (never the value itself)."""
    return next((name for kind, name in _TOML_TYPES if isinstance(value, kind)), "a time")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WhosawError(f"config: {where}: expected a table, got {_a(value)}")
    return value


def _known(table: dict[str, Any], where: str, known: tuple[str, ...]) -> None:
    unknown = set(table) - set(known)
    if unknown:
        raise WhosawError(f"config: {where}: unknown setting {sorted(unknown)[0]!r} (known: {', '.join(known)})")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        got = "an empty string" if value == "" else _a(value)
        raise WhosawError(f"config: {where}: expected a non-empty string, got {got}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A list of non-empty strings (a single string is a list of one)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise WhosawError(f"config: {where}: expected a list of strings, got {_a(value)}")
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))


# ---------------------------------------------------------------------------------------------- sections

def _field_spec(kind: str, name: str, value: Any) -> FieldSpec:
    if name not in LAKE_COLUMNS[kind]:
        known = ", ".join(LAKE_COLUMNS[kind])
        raise WhosawError(f"config: sources.{kind}.fields: unknown field {name!r} (known: {known})")
    if isinstance(value, dict) and set(value) == {"const"}:
        return FieldSpec(const=str(value["const"]))
    if isinstance(value, str) and value:
        return FieldSpec(path=_path(value, f"sources.{kind}.fields.{name}"))
    raise WhosawError(
        f"config: sources.{kind}.fields.{name}: expected a field name, a dotted path or {{ const = \"...\" }}"
    )


def _path(value: str, where: str) -> tuple[str, ...]:
    """A field name or dotted path (``ctx.user.id``), quoted parts one name each (``attributes."db.redis.key"``)."""
    if '"' not in value:
        return tuple(value.split("."))
    path = _quoted_path(value)
    if path:
        return path
    raise WhosawError(
        f"config: {where}: a quoted part of a path is a whole name between dots, as in attributes.\"db.redis.key\""
    )


def _quoted_path(value: str) -> tuple[str, ...] | None:
    """A dotted path with quoted parts (OpenTelemetry's ``{"attributes": {"db.redis.key": ...}}``), or None."""
    parts = list(_PATH_PART.finditer(value))
    if ".".join(part.group(0) for part in parts) != value:
        return None
    return tuple(part.group(1) or part.group(2) for part in parts)


def _source(kind: str, value: Any) -> SourceConfig:
    table = _table(value, f"sources.{kind}")
    _known(table, f"sources.{kind}", ("match", "fields", "timezone", "format", "ts_format", "values", "payload"))
    match = _strings(table.get("match", []), f"sources.{kind}.match")
    for i, glob in enumerate(match):
        if "/" in glob:  # matched against the file name alone: a folder in it never matches
            raise WhosawError(
                f"config: sources.{kind}.match[{i}]: a glob is matched against the file name, not its folder "
                "(drop the folder part: give the folder as INPUT)"
            )
    fmt = None
    if "format" in table:
        fmt = SOURCE_FORMATS.get(_string(table["format"], f"sources.{kind}.format").lower())
        if fmt is None:
            raise WhosawError(f"config: sources.{kind}.format: expected one of {', '.join(SOURCE_FORMATS)}")
    zone = _string(table.get("timezone", "UTC"), f"sources.{kind}.timezone")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WhosawError(f"config: sources.{kind}.timezone: unknown time zone {zone!r}") from None
    field_map = _table(table.get("fields", {}), f"sources.{kind}.fields")
    fields = {name: _field_spec(kind, name, value) for name, value in field_map.items()}
    ts_format = _ts_formats(table["ts_format"], f"sources.{kind}.ts_format") if "ts_format" in table else ()
    values = _values(kind, table.get("values", {}))
    payload, payload_pattern = _payload(kind, table["payload"]) if "payload" in table else (None, None)
    if payload_pattern and fmt == "csv":  # format names jsonl or csv only: a Parquet file says so itself
        raise WhosawError(f"config: sources.{kind}.payload: a pattern is read from JSON logs only, not csv")
    return SourceConfig(
        kind=kind, match=tuple(match), fields=fields, timezone=zone, format=fmt, ts_format=ts_format, values=values,
        payload=payload, payload_pattern=payload_pattern,
    )


def _payload(kind: str, value: Any) -> tuple[tuple[str, ...] | None, str | None]:
    """sources.<kind>.payload: a field path (``"log"``), or ``{ pattern = '...' }``, a regex with one group."""
    where = f"sources.{kind}.payload"
    if isinstance(value, dict):
        _known(value, where, ("pattern",))
        if "pattern" not in value:
            raise WhosawError(f"config: {where}: a field path, or {{ pattern = '...' }} with one group")
        pattern = _string(value["pattern"], f"{where}.pattern")
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise WhosawError(f"config: {where}.pattern: invalid pattern ({exc})") from None
        if groups != 1:
            raise WhosawError(
                f"config: {where}.pattern: it needs exactly one group (...), around the log record; it has {groups}"
                " (make the others (?:...))"
            )
        return None, pattern
    return _path(_string(value, where), where), None


def _ts_formats(value: Any, where: str) -> tuple[str, ...]:
    """One strptime format or a non-empty list of them (each checked in :func:`_check_runs_in_duckdb`)."""
    formats = (_string(value, where),) if isinstance(value, str) else _strings(value, where)
    if not formats:
        raise WhosawError(f"config: {where}: expected a format or a non-empty list of formats")
    return formats


def _values(kind: str, value: Any) -> dict[str, dict[str, str]]:
    """sources.<kind>.values: per field, its logged words -> SPEC's words. A logged word is kept in lower case, as
    ingest lower-cases the field before reading it (the map matches in any case); two keys that are one word in
    lower case must agree, else which one wins would depend on the case a line was logged in."""
    where = f"sources.{kind}.values"
    maps: dict[str, dict[str, str]] = {}
    for name, words in _table(value, where).items():
        if name not in VALUE_WORDS[kind]:
            raise WhosawError(f"config: {where}: unknown field {name!r} (known: {_VALUE_FIELDS_NOTE[kind]})")
        spec_words = VALUE_WORDS[kind][name]
        read: dict[str, str] = {}
        first: dict[str, str] = {}  # lower case -> the key as written
        for logged, target in _table(words, f"{where}.{name}").items():
            key = f"{where}.{name}.{logged if _BARE_KEY.fullmatch(logged) else json.dumps(logged)}"
            if not logged or logged != logged.strip():
                raise WhosawError(
                    f"config: {key}: a logged word must be non-empty without spaces around it (it is matched as "
                    "logged, in any case)"
                )
            word = _string(target, key).lower()
            if word not in spec_words:
                raise WhosawError(f"config: {key}: expected one of {', '.join(spec_words)}")
            folded = logged.lower()
            if read.get(folded, word) != word:
                raise WhosawError(
                    f"config: {where}.{name}: {first[folded]!r} and {logged!r} are the same word in any case but "
                    f"map to {read[folded]!r} and {word!r}"
                )
            read[folded] = word
            first.setdefault(folded, logged)
        maps[name] = read
    return maps


def _key_rule(order: int, value: Any) -> KeyRule:
    where = f"keys[{order}]"
    table = _table(value, where)
    _known(table, where, ("pattern", "category", "severity"))
    if "pattern" not in table:
        raise WhosawError(f"config: {where}: a pattern is required")
    pattern = _string(table["pattern"], f"{where}.pattern")
    try:
        with warnings.catch_warnings():  # "possible nested set" for RE2's [[:alpha:]]: RE2 reads it, not Python
            warnings.simplefilter("ignore", FutureWarning)
            compiled = re.compile(pattern)
    except re.error as exc:
        raise WhosawError(f"config: {where}.pattern: invalid pattern ({exc})") from None
    groups = compiled.groupindex
    if "owner" in groups and "resource" in groups:
        raise WhosawError(f"config: {where}: a pattern names an owner or a resource, not both")
    # A misspelt group ('(?P<resourc>') would make the rule name nobody: its data public, its victims unlisted.
    others = sorted(set(groups) - {"owner", "resource"})
    if others:
        raise WhosawError(
            f"config: {where}.pattern: named group {others[0]!r} is neither 'owner' nor 'resource' (a rule without "
            "either says its keys' data is nobody's: use an unnamed group (...) for other parts)"
        )
    severity = _string(table.get("severity", "medium"), f"{where}.severity").lower()
    if severity not in SEVERITIES:
        raise WhosawError(f"config: {where}.severity: expected one of {', '.join(SEVERITIES)}")
    rule = KeyRule(
        order=order,
        pattern=pattern,
        sql_pattern=_NAMED_GROUP.sub("(", pattern),
        owner_group=groups.get("owner", 0),
        resource_group=groups.get("resource", 0),
        category=_string(table.get("category", UNCATEGORIZED), f"{where}.category"),
        severity=severity,
    )
    return rule


def _check_runs_in_duckdb(rules: tuple[KeyRule, ...], sources: dict[str, SourceConfig]) -> None:
    """What Python accepts but DuckDB may not, tried on one DuckDB connection as ingest and the analysis will use
    it: each rule's pattern compiled (:func:`pipeline.analyze.key_rule_sql`; Python's ``re`` accepts lookarounds,
    backreferences, ``\\Z``... that RE2 does not), each source's time zone set (``zoneinfo`` also takes
    ``localtime``, ``posixrules``, ``posix/...``, ``right/...``, which DuckDB's ICU does not know), and each
    source's ts_format read by strptime (``%Q``, a trailing ``%``: DuckDB refuses the whole ingest statement) and
    holding a year (without one, strptime reads every time into 1900: every line bad_ts)."""
    zones = {kind: source.timezone for kind, source in sources.items() if source.timezone != "UTC"}
    formats = [(kind, fmt) for kind, source in sources.items() for fmt in source.ts_format]
    payloads = {kind: source.payload_pattern for kind, source in sources.items() if source.payload_pattern}
    if not rules and not zones and not formats and not payloads:
        return
    import duckdb  # here, not at the top: the CLI starts without DuckDB

    with duckdb.connect(config=NO_SPILL) as con:
        for rule in rules:
            group = max(rule.owner_group, rule.resource_group)
            try:
                con.execute(f"SELECT regexp_matches('', $1), regexp_extract('', $1, {group})", [rule.sql_pattern])
            except duckdb.Error as exc:
                raise WhosawError(
                    f"config: keys[{rule.order}].pattern: not a pattern DuckDB (RE2) can run ({_first_line(exc)})"
                ) from None
        for kind, pattern in payloads.items():
            try:
                con.execute("SELECT regexp_extract('', $1, 1)", [pattern])
            except duckdb.Error as exc:
                raise WhosawError(
                    f"config: sources.{kind}.payload.pattern: not a pattern DuckDB (RE2) can run ({_first_line(exc)})"
                ) from None
        for kind, zone in zones.items():
            try:
                con.execute("SET TimeZone = '" + zone.replace("'", "''") + "'")
            except duckdb.Error:
                raise WhosawError(
                    f"config: sources.{kind}.timezone: unknown time zone {zone!r} (DuckDB does not know it)"
                ) from None
        for kind, fmt in formats:
            try:
                con.execute("SELECT try_strptime(NULL, '" + fmt.replace("'", "''") + "')")
            except duckdb.Error as exc:
                reason = _first_line(exc, f"Failed to parse format specifier {fmt}: ")
                raise WhosawError(
                    f"config: sources.{kind}.ts_format: {fmt!r} is not a format DuckDB's strptime reads ({reason})"
                ) from None
            if not strptime_specifiers(fmt) & _YEARS:
                raise WhosawError(
                    f"config: sources.{kind}.ts_format: {fmt!r} has no year (%Y or %y): every time would read as 1900"
                )


def _first_line(exc: Exception, prefix: str = "") -> str:
    """A DuckDB error as a short reason for a one-line config error (without ``prefix``: what it says already)."""
    reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    reason = reason.removeprefix("Invalid Input Error: ").removeprefix(prefix)
    return reason if len(reason) <= 80 else reason[:77] + "..."


def _ops(value: Any) -> CacheOps:
    table = _table(value, "cache")
    _known(table, "cache", ("read_ops", "write_ops", "reset_ops"))

    def upper(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if name not in table:
            return default
        return tuple(op.upper() for op in _strings(table[name], f"cache.{name}"))

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

    window = _window(_table(raw.get("window", {}), "window"))

    sources_table = _table(raw.get("sources", {}), "sources")
    for kind in sources_table:
        if kind not in KINDS:
            raise WhosawError(f"config: unknown source kind {kind!r} (known: {', '.join(KINDS)})")
    sources = {kind: _source(kind, sources_table.get(kind, {})) for kind in KINDS}

    key_list = raw.get("keys", [])
    if not isinstance(key_list, list):
        raise WhosawError(f"config: keys: expected an array of tables ([[keys]]), got {_a(key_list)}")
    keys = tuple(_key_rule(i, table) for i, table in enumerate(key_list))
    _check_runs_in_duckdb(keys, sources)

    base = path.parent if path else Path.cwd()
    tables: dict[str, Path] = {}
    for name, rel in _table(raw.get("tables", {}), "tables").items():
        if name not in TABLE_NAMES:
            raise WhosawError(f"config: unknown table {name!r} (known: {', '.join(TABLE_NAMES)})")
        table_path = (base / _string(rel, f"tables.{name}")).resolve()
        if not table_path.exists():
            raise WhosawError(f"config: tables.{name}: {table_path} does not exist")
        if not table_path.is_file():
            raise WhosawError(f"config: tables.{name}: {table_path} is not a file")
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


def _window(table: dict[str, Any]) -> Window | None:
    """The config's [window]: ``auto = true``, or ``start`` and ``end`` (ISO-8601 strings or TOML date-times)."""
    _known(table, "window", ("start", "end", "auto"))
    auto = table.get("auto", False)
    if not isinstance(auto, bool):
        raise WhosawError(f"config: window.auto: expected true or false, got {_a(auto)}")
    if auto:
        if "start" in table or "end" in table:  # which one was meant? a window chosen by mistake hides exposures
            raise WhosawError("config: [window] has auto = true and a start or end: keep one of the two")
        return Window(auto=True, source="auto")
    if "start" not in table and "end" not in table:
        return None
    if not ("start" in table and "end" in table):
        raise WhosawError("config: [window] needs both start and end (or auto = true)")
    for name in ("start", "end"):
        if not isinstance(table[name], str | date):  # a TOML date-time is a datetime, itself a date
            raise WhosawError(f"config: window.{name}: expected an ISO-8601 time, got {_a(table[name])}")
    try:
        return parse_window(f"{table['start']}/{table['end']}", source="config")
    except WhosawError as exc:
        raise WhosawError(f"config: {exc}") from None


def resolve_window(cli_window: str | None, config: Config) -> Window:
    """--window wins over the config's [window]; neither means all time in the logs."""
    return parse_window(cli_window, source="cli") or config.window or Window(source="all")


def as_config(config: str | Path | Config | None) -> Config:
    """Accept a Config, a path to a TOML file, or None (defaults)."""
    if isinstance(config, Config):
        return config
    return load_config(config)
