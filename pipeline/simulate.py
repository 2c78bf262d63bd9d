"""Simulated incidents whose true answer is known (``whosaw simulate``).

Why: an answer about who saw whose data can only be trusted once it has been checked against incidents where
the truth is known, at every scale. This module replays the real failure on synthetic traffic: application
hosts with pools of cache connections, replies read back in order (FIFO per connection), calls cancelled after
they were sent, and, inside the bug window only, connections put back into the pool with the reply still
unread, so the next call on that connection reads a stale reply. It writes the logs exactly as SPEC.md says,
the incident config and side tables, and the ground truth taken from the simulation's own state (which reply
every read received, who held every session), never from reading the logs back. The log model is
docs/design.md "Cache log semantics".

The model, in short. Three web hosts with pools of 6, 4 and 8 connections (``conn_id`` unique per host only)
and a worker host. Requests come from signed-in sessions (login, refresh every 20 minutes, logout or idle
expiry, some refreshed after they expired, shared devices where the next user signs in with a new session),
stale tabs after the end of a session (401, no cache call) and anonymous visitors (the public models list, or
a conversation shared with anyone). Each request makes one or two cache calls; each call is abandoned with
probability ``cancel_rate`` (cancelled by the client or timed out by the server's budget) and the request's
later calls are dropped. Outside the bug window an abandoned call closes its connection (the next call on that
pool slot gets a new ``conn_id``). Inside it the connection goes back to the pool with the reply unread: every
later call on it reads the oldest unread reply (a chain when a second call is abandoned before a reset). A
reply of the wrong type (a hash for a GET, an OK for a read) makes the call fail: status ``error``, the
request answers 500, the connection is reset. With probability 1/4 the pool notices an abandoned call and logs
``RECONNECT``, discarding the unread replies. At the window's end every connection is replaced.

It streams: traffic is generated and resolved one time slice ("chunk") at a time with numpy, with the little
per-connection state (generation, unread replies) carried between chunks, and lines are formatted with Arrow
compute kernels and appended to the files. Only calls on a connection that holds an unread reply go through a
Python loop, and those are a few per cent of the calls inside the window.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import itertools
import json
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .config import parse_timestamp, parse_window
from .errors import NO_SPILL, WhosawError

# ----------------------------------------------------------------------------------------------------
# Defaults and the fixed shape of the simulated service
# ----------------------------------------------------------------------------------------------------

DEFAULT_START = "2023-03-20T00:00:00Z"
DEFAULT_USERS = 1000
DEFAULT_HOURS = 12.0
DEFAULT_RPS = 2.0
DEFAULT_CANCEL_RATE = 0.02
DEFAULT_SEED = 0
FORMATS = ("jsonl", "jsonl.gz", "csv")
# Bounds that keep a typo from filling the disk or the memory (the time stamps are built once per second of a
# chunk's span), and the traffic in the years ingest reads (1990..2100: other times are rejected as bad_ts).
MAX_HOURS = 366 * 24
MAX_REQUESTS = 1_000_000_000
READABLE_YEARS = (datetime(1990, 1, 1, tzinfo=UTC), datetime(2101, 1, 1, tzinfo=UTC))

SEC = 1_000_000  # microseconds
MS = 1_000
MINUTE = 60 * SEC
HOUR = 60 * MINUTE

HOSTS = ("web-1", "web-2", "web-3", "worker-1")
POOL = np.array([6, 4, 8, 2], dtype=np.int64)  # connections per host; the last host runs background work
N_WEB = 3
WORKER = 3
SLOT_BASE = np.concatenate([[0], np.cumsum(POOL)[:-1]]).astype(np.int64)
N_SLOTS = int(POOL.sum())

# Cache operations. Each call puts one reply of a type on its connection and expects a reply of a type back.
GET, HGETALL, SET, DEL, RECONNECT = 0, 1, 2, 3, 4
OP_NAMES = ("GET", "HGETALL", "SET", "DEL", "RECONNECT")
T_STR, T_HASH, T_OK, T_INT, T_NONE = 0, 1, 2, 3, -1
REPLY_TYPE = np.array([T_STR, T_HASH, T_OK, T_INT, T_NONE], dtype=np.int8)
READ_OPS = (GET, HGETALL)

# Cache statuses as written.
ST_OK, ST_CANCELLED, ST_TIMEOUT, ST_ERROR = 0, 1, 2, 3
STATUS_NAMES = ("ok", "cancelled", "timeout", "error")

# Key families: conversation titles and billing are hashes whose values name their owner; a conversation's
# content is a string that does not (its owner comes from ownership.csv); the public key has no owner; the
# worker's lock key matches no rule and is never read.
F_TITLES, F_BILLING, F_CONV, F_PUBLIC, F_OTHER = 0, 1, 2, 3, 4
CATEGORY = ("conversation_titles", "payment_info", "conversation_content", "public", "uncategorized")
SEVERITY = ("low", "high", "high", "low", "low")
VALUE_NAMES_OWNER = np.array([True, True, False, False, False])
PUBLIC_KEY = "public:models"
EMPTY_TITLES = "[]"  # an empty conversation titles list: the same bytes whoever owns it (simulate(empty_titles=))
P_EMPTYING = 0.002  # with empty_titles, the share of title writes that empty the list (every conversation deleted)
LOCK_KEY = "lock:worker:refresh"

# Routes. Each route makes a fixed list of cache calls (op, key family); the key's owner is the request's
# user, except for share links (someone else's conversation, under a grant) and the public key.
R_CONVERSATIONS, R_BILLING, R_CONVERSATION, R_RENAME, R_MODELS = 0, 1, 2, 3, 4
R_SHARE, R_ANON_MODELS, R_ANON_SHARE, R_STALE = 5, 6, 7, 8
ROUTE_NAMES = (
    "GET /backend-api/conversations",
    "GET /backend-api/accounts/billing",
    "GET /backend-api/conversation/{id}",
    "PATCH /backend-api/conversation/{id}",
    "GET /backend-api/models",
    "GET /share/{share_id}",
    "GET /backend-api/models",
    "GET /share/{share_id}",
    "GET /backend-api/conversations",
)
ROUTE_CALLS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((HGETALL, F_TITLES),),
    ((HGETALL, F_BILLING), (HGETALL, F_TITLES)),
    ((GET, F_CONV),),
    ((SET, F_TITLES),),
    ((GET, F_PUBLIC),),
    ((GET, F_CONV),),
    ((GET, F_PUBLIC),),
    ((GET, F_CONV),),
    (),
)
MAX_CALLS = max(len(c) for c in ROUTE_CALLS)
# Route mix of signed-in requests (conversations, billing, one conversation, rename, models).
AUTH_ROUTE_P = np.array([0.38, 0.18, 0.26, 0.06, 0.12])

P_ANON = 0.10  # share of requests from anonymous visitors
P_STALE = 0.015  # share of requests from stale tabs of ended sessions (401, no cache call)
P_ANON_SHARE = 0.15  # share of anonymous requests that open the public share link
P_SHARE_VIEW = 0.5  # a grantee opening a conversation opens the shared one
P_NOTICE = 0.25  # in the window, the pool notices a connection with an unread reply and reconnects it
P_TIMEOUT = 0.4  # of the abandoned calls, share that hit the server's budget (the rest: the client gave up)
SUBSCRIBER_SHARE = 0.4
REFRESH_EVERY = 20 * MINUTE
LOCK_EVERY = 5 * MINUTE
WARMUP = 10 * MINUTE  # the background warm-up writes every value before the traffic starts
REQUEST_MARGIN = 200 * MS  # requests of a session end this long before its logout/expire event
CHUNK_REQUESTS = 400_000
CHUNK_WARMUP_ROWS = 1_000_000

FORMULA_NAMES = (
    '=HYPERLINK("http://example.com/x","Ada Lovelace")',
    "+1 (555) 0100 Grace",
    "-Linus Torvalds-",
    "@here Margaret",
)
FIRST = (
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Dana",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "Ivan",
    "Joan",
    "Ken",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Olga",
    "Radia",
    "Sophie",
    "Tim",
    "Yuki",
    "Zhang",
    "Amara",
)
LAST = (
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Scott",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Lamarr",
    "Sutherland",
    "Clarke",
    "Thompson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Wilson",
    "Berners-Lee",
    "Matsumoto",
    "Wei",
    "Okafor",
    "Nakamura",
)
COUNTRIES = (
    ("US", "en-US"),
    ("GB", "en-GB"),
    ("DE", "de-DE"),
    ("FR", "fr-FR"),
    ("IN", "en-IN"),
    ("BR", "pt-BR"),
    ("JP", "ja-JP"),
    ("CA", "fr-CA"),
    ("NL", "nl-NL"),
    ("MX", "es-MX"),
)

GZIP_LEVEL = 1  # fast: the point of .gz here is the format, not the size
SMALL_TABLE = 16  # columns from tables this small are formatted together (see _Sink._format)
MESSY_DUP = 0.004  # re-shipped copy in the same file
MESSY_RESHIP = 0.003  # re-shipped copy in the file's ".reshipped" twin
MESSY_BAD = 0.0005  # per malformed reason
MESSY_OFFSET = 0.10  # real records whose ts is written with a -07:00 offset
MESSY_EPOCH = 0.10  # real records whose ts is an epoch number
MALFORMED_REASONS = ("broken", "nul_byte", "missing_ts", "impossible_ts")

_I64 = np.int64
_INF = np.iinfo(np.int64).max // 4


# ----------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------


def simulate(
    out: str | Path,
    users: int = DEFAULT_USERS,
    hours: float = DEFAULT_HOURS,
    requests_per_second: float | None = None,
    requests: int | None = None,
    window: str | tuple[Any, Any] | None = None,
    start: str | datetime | None = None,
    cancel_rate: float = DEFAULT_CANCEL_RATE,
    seed: int = DEFAULT_SEED,
    fmt: str = "jsonl",
    messy: bool = False,
    cache_warm_before_logs: bool = False,
    empty_titles: float = 0.0,
) -> dict[str, Any]:
    """Write a simulated incident to ``out`` and return its ground-truth summary (also
    ``ground_truth/summary.json``).

    ``requests`` (a total) and ``requests_per_second`` are alternatives; by default the rate is 2 per second.
    The bug window defaults to hours 1 to 10 of the traffic. The same arguments give byte-identical files.
    ``cache_warm_before_logs``: the cache already holds every value when the logs begin (no warm-up writes are
    logged, so no write gives those values' digests an owner). ``empty_titles``: the share of users whose
    conversation titles list is empty at the start (then a few title writes, ``P_EMPTYING``, empty a list too);
    every empty list is the same bytes (``EMPTY_TITLES``), one digest for all of their owners, and names no owner
    (no ``value_owner``).
    """
    params = _params(
        users, hours, requests_per_second, requests, window, start, cancel_rate, seed, fmt, messy,
        cache_warm_before_logs, empty_titles,
    )
    out = Path(out)
    others = _prepare_out(out)
    sim = None
    try:
        sim = _Simulation(params, out, others)
        return sim.run()
    except BaseException:  # a full disk, Ctrl-C: no half-written incident left to analyse, nor to refuse a rerun
        if sim is not None:
            sim.stop()
        _remove_written(out, others)
        raise


@dataclass(frozen=True)
class _Params:
    users: int
    hours: float
    total: int
    start: int  # µs since the epoch, UTC
    end: int
    win_start: int
    win_end: int
    cancel_rate: float
    seed: int
    fmt: str
    messy: bool
    options: dict[str, Any] = field(default_factory=dict)
    cache_warm_before_logs: bool = False
    empty_titles: float = 0.0


def _params(
    users, hours, rps, total, window, start, cancel_rate, seed, fmt, messy, cache_warm_before_logs=False,
    empty_titles=0.0,
) -> _Params:
    users = DEFAULT_USERS if users is None else int(users)
    hours = DEFAULT_HOURS if hours is None else float(hours)
    cancel_rate = DEFAULT_CANCEL_RATE if cancel_rate is None else float(cancel_rate)
    seed = DEFAULT_SEED if seed is None else int(seed)
    fmt = fmt or "jsonl"
    if users < 2:
        raise WhosawError("simulate: --users must be at least 2")
    if not hours > 0:
        raise WhosawError("simulate: --hours must be positive")
    if not hours <= MAX_HOURS:
        raise WhosawError(f"simulate: --hours must be at most {MAX_HOURS:,} (a year)")
    if seed < 0:
        raise WhosawError("simulate: --seed must be 0 or more")
    if not 0 <= cancel_rate <= 1:
        raise WhosawError("simulate: --cancel-rate must be between 0 and 1")
    empty_titles = float(empty_titles or 0.0)
    if not 0 <= empty_titles <= 1:
        raise WhosawError("simulate: --empty-titles must be between 0 and 1")
    if fmt not in FORMATS:
        raise WhosawError(f"simulate: --format must be one of {', '.join(FORMATS)}")
    if total is not None and rps is not None:
        raise WhosawError("simulate: give --requests or --requests-per-second, not both")
    if total is None:
        rate = DEFAULT_RPS if rps is None else float(rps)
        if not rate > 0:
            raise WhosawError("simulate: --requests-per-second must be positive")
        total = int(round(rate * hours * 3600))
    total = int(total)
    if total < 1:
        raise WhosawError("simulate: at least one request is needed")
    if total > MAX_REQUESTS:
        raise WhosawError(
            f"simulate: {total:,} requests are more than the simulator writes ({MAX_REQUESTS:,} at most): fewer "
            "--hours, a lower --requests-per-second, or --requests"
        )
    if isinstance(start, datetime):
        start_dt = start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)
    else:
        start_dt = parse_timestamp(start or DEFAULT_START, "simulate --start")
    start_us = _to_us(start_dt)
    start_us -= start_us % MS
    end_us = start_us + int(round(hours * HOUR))
    if not _to_us(READABLE_YEARS[0]) <= start_us <= end_us <= _to_us(READABLE_YEARS[1]):
        raise WhosawError(
            "simulate: the traffic (--start, --hours) must lie between 1990 and 2100, the years ingest reads"
        )
    if window is None:
        win = (start_us + HOUR, start_us + 10 * HOUR)
    else:
        if isinstance(window, tuple):
            window = f"{window[0]}/{window[1]}"
        parsed = parse_window(str(window))
        if parsed is None or parsed.start is None or parsed.end is None:
            raise WhosawError("simulate: --window must be START/END")
        win = (_to_us(parsed.start), _to_us(parsed.end))
    options = {
        "users": users,
        "hours": hours,
        "requests": total,
        "window": f"{_iso_us(win[0])}/{_iso_us(win[1])}",
        "start": _iso_us(start_us),
        "cancel_rate": cancel_rate,
        "seed": seed,
        "format": fmt,
        "messy": bool(messy),
    }
    # Recorded only when asked for: the files of an incident made without them stay byte for byte as they were.
    if cache_warm_before_logs:
        options["cache_warm_before_logs"] = True
    if empty_titles:
        options["empty_titles"] = empty_titles
    return _Params(
        users, hours, total, start_us, end_us, win[0], win[1], cancel_rate, seed, fmt, bool(messy), options,
        bool(cache_warm_before_logs), empty_titles,
    )


def _to_us(ts: datetime) -> int:
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * SEC + delta.microseconds


def _iso_us(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )


GENERATED_MARK = "whosaw simulate"
SIDE_FILES = ("incident.toml", "users.csv", "ownership.csv", "grants.csv")  # written beside the logs
GROUND_TRUTH_FILES = (  # written in ground_truth/
    "exposures.csv", "near_misses.csv", "affected_owners.csv", "viewers.csv", "messy.json", "summary.json",
)


def _prepare_out(out: Path) -> set[str]:
    """Refuse to mix a simulation into a folder of other logs, of files of the names it writes, or into a whosaw
    output folder; then replace an earlier simulation's files (those its summary lists: the files it wrote, and
    only those). Every check runs before anything is removed. Returns the files left there, the user's, which this
    simulation neither lists nor, when it is replaced in turn, removes."""
    if out.exists() and not out.is_dir():
        raise WhosawError(f"simulate: {out} is not a folder")
    if (out / "manifest.json").is_file():
        raise WhosawError(f"simulate: {out} is a whosaw output folder (it holds manifest.json); choose another folder")
    summary = out / "ground_truth" / "summary.json"
    earlier: set[str] = set()
    if summary.is_file():
        try:
            meta = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        if meta.get("generator", {}).get("tool") == GENERATED_MARK:
            earlier = set(meta.get("files", {})) | {"ground_truth/summary.json"}
    present = {path.relative_to(out).as_posix() for path in out.rglob("*") if path.is_file()} if out.is_dir() else set()
    others = present - earlier
    logs = sorted(name for name in others if "/" not in name and name.startswith(("requests", "cache", "sessions")))
    if logs:
        raise WhosawError(f"simulate: {out} already holds logs ({logs[0]}); choose an empty folder")
    taken = sorted(others & {*SIDE_FILES, *(f"ground_truth/{name}" for name in GROUND_TRUTH_FILES)})
    if taken:  # not an earlier simulation's: the user's, which a simulation would overwrite
        raise WhosawError(
            f"simulate: {out} already holds {taken[0]}, which a simulation writes; choose an empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(earlier & present):
        path = out / name
        if path.is_file() and path.resolve().is_relative_to(out.resolve()):
            path.unlink()
    return others


def _remove_written(out: Path, others: set[str]) -> None:
    """Remove what a simulation that failed had written: every file under ``out`` but ``others`` (the user's)."""
    for path in out.rglob("*"):
        if path.is_file() and path.relative_to(out).as_posix() not in others:
            with contextlib.suppress(OSError):
                path.unlink()
    with contextlib.suppress(OSError):  # only if empty: none of the user's files is in it
        (out / "ground_truth").rmdir()


# ----------------------------------------------------------------------------------------------------
# Fast formatting helpers (Arrow strings built from numpy, no per-row Python)
# ----------------------------------------------------------------------------------------------------


def _fixed_strings(data: np.ndarray, width: int) -> pa.StringArray:
    """An Arrow string array over an (n, width) uint8 matrix, without copying."""
    n = data.shape[0]
    offsets = np.arange(0, width * n + 1, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data)))


_DAY_CACHE: dict[int, bytes] = {}


_D3 = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)  # "000".."999"


def _iso_array(ts: np.ndarray, suffix: bytes = b"Z", shift: int = 0, lead: bytes = b"") -> pa.StringArray:
    """ISO-8601 with microseconds (``2023-03-20T01:02:03.123456Z``) for µs epoch times; ``shift`` in µs.

    ``lead`` and ``suffix`` are written around it (e.g. JSON quotes), so no second pass is needed. The
    ``YYYY-MM-DDTHH:MM:SS.`` part is built once per second of the span and gathered.
    """
    ts = np.asarray(ts, dtype=_I64) + shift
    n = len(ts)
    if n == 0:
        return pa.array([], pa.string())
    a = len(lead)
    width = a + 26 + len(suffix)
    sec = ts // SEC
    us = (ts - sec * SEC).astype(np.int32)
    s0 = int(sec.min())
    secs = np.arange(s0, int(sec.max()) + 1, dtype=_I64)
    day = secs // 86400
    d0 = int(day[0])
    for d in range(d0, int(day[-1]) + 1):
        if d not in _DAY_CACHE:
            _DAY_CACHE[d] = (datetime(1970, 1, 1) + timedelta(days=d)).strftime("%Y-%m-%dT").encode()
    days = np.frombuffer(b"".join(_DAY_CACHE[d] for d in range(d0, int(day[-1]) + 1)), np.uint8).reshape(
        -1, 11
    )
    pre = np.empty((len(secs), 20), dtype=np.uint8)
    pre[:, :11] = days[day - d0]
    sod = secs - day * 86400
    h, m, s = sod // 3600, (sod // 60) % 60, sod % 60
    for pos, value in ((11, h // 10), (12, h % 10), (14, m // 10), (15, m % 10), (17, s // 10), (18, s % 10)):
        pre[:, pos] = value + 48
    pre[:, 13] = pre[:, 16] = ord(":")
    pre[:, 19] = ord(".")
    outb = np.empty((n, width), dtype=np.uint8)
    if a:
        outb[:, :a] = np.frombuffer(lead, dtype=np.uint8)
    outb[:, a : a + 20] = pre[sec - s0]
    outb[:, a + 20 : a + 23] = _D3[us // 1000]
    outb[:, a + 23 : a + 26] = _D3[us % 1000]
    outb[:, a + 26 :] = np.frombuffer(suffix, dtype=np.uint8)
    return _fixed_strings(outb, width)


def _fixed_ids(prefix: bytes, values: np.ndarray, width: int, quote: bytes = b"") -> pa.StringArray:
    """``prefix`` + zero-padded decimal (``req-0000000042``), built in numpy; ``quote`` around it."""
    values = np.asarray(values, dtype=_I64)
    n = len(values)
    a = len(quote) + len(prefix)
    total = a + width + len(quote)
    outb = np.empty((n, total), dtype=np.uint8)
    if quote:
        outb[:, 0] = outb[:, -1] = ord(quote)
    outb[:, len(quote) : a] = np.frombuffer(prefix, dtype=np.uint8)
    small = n == 0 or int(values.max()) < 2**31
    v = values.astype(np.int32) if small else values.copy()  # int32 division is much faster
    right = a + width
    while right > a:
        size = min(3, right - a)
        q = v // 1000
        outb[:, right - size : right] = _D3[v - q * 1000][:, 3 - size :]
        v = q
        right -= size
    return _fixed_strings(outb, total)


def _int_strings(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=_I64)).cast(pa.string())


def _padded_ids(prefix: str, values: np.ndarray, width: int) -> pa.Array:
    """``prefix`` + zero-padded decimal, e.g. ``u000042``."""
    return _fixed_ids(prefix.encode(), values, width)


def _hex_digests(texts: pa.Array, con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """SHA-256 hex digests of UTF-8 texts, as an (n,) 'S64' array (DuckDB hashes in C++, in order)."""
    if len(texts) == 0:
        return np.empty(0, dtype="S64")
    tbl = pa.table({"v": texts})  # noqa: F841 - read by DuckDB below
    arr = con.sql("SELECT sha256(v) AS d FROM tbl").to_arrow_table().column("d").combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view("S64").copy()


def _digest_strings(digests: np.ndarray, quote: bytes = b"") -> pa.StringArray:
    raw = np.ascontiguousarray(digests).view(np.uint8).reshape(-1, 64)
    if not quote:
        return _fixed_strings(raw, 64)
    outb = np.empty((len(raw), 66), dtype=np.uint8)
    outb[:, 0] = outb[:, 65] = ord(quote)
    outb[:, 1:65] = raw
    return _fixed_strings(outb, 66)


def _lines_bytes(lines: pa.Array) -> memoryview:
    """The concatenated bytes of a string array (every element already ends with a newline)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if len(lines) == 0:
        return memoryview(b"")
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
    return memoryview(lines.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


def _join(pieces: list[Any]) -> pa.Array:
    merged: list[Any] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    out = pc.binary_join_element_wise(*merged, "")
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


# ----------------------------------------------------------------------------------------------------
# The world: users, keys, conversations, grants and sessions (small next to the traffic; built up front)
# ----------------------------------------------------------------------------------------------------


class _World:
    """Users, their keys and conversations, share grants, and every session with its events and segments."""

    def __init__(self, p: _Params, rng: np.random.Generator) -> None:
        self.p = p
        U = p.users
        self.U = U
        self.uwidth = max(6, len(str(U - 1)))
        self.user_ids = _padded_ids("u", np.arange(U), self.uwidth)
        self.subscriber = rng.random(U) < SUBSCRIBER_SHARE
        self.subscriber[rng.integers(U)] = True
        self.n_conv = 1 + rng.poisson(2.0, U)
        self.conv_first = np.concatenate([[0], np.cumsum(self.n_conv)[:-1]]).astype(_I64)
        self.conv_owner = np.repeat(np.arange(U, dtype=_I64), self.n_conv)
        C = len(self.conv_owner)
        self.C = C
        self.cwidth = max(7, len(str(C - 1)))
        self.conv_ids = _padded_ids("c", np.arange(C), self.cwidth)
        # Key ids: titles u -> u, billing u -> U + u, conversation c -> 2U + c, the public key -> 2U + C, the
        # worker's lock -> 2U + C + 1.
        K = 2 * U + C + 2
        self.K = K
        self.public_key = 2 * U + C
        self.lock_key = 2 * U + C + 1
        self.key_family = np.concatenate(
            [np.full(U, F_TITLES), np.full(U, F_BILLING), np.full(C, F_CONV), [F_PUBLIC, F_OTHER]]
        ).astype(np.int8)
        self.key_owner = np.concatenate([np.arange(U), np.arange(U), self.conv_owner, [-1, -1]]).astype(_I64)
        self.key_strings = pa.concat_arrays(
            [
                pc.binary_join_element_wise("user:", self.user_ids, ":titles", ""),
                pc.binary_join_element_wise("billing:", self.user_ids, ""),
                pc.binary_join_element_wise("conv:", self.conv_ids, ""),
                pa.array([PUBLIC_KEY, LOCK_KEY]),
            ]
        )
        self.warm_keys = np.nonzero(
            np.concatenate([np.ones(U, bool), self.subscriber, np.ones(C, bool), [True, False]])
        )[0].astype(_I64)
        self._sessions(rng)
        self._grants(rng)
        self.n_visitors = max(10, U // 2)
        self.vwidth = max(6, len(str(self.n_visitors - 1)))
        self.session_strings = pa.concat_arrays(
            [
                _padded_ids("sess-", np.arange(self.S), max(6, len(str(self.S)))),
                _padded_ids("anon-", np.arange(self.n_visitors), self.vwidth),
            ]
        )

    # -- sessions --
    def _sessions(self, rng: np.random.Generator) -> None:
        p, U = self.p, self.U
        span = p.end - p.start
        active = rng.random(U) < 0.85
        active[rng.choice(U, size=min(U, 2), replace=False)] = True
        n_sess = np.where(active, 1 + rng.poisson(0.8, U), 0)
        user = np.repeat(np.arange(U, dtype=_I64), n_sess)
        n = len(user)
        login = p.start + MINUTE + (rng.random(n) * max(span - 15 * MINUTE, MINUTE)).astype(_I64)
        dur = np.clip(rng.lognormal(math.log(45 * MINUTE), 0.8, n), 5 * MINUTE, 6 * HOUR).astype(_I64)
        end = login + dur
        kind = np.where(rng.random(n) < 0.35, 1, 2)  # 1 logout, 2 expire (idle)
        # Refresh after expiry: the same session id comes back to life, a new holding segment follows.
        ended = end < p.end - 20 * MINUTE
        revive = (kind == 2) & ended & (rng.random(n) < 0.06)
        cand = np.nonzero((kind == 2) & ended)[0]
        if not revive.any() and len(cand):
            revive[cand[0]] = True
        revive_at = end + (MINUTE + rng.random(n) * 14 * MINUTE).astype(_I64)
        end2 = revive_at + (5 * MINUTE + rng.random(n) * 35 * MINUTE).astype(_I64)
        kind2 = np.where(rng.random(n) < 0.5, 1, 2)
        # Shared device: after a logout, another user signs in on the same machine (a new session id).
        handoff = (kind == 1) & ended & (rng.random(n) < 0.10)
        cand = np.nonzero((kind == 1) & ended)[0]
        if not handoff.any() and len(cand):
            handoff[cand[0]] = True
        h_idx = np.nonzero(handoff)[0]
        h_user = (user[h_idx] + 1 + rng.integers(0, U - 1, len(h_idx))) % U
        h_login = end[h_idx] + (20 * SEC + rng.random(len(h_idx)) * 160 * SEC).astype(_I64)
        h_dur = np.clip(rng.lognormal(math.log(30 * MINUTE), 0.6, len(h_idx)), 5 * MINUTE, 3 * HOUR).astype(
            _I64
        )
        h_kind = np.where(rng.random(len(h_idx)) < 0.5, 1, 2)
        # Assemble all sessions, ordered by login time, then number them.
        user = np.concatenate([user, h_user])
        login = np.concatenate([login, h_login])
        end = np.concatenate([end, h_login + h_dur])
        kind = np.concatenate([kind, h_kind])
        revive = np.concatenate([revive, np.zeros(len(h_idx), bool)])
        revive_at = np.concatenate([revive_at, np.zeros(len(h_idx), _I64)])
        end2 = np.concatenate([end2, np.zeros(len(h_idx), _I64)])
        kind2 = np.concatenate([kind2, np.zeros(len(h_idx), _I64)])
        handed = np.concatenate([handoff, np.zeros(len(h_idx), bool)])
        is_handoff_login = np.concatenate([np.zeros(n, bool), np.ones(len(h_idx), bool)])
        # Times on the millisecond (as session services log them).
        login, end, revive_at, end2 = (x - x % MS for x in (login, end, revive_at, end2))
        order = np.lexsort((user, login))
        (user, login, end, kind, revive, revive_at, end2, kind2, handed, is_handoff_login) = (
            x[order]
            for x in (user, login, end, kind, revive, revive_at, end2, kind2, handed, is_handoff_login)
        )
        S = len(user)
        self.S = S
        self.sess_user = user
        sid = np.arange(S, dtype=_I64)
        # Events: login, refreshes every REFRESH_EVERY, the end event; for revived sessions a refresh after
        # the
        # expiry, further refreshes, and a second end. Events at or after the end of the traffic are not
        # logged.
        ev_ts, ev_sess, ev_kind = [], [], []  # kind: 0 login, 1 refresh, 2 logout, 3 expire

        def add(ts: np.ndarray, sess: np.ndarray, k: np.ndarray | int) -> None:
            ev_ts.append(ts)
            ev_sess.append(sess)
            ev_kind.append(np.broadcast_to(np.asarray(k, dtype=_I64), ts.shape).copy())

        def periodic(a: np.ndarray, b: np.ndarray, sess: np.ndarray) -> None:
            count = np.maximum((np.minimum(b, p.end) - a - 1) // REFRESH_EVERY, 0)
            rs = np.repeat(sess, count)
            step = np.arange(int(count.sum()), dtype=_I64) - np.repeat(np.cumsum(count) - count, count) + 1
            add(np.repeat(a, count) + step * REFRESH_EVERY, rs, 1)

        add(login, sid, 0)
        periodic(login, end, sid)
        add(end, sid, np.where(kind == 1, 2, 3))
        rv = np.nonzero(revive)[0]
        add(revive_at[rv], rv, 1)
        periodic(revive_at[rv], end2[rv], rv)
        add(end2[rv], rv, np.where(kind2[rv] == 1, 2, 3))
        ts = np.concatenate(ev_ts)
        sess = np.concatenate(ev_sess)
        evk = np.concatenate(ev_kind)
        keep = ts < p.end
        ts, sess, evk = ts[keep], sess[keep], evk[keep]
        order = np.lexsort((evk, sess, ts))
        self.ev_ts, self.ev_sess, self.ev_kind = ts[order], sess[order], evk[order]
        # Holding segments (requests happen here) and dead segments (stale tabs polling: 401).
        b1 = np.where(revive, end, np.minimum(end, p.end))
        seg_sess = [sid, rv]
        seg_a = [login, revive_at[rv]]
        seg_b = [b1, np.minimum(end2[rv], p.end)]
        self.seg_sess = np.concatenate(seg_sess)
        self.seg_a = np.concatenate(seg_a)
        self.seg_b = np.concatenate(seg_b)
        self.seg_user = self.sess_user[self.seg_sess]
        final_end = np.where(revive, end2, end)
        stale = (final_end < p.end) & ((rng.random(S) < 0.3) | handed)
        st = np.nonzero(stale)[0]
        dead_a = [final_end[st] + SEC, end[rv] + SEC]
        dead_b = [
            np.minimum(final_end[st] + (5 * MINUTE + rng.random(len(st)) * 55 * MINUTE).astype(_I64), p.end),
            revive_at[rv] - SEC,
        ]
        self.dead_sess = np.concatenate([st, rv])
        self.dead_a = np.concatenate(dead_a)
        self.dead_b = np.concatenate(dead_b)
        self.stats = {
            "sessions": int(S),
            "shared_device_handoffs": int(is_handoff_login.sum()),
            "refresh_after_expire": int(len(rv)),
            "sessions_with_stale_tabs": int(len(st)),
        }

    # -- grants --
    def _grants(self, rng: np.random.Generator) -> None:
        """Share links: a conversation shared with one user, and one shared with anyone (viewer '*')."""
        p, U = self.p, self.U
        span = p.end - p.start
        users_with_sessions = np.unique(self.sess_user)
        n_g = max(1, min(U // 40, len(users_with_sessions) // 2))
        viewers = rng.choice(users_with_sessions, size=n_g, replace=False)
        owners = (viewers + 1 + rng.integers(0, U - 1, n_g)) % U
        convs = self.conv_first[owners] + (rng.random(n_g) * self.n_conv[owners]).astype(_I64)
        vf = p.start + (rng.random(n_g) * span * 0.3).astype(_I64)
        vt = vf + (3 * HOUR + rng.random(n_g) * 6 * HOUR).astype(_I64)
        open_end = rng.random(n_g) < 0.3
        vt = np.where(open_end, _INF, vt)
        vf, vt = vf - vf % SEC, np.where(open_end, _INF, vt - vt % SEC)
        self.grant_of_user = np.full(U, -1, dtype=_I64)
        self.grant_of_user[viewers] = np.arange(n_g)
        self.g_owner, self.g_viewer, self.g_conv, self.g_from, self.g_to = owners, viewers, convs, vf, vt
        star_owner = int(rng.choice(users_with_sessions))
        self.star_owner = star_owner
        self.star_conv = int(self.conv_first[star_owner])
        self.star_from = p.start
        # An old grant that ended before the traffic: listed, never used.
        old_owner, old_viewer = int(rng.integers(U)), int(rng.integers(U))
        self.old_grant = (old_owner, old_viewer if old_viewer != old_owner else (old_owner + 1) % U)
        self.old_grant_conv = int(self.conv_first[old_owner])
        # (owner, viewer or -2 for '*') -> [(conversation, from, to)]: each link shares one conversation.
        self.grant_index: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for o, v, c, a, b in zip(
            owners.tolist(), viewers.tolist(), convs.tolist(), vf.tolist(), vt.tolist(), strict=True
        ):
            self.grant_index.setdefault((o, v), []).append((c, a, b))
        self.grant_index.setdefault((star_owner, -2), []).append((self.star_conv, self.star_from, _INF))

    def granted(self, owner: int, viewer: int, value_key: int, ts: int) -> bool:
        """The grants table's rule: (owner, viewer or '*', category, resource, valid_from <= ts < valid_to).

        Why the resource: a share link shares one conversation, so only a value of that conversation's key is
        excused; a crossed reply of another of the owner's conversations that reaches the grantee is an
        exposure (as the analysis reads a grant with a resource_id)."""
        if self.key_family[value_key] != F_CONV:
            return False
        conv = value_key - 2 * self.U
        for who in (viewer, -2):
            for c, a, b in self.grant_index.get((owner, who), ()):
                if c == conv and a <= ts < b:
                    return True
        return False


# ----------------------------------------------------------------------------------------------------
# Log sinks: formatting, file routing, and the messy switch
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Col:
    """A column to format: ``table`` strings taken by ``values`` (-1 = null), fixed-width ids (prefix +
    zero-padded ``values``, -1 = null), SHA-256 digests (``digests`` rows, ``values`` = valid mask) or
    integers."""

    kind: str  # "table" | "id" | "digest" | "int" | "intstr" (an integer written as a string)
    values: np.ndarray
    table: pa.Array | None = None
    prefix: bytes = b""
    width: int = 0
    digests: np.ndarray | None = None


class _File:
    """One output file: plain or gzip (deterministic header: no name, mtime 0).

    The bytes are written (and compressed) on a separate I/O thread, in order, so that formatting the next
    chunk overlaps the disk."""

    def __init__(self, path: Path, gz: bool, header: bytes | None, io_pool: ThreadPoolExecutor) -> None:
        self.path = path
        self._io = io_pool
        self._raw: BinaryIO = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self._fh: BinaryIO = (
            gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=GZIP_LEVEL)
            if gz
            else self._raw
        )
        self._pending: deque[Future] = deque()
        self.stats: dict[str, Any] = {
            "lines": 0,
            "records": 0,
            "duplicates": 0,
            "malformed": dict.fromkeys(MALFORMED_REASONS, 0),
            "ts_forms": {"iso_z": 0, "offset": 0, "epoch": 0},
        }
        self.first = True
        if header:
            self._submit(header)

    def _submit(self, data: memoryview | bytes) -> None:
        while len(self._pending) >= 3:
            self._pending.popleft().result()
        self._pending.append(self._io.submit(self._fh.write, data))

    def write(self, data: memoryview | bytes, lines: int) -> None:
        if lines:
            self._submit(data)
            self.stats["lines"] += lines
            self.first = False

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._fh is not self._raw:
            self._fh.close()
        self._raw.close()


class _Sink:
    """Writes the rows of one log kind, routed to files (per host when messy), with messy injections.

    Formatting runs on the sink's own background thread and writing on its own I/O thread (Arrow kernels,
    numpy copies, zlib and file writes release the GIL), each in submission order, so they overlap the
    simulation of the next chunk and the bytes do not depend on timing.
    """

    def __init__(
        self,
        kind: str,
        fields: tuple[tuple[str, str], ...],
        p: _Params,
        out: Path,
        rng: np.random.Generator,
        pool: ThreadPoolExecutor,
        io_pool: ThreadPoolExecutor,
    ) -> None:
        self.kind, self.fields, self.p, self.out, self.rng, self.pool = kind, fields, p, out, rng, pool
        self.io_pool = io_pool
        self.csv = p.fmt == "csv"
        self.files: dict[str, _File] = {}
        self.bad_serial = 0
        self.pending: deque[Future] = deque()
        self._tables: dict[int, tuple[pa.Array, pa.Array, pa.Array]] = {}
        self._ints: pa.Array = pa.array([], pa.string())
        self._combos: dict[tuple, pa.Array] = {}

    def _file(self, name: str, gz: bool) -> _File:
        if name not in self.files:
            header = (",".join(f for f, _ in self.fields) + "\n").encode() if self.csv else None
            self.files[name] = _File(self.out / name, gz, header, self.io_pool)
        return self.files[name]

    def _names(self, part: str | None) -> tuple[str, bool, str]:
        ext = "csv" if self.csv else "jsonl"
        gz_all = self.p.fmt == "jsonl.gz"
        if part is None:
            base = self.kind
            gz = gz_all
        else:
            base = f"{self.kind}-{part}"
            gz = gz_all or part == "web-2"
        name = f"{base}.{ext}" + (".gz" if gz else "")
        return name, gz, f"{base}.reshipped.{ext}.gz"

    def write(
        self,
        columns: dict[str, _Col],
        ts: np.ndarray,
        part: np.ndarray | None = None,
        parts: tuple[str, ...] = (),
    ) -> None:
        """Queue rows (already in file order) for writing; ``part`` routes rows to per-host files (messy)."""
        if len(ts) == 0:
            return
        while len(self.pending) >= 2:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(self._write_now, columns, ts, part, parts))

    def _write_now(
        self, columns: dict[str, _Col], ts: np.ndarray, part: np.ndarray | None, parts: tuple[str, ...]
    ) -> None:
        n = len(ts)
        if not self.p.messy:
            name, gz, _ = self._names(None)
            lines = self._format(columns, self._ts_field(ts, None))
            self._file(name, gz).write(_lines_bytes(lines), n)
            return
        if part is None:
            groups = [(None, np.arange(n))]
        else:
            groups = [(parts[i], np.nonzero(part == i)[0]) for i in range(len(parts))]
        for pname, idx in groups:
            if len(idx) == 0:
                continue
            sub = {
                k: _Col(
                    c.kind,
                    c.values[idx],
                    c.table,
                    c.prefix,
                    c.width,
                    None if c.digests is None else c.digests[idx],
                )
                for k, c in columns.items()
            }
            self._write_messy(pname, sub, ts[idx])

    # -- formatting --
    def _table(self, table: pa.Array) -> tuple[pa.Array, ...]:
        """(JSON literals + 'null', plain strings + '') for a table, built once (HTTP codes stay numbers)."""
        key = id(table)
        if key not in self._tables:
            literal = table if table is HTTP_TABLE else pc.binary_join_element_wise('"', table, '"', "")
            quoted = pa.concat_arrays([literal, pa.array(["null"])])
            plain = pa.concat_arrays([table.cast(pa.string()), pa.array([""])])
            self._tables[key] = (quoted, plain, table)  # the table is kept so its id stays unique
        return self._tables[key][:2]

    def _cell(self, col: _Col) -> pa.Array:
        """A column's cells: JSON literals (quoted strings, null, numbers) or CSV cells (empty for null)."""
        q = b"" if self.csv else b'"'
        null = "" if self.csv else "null"
        if col.kind == "table":
            quoted, plain = self._table(col.table)
            strings = plain if self.csv else quoted
            values = np.where(col.values < 0, len(strings) - 1, col.values)
            return strings.take(pa.array(values))
        if col.kind == "id":
            cells = _fixed_ids(col.prefix, np.maximum(col.values, 0), col.width, q)
            mask = col.values < 0
        elif col.kind == "digest":
            cells = _digest_strings(col.digests, q)
            mask = ~col.values.astype(bool)
        elif col.kind == "intstr" and not self.csv:
            top = int(col.values.max()) + 1
            if len(self._ints) < top:
                size = max(top, 2 * len(self._ints), 1024)
                self._ints = pc.binary_join_element_wise('"', _int_strings(np.arange(size)), '"', "")
            return self._ints.take(pa.array(col.values))
        else:
            return _int_strings(col.values)
        if mask.any():
            cells = pc.if_else(pa.array(mask), pa.scalar(null), cells)
        return cells

    def _ts_field(self, ts: np.ndarray, forms: np.ndarray | None) -> pa.Array:
        """The ts cell per row: ISO Z, or (messy) ISO with a -07:00 offset, or an epoch number."""
        q = b"" if self.csv else b'"'
        iso = _iso_array(ts, b"Z" + q, lead=q)
        if forms is None:
            return iso
        off = _iso_array(ts, b"-07:00" + q, -7 * HOUR, lead=q)
        # Requests and sessions are logged on the millisecond: epoch ms; cache lines carry µs: epoch µs.
        epoch = _int_strings(ts // MS if self.kind != "cache" else ts)
        out = pc.if_else(pa.array(forms == 1), off, iso)
        return pc.if_else(pa.array(forms == 2), epoch, out)

    def _format(self, columns: dict[str, _Col], ts_field: pa.Array) -> pa.Array:
        """One line per row. Runs of adjacent columns drawn from small tables (op, status, host, route...)
        become one precomputed fragment per combination, so the join has fewer pieces to copy."""
        pieces: list[Any] = []
        fields = [name for name, _ in self.fields]
        i = 0
        while i < len(fields):
            name = fields[i]
            sep = ("," if i else "") if self.csv else ("{" if i == 0 else ",")
            j = i
            while (
                j < len(fields)
                and fields[j] != "ts"
                and columns[fields[j]].kind == "table"
                and len(columns[fields[j]].table) <= SMALL_TABLE
            ):
                j += 1
            if j - i >= 2:
                pieces += [sep, self._fragments([(fields[k], columns[fields[k]]) for k in range(i, j)])]
                i = j
                continue
            cell = ts_field if name == "ts" else self._cell(columns[name])
            pieces += [sep, cell] if self.csv else [f'{sep}"{name}":', cell]
            i += 1
        pieces.append("\n" if self.csv else "}\n")
        return _join(pieces)

    def _fragments(self, cols: list[tuple[str, _Col]]) -> pa.Array:
        """The text of several small-table columns at once, taken from a table of every combination."""
        ident = tuple((name, id(col.table)) for name, col in cols)
        if ident not in self._combos:
            cells = []
            for name, col in cols:
                quoted, plain = self._table(col.table)
                values = (plain if self.csv else quoted).to_pylist()
                cells.append([v if self.csv else f'"{name}":{v}' for v in values])
            combos = [",".join(parts) for parts in itertools.product(*cells)]
            self._combos[ident] = pa.array(combos, pa.string())
        index = np.zeros(len(cols[0][1].values), dtype=_I64)
        for _, col in cols:
            size = len(col.table) + 1
            index = index * size + np.where(col.values < 0, size - 1, col.values)
        return self._combos[ident].take(pa.array(index))

    # -- messy --
    def _write_messy(self, part: str | None, columns: dict[str, _Col], ts: np.ndarray) -> None:
        rng = self.rng
        n = len(ts)
        name, gz, reship_name = self._names(part)
        f = self._file(name, gz)
        forms = np.zeros(n, dtype=np.int8)
        u = rng.random(n)
        forms[u < MESSY_OFFSET + MESSY_EPOCH] = 2
        forms[u < MESSY_OFFSET] = 1
        lines = self._format(columns, self._ts_field(ts, forms))
        dup = np.nonzero(rng.random(n) < MESSY_DUP)[0]
        reship = np.nonzero(rng.random(n) < MESSY_RESHIP)[0]
        bad_lines: list[str] = []
        bad_count = dict.fromkeys(MALFORMED_REASONS, 0)
        for reason in MALFORMED_REASONS:
            k = int(rng.binomial(n, MESSY_BAD)) + (1 if f.first else 0)
            templates = rng.integers(0, n, k)
            for t in templates.tolist():
                bad_lines.append(self._malformed(reason, lines[t].as_py(), int(ts[t])))
            bad_count[reason] += k
        # Order: every real line in place, a duplicate a few lines after its original, malformed lines
        # anywhere.
        keys = np.concatenate(
            [
                np.arange(n, dtype=np.float64),
                dup + 0.5 + rng.random(len(dup)) * np.minimum(5, n - 1 - dup),
                rng.random(len(bad_lines)) * n,
            ]
        )
        order = np.argsort(keys, kind="stable")
        src = pa.concat_arrays([lines, lines.take(pa.array(dup)), pa.array(bad_lines, pa.string())])
        f.write(_lines_bytes(src.take(pa.array(order))), len(order))
        f.stats["records"] += n
        f.stats["duplicates"] += len(dup)
        for reason, k in bad_count.items():
            f.stats["malformed"][reason] += k
        f.stats["ts_forms"]["iso_z"] += int((forms == 0).sum())
        f.stats["ts_forms"]["offset"] += int((forms == 1).sum())
        f.stats["ts_forms"]["epoch"] += int((forms == 2).sum())
        if len(reship):
            rf = self._file(reship_name, True)
            rf.write(_lines_bytes(lines.take(pa.array(reship))), len(reship))
            rf.stats["duplicates"] += len(reship)

    def _malformed(self, reason: str, line: str, ts: int) -> str:
        """A line a reader must reject, made from a real one; never a copy of a record (fresh ids)."""
        self.bad_serial += 1
        body = line.rstrip("\n")
        if reason == "nul_byte":
            return "\x00" * (16 + self.bad_serial % 48) + "\n"
        if reason == "broken":
            if self.csv:  # a torn write: the first fields only, fewer than the header names
                cells = body.split(",")
                return ",".join(cells[: max(2, len(cells) // 2)]) + "\n"
            return body[: max(2, len(body) // 2)] + "\n"  # cut off mid-record (a torn write)
        fresh = f"bad-{self.kind}-{self.bad_serial:07d}"
        iso = _iso_us(ts)
        if self.csv:
            cells = body.split(",")
            cells[0] = "" if reason == "missing_ts" else iso[:5] + "13" + iso[7:]
            cells[1] = fresh
            return ",".join(cells) + "\n"
        record = json.loads(body)
        first_id = "session_id" if self.kind == "sessions" else "request_id"
        record[first_id] = fresh
        if reason == "missing_ts":
            del record["ts"]
        else:
            record["ts"] = iso[:5] + "13" + iso[7:]
        return json.dumps(record, separators=(",", ":")) + "\n"

    def close(self) -> dict[str, dict[str, Any]]:
        while self.pending:
            self.pending.popleft().result()
        stats = {}
        for name, f in self.files.items():
            f.close()
            s = f.stats
            s["rejected"] = sum(s["malformed"].values())
            stats[name] = {"kind": self.kind, **s}
        return stats


REQUEST_FIELDS = (
    ("ts", "ts"),
    ("request_id", "str"),
    ("session_id", "str"),
    ("user_id", "str"),
    ("route", "str"),
    ("status", "int"),
    ("host", "str"),
)
CACHE_FIELDS = (
    ("ts", "ts"),
    ("request_id", "str"),
    ("op", "str"),
    ("key", "str"),
    ("status", "str"),
    ("host", "str"),
    ("conn_id", "str"),
    ("value_sha256", "str"),
    ("value_owner", "str"),
)
SESSION_FIELDS = (("ts", "ts"), ("session_id", "str"), ("user_id", "str"), ("event", "str"))
EVENT_NAMES = ("login", "refresh", "logout", "expire")
OP_TABLE = pa.array(OP_NAMES)
STATUS_TABLE = pa.array(STATUS_NAMES)
HOST_TABLE = pa.array(HOSTS)
ROUTE_TABLE = pa.array(ROUTE_NAMES)
HTTP_CODES = np.array([200, 401, 499, 500, 504])
HTTP_TABLE = pa.array([str(c) for c in HTTP_CODES])  # written as JSON numbers: see _Sink._table
EVENT_TABLE = pa.array(EVENT_NAMES)


# ----------------------------------------------------------------------------------------------------
# The simulation
# ----------------------------------------------------------------------------------------------------


def _sort_by(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """A stable order by (major, minor) integers: one argsort of a packed int64 key when both ranges fit in
    62 bits (the usual case), else np.lexsort."""
    n = len(major)
    if n == 0:
        return np.zeros(0, _I64)
    major = np.asarray(major, dtype=_I64)
    minor = np.asarray(minor, dtype=_I64)
    lo_a, lo_b = int(major.min()), int(minor.min())
    bits_b = max(1, (int(minor.max()) - lo_b).bit_length())
    bits_a = max(1, (int(major.max()) - lo_a).bit_length())
    if bits_a + bits_b <= 62:
        packed = ((major - lo_a) << bits_b) | (minor - lo_b)
        return np.argsort(packed, kind="stable")
    return np.lexsort((minor, major))


def _group_sort(group: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """A stable order by (group, ts) for a few small groups: a stable sort by ts (the rows are nearly in time
    order, which timsort likes), then a stable radix sort by the small group number."""
    by_ts = np.argsort(ts, kind="stable")
    by_group = np.argsort(group[by_ts].astype(np.int16), kind="stable")
    return by_ts[by_group]


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not a:
        return b
    if not b:
        return a
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _subset(a: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in a.items()}


def _len(a: dict[str, np.ndarray]) -> int:
    return len(next(iter(a.values()))) if a else 0


class _Simulation:
    """Generates traffic chunk by chunk, resolves which reply each call read, writes logs and the truth."""

    def __init__(self, p: _Params, out: Path, others: set[str] = frozenset()) -> None:
        self.p, self.out = p, out
        self.others = others  # files in OUT before this simulation: not its own
        root = np.random.SeedSequence(p.seed)
        world_ss, traffic_ss, messy_ss, values_ss = root.spawn(4)  # children 0-2 as they were before values_ss
        self.rng = np.random.default_rng(traffic_ss)
        self.values_rng = np.random.default_rng(values_ss)
        self.world = _World(p, np.random.default_rng(world_ss))
        self.con = duckdb.connect(config=NO_SPILL)
        self.con.execute("SET threads = 2")
        self.con.execute("SET preserve_insertion_order = true")  # digests come back in input order
        w = self.world
        # Values: value id -> key and digest. Version 0 of key k has value id k; writes append new ones.
        self.vid_key = np.arange(w.K, dtype=_I64)
        self.n_vid = w.K
        texts = pc.binary_join_element_wise(w.key_strings, f"|v0|seed={p.seed}", "")
        self.digests = _hex_digests(texts, self.con)
        self.empty_digest = _hex_digests(pa.array([EMPTY_TITLES]), self.con)[0]
        if p.empty_titles:  # title keys are 0..U-1
            self.digests[: w.U][self.values_rng.random(w.U) < p.empty_titles] = self.empty_digest
        self.cur_vid = np.arange(w.K, dtype=_I64)
        self.cur_version = np.zeros(w.K, dtype=_I64)
        # Per-connection state (global slot index): generation (conn_id), last ts, unread replies.
        self.gen = np.zeros(N_SLOTS, dtype=_I64)
        self.last_ts = np.full(N_SLOTS, -_INF, dtype=_I64)
        self.queues: dict[int, list[tuple[int, ...]]] = {}
        self.pending_calls: dict[str, np.ndarray] = {}
        self.pending_reqs: dict[str, np.ndarray] = {}
        self.pending_truth: dict[str, np.ndarray] = {}
        self.next_rid = 0
        self.next_seq = 0
        self._ev_done = 0
        self.rid_width = max(10, len(str(p.total)))
        # Truth accumulators.
        self.exposures: list[dict[str, np.ndarray]] = []
        self.near: list[dict[str, np.ndarray]] = []
        self.active_user = np.zeros(w.U, bool)
        self.active_session = np.zeros(w.S, bool)
        self.c: dict[str, int] = {
            k: 0
            for k in (
                "requests",
                "cache_lines",
                "session_events",
                "anonymous_requests",
                "stale_tab_requests",
                "share_link_views",
                "anonymous_share_views",
                "renames",
                "background_writes",
                "background_dels",
                "cancelled_calls",
                "timeout_calls",
                "abandoned_in_window",
                "reconnects",
                "crossed_replies",
                "crossed_served",
                "crossed_same_owner",
                "crossed_no_owner",
                "crossed_granted",
                "reads_lag_ge_2",
                "max_lag",
                "replies_dropped_after_error",
                "replies_dropped_at_window_end",
                "status_500",
                "status_499",
                "status_504",
                "status_401",
                "exposures_outside_window",
            )
        }
        fields = {"requests": REQUEST_FIELDS, "cache": CACHE_FIELDS, "sessions": SESSION_FIELDS}
        # Per log kind: a formatting thread (in order, with its own messy random stream) and an I/O thread
        # (writes and gzip), so the kinds' files are compressed side by side.
        self.pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"whosaw-sim-{k}") for k in fields]
        self.io_pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sim-io-{k}") for k in fields]
        messy_rngs = [np.random.default_rng(ss) for ss in messy_ss.spawn(len(fields))]
        self.sinks = {
            k: _Sink(k, f, p, out, messy_rngs[i], self.pools[i], self.io_pools[i])
            for i, (k, f) in enumerate(fields.items())
        }

    def stop(self) -> None:
        """Wait for the formatting and writing threads' tasks under way, dropping the queued ones."""
        for pool in self.pools + self.io_pools:
            pool.shutdown(wait=True, cancel_futures=True)

    # -- driver --
    def run(self) -> dict[str, Any]:
        p, w = self.p, self.world
        # Warm-up chunks: every value written once before the traffic starts, by a background worker (or before
        # the logs begin: the values are there all the same, version 0 of every key).
        keys = w.warm_keys
        n_w = len(keys)
        t0 = p.start - WARMUP
        wts = t0 + (np.arange(n_w, dtype=_I64) * (WARMUP - SEC)) // max(n_w, 1)
        pieces = 0 if p.cache_warm_before_logs else max(1, math.ceil(n_w / CHUNK_WARMUP_ROWS))
        bounds = np.linspace(0, n_w, pieces + 1).astype(_I64)
        for i in range(pieces):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            T0 = t0 if i == 0 else int(wts[lo])
            T1 = p.start if i == pieces - 1 else int(wts[hi])
            self._chunk(T0, T1, 0, warm=(keys[lo:hi], wts[lo:hi], np.arange(lo, hi) % POOL[WORKER]))
        # Traffic chunks.
        n_chunks = max(1, math.ceil(p.total / CHUNK_REQUESTS))
        edges = p.start + (np.arange(n_chunks + 1, dtype=np.float64) * (p.end - p.start) / n_chunks).astype(
            _I64
        )
        edges[-1] = p.end
        weights = np.array([self._rate_integral(int(edges[i]), int(edges[i + 1])) for i in range(n_chunks)])
        counts = self.rng.multinomial(p.total, weights / weights.sum())
        for i in range(n_chunks):
            self._chunk(int(edges[i]), int(edges[i + 1]), int(counts[i]), final=(i == n_chunks - 1))
        return self._finish()

    def _rate_integral(self, a: int, b: int) -> float:
        """Diurnal traffic: busier in the (UTC) afternoon; the integral of the relative rate over [a, b)."""
        t = np.linspace(a, b, 33)[:-1] + (b - a) / 64
        hour = (t / HOUR) % 24
        return float(np.mean(1 + 0.35 * np.sin(2 * np.pi * (hour - 9) / 24)) * (b - a))

    # -- traffic generation --
    def _gen_requests(self, T0: int, T1: int, n: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        rng, w, p = self.rng, self.world, self.p
        if n == 0:
            return {}, {}
        n_anon = int(rng.binomial(n, P_ANON))
        rest = n - n_anon
        # Segments of sessions overlapping the chunk (requests stay clear of the session's end events).
        lo = np.maximum(w.seg_a + MS, T0)
        hi = np.minimum(w.seg_b - REQUEST_MARGIN, T1)
        live = np.nonzero(hi > lo)[0]
        dlo = np.maximum(w.dead_a, T0)
        dhi = np.minimum(w.dead_b - REQUEST_MARGIN, T1)
        dead = np.nonzero(dhi > dlo)[0]
        n_stale = int(rng.binomial(rest, P_STALE)) if len(dead) else 0
        n_auth = rest - n_stale
        if len(live) == 0:
            n_anon += n_auth
            n_auth = 0

        def spread(idx: np.ndarray, a: np.ndarray, b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            if k == 0 or len(idx) == 0:
                return np.zeros(0, _I64), np.zeros(0, _I64)
            length = (b[idx] - a[idx]).astype(np.float64)
            per = rng.multinomial(k, length / length.sum())
            seg = np.repeat(idx, per)
            t = a[seg] + (rng.random(k) * (b[seg] - a[seg])).astype(_I64)
            return seg, t

        seg, t_auth = spread(live, lo, hi, n_auth)
        user = w.seg_user[seg]
        sess = w.seg_sess[seg]
        route = rng.choice(len(AUTH_ROUTE_P), size=n_auth, p=AUTH_ROUTE_P)
        route = np.where((route == R_BILLING) & ~w.subscriber[user], R_CONVERSATIONS, route)
        conv = w.conv_first[user] + (rng.random(n_auth) * w.n_conv[user]).astype(_I64)
        g = w.grant_of_user[user]
        has = g >= 0
        gi = np.where(has, g, 0)
        share = (
            has
            & (route == R_CONVERSATION)
            & (t_auth >= w.g_from[gi])
            & (t_auth < w.g_to[gi])
            & (rng.random(n_auth) < P_SHARE_VIEW)
        )
        route = np.where(share, R_SHARE, route)
        conv = np.where(share, w.g_conv[gi], conv)

        dseg, t_stale = spread(dead, dlo, dhi, n_stale)
        t_anon = T0 + (rng.random(n_anon) * (T1 - T0)).astype(_I64)
        visitor = rng.integers(0, w.n_visitors, n_anon)
        a_share = (rng.random(n_anon) < P_ANON_SHARE) & (t_anon >= w.star_from)
        reqs = {
            "t": np.concatenate([t_auth, t_stale, t_anon]),
            "user": np.concatenate([user, np.full(n_stale, -1), np.full(n_anon, -1)]).astype(_I64),
            "sess": np.concatenate([sess, w.dead_sess[dseg], w.S + visitor]).astype(_I64),
            "route": np.concatenate(
                [route, np.full(n_stale, R_STALE), np.where(a_share, R_ANON_SHARE, R_ANON_MODELS)]
            ).astype(_I64),
            "conv": np.concatenate([conv, np.zeros(n_stale, _I64), np.full(n_anon, w.star_conv)]).astype(
                _I64
            ),
        }
        order = np.argsort(reqs["t"], kind="stable")
        reqs = _subset(reqs, order)
        m = len(order)
        reqs["rid"] = self.next_rid + np.arange(m, dtype=_I64)
        self.next_rid += m
        reqs["host"] = rng.integers(0, N_WEB, m).astype(_I64)
        # Cache calls of each request, in order; a call may be abandoned (and the request's later calls
        # dropped).
        n_calls = np.array([len(c) for c in ROUTE_CALLS])[reqs["route"]]
        total = int(n_calls.sum())
        rq = np.repeat(np.arange(m), n_calls)
        j = np.arange(total) - np.repeat(np.cumsum(n_calls) - n_calls, n_calls)
        op_tab = np.full((len(ROUTE_CALLS), MAX_CALLS), -1, dtype=_I64)
        fam_tab = np.full((len(ROUTE_CALLS), MAX_CALLS), -1, dtype=_I64)
        for r, calls in enumerate(ROUTE_CALLS):
            for k, (op, fam) in enumerate(calls):
                op_tab[r, k], fam_tab[r, k] = op, fam
        rroute = reqs["route"][rq]
        op = op_tab[rroute, j]
        fam = fam_tab[rroute, j]
        ruser = reqs["user"][rq]
        key = np.select(
            [fam == F_TITLES, fam == F_BILLING, fam == F_CONV],
            [ruser, w.U + ruser, 2 * w.U + reqs["conv"][rq]],
            w.public_key,
        ).astype(_I64)
        abandon = rng.random(total) < p.cancel_rate
        first_ab = np.full(m, MAX_CALLS, dtype=_I64)
        np.minimum.at(first_ab, rq[abandon], j[abandon])
        keep = j <= first_ab[rq]
        rq, j, op, key, abandon = rq[keep], j[keep], op[keep], key[keep], abandon[keep]
        total = len(rq)
        kind = np.where(rng.random(total) < P_TIMEOUT, ST_TIMEOUT, ST_CANCELLED)
        status = np.where(abandon, kind, ST_OK).astype(_I64)
        dur = (300 + rng.random(total) * 2700).astype(_I64)
        dur = np.where(status == ST_CANCELLED, (MS + rng.random(total) * 19 * MS).astype(_I64), dur)
        dur = np.where(status == ST_TIMEOUT, (25 * MS + rng.random(total) * MS).astype(_I64), dur)
        gap = (200 + rng.random(total) * 2000).astype(_I64)
        step = dur + gap
        cum = np.cumsum(step)
        per_request = np.bincount(rq, minlength=m)
        first = np.cumsum(per_request) - per_request  # index of each request's first call (if it has one)
        within = cum - np.concatenate([[0], cum])[first][rq]  # time from the request's start to each call
        cts = reqs["t"][rq] + within
        host = reqs["host"][rq]
        slot = (rng.random(total) * POOL[host]).astype(_I64)
        # Request outcome from the abandons (errors are only known once replies are resolved).
        last = np.full(m, -1, dtype=_I64)
        np.maximum.at(last, rq, cts)
        resp = np.maximum(last, reqs["t"]) + (MS + rng.random(m) * 29 * MS).astype(_I64)
        reqs["resp"] = (resp + MS - 1) // MS * MS
        ab_kind = np.zeros(m, dtype=_I64)
        np.maximum.at(ab_kind, rq, np.where(abandon, status, 0))
        reqs["status"] = np.select(
            [reqs["route"] == R_STALE, ab_kind == ST_TIMEOUT, ab_kind == ST_CANCELLED], [401, 504, 499], 200
        ).astype(_I64)
        reqs["err"] = np.zeros(m, dtype=bool)
        calls = {
            "ts": cts,
            "host": host,
            "slot": slot,
            "rid": reqs["rid"][rq],
            "op": op,
            "key": key,
            "status": status,
            "warm": np.zeros(total, bool),
        }
        # The pool sometimes notices, inside the window, that an abandoned call left a reply: RECONNECT.
        inwin = abandon & (cts >= p.win_start) & (cts < p.win_end)
        notice = inwin & (rng.random(total) < P_NOTICE)
        nts = cts[notice] + (200 + rng.random(int(notice.sum())) * 2800).astype(_I64)
        ok = nts < p.win_end
        k = int(ok.sum())
        rec = {
            "ts": nts[ok],
            "host": host[notice][ok],
            "slot": slot[notice][ok],
            "rid": np.full(k, -1, _I64),
            "op": np.full(k, RECONNECT, _I64),
            "key": np.full(k, -1, _I64),
            "status": np.zeros(k, _I64),
            "warm": np.zeros(k, bool),
        }
        return reqs, _concat(calls, rec)

    def _gen_background(self, T0: int, T1: int) -> dict[str, np.ndarray]:
        """The worker: a refresh of the public value every 10 minutes, and it releases its lock (DEL, an
        integer
        reply: no data) on each connection every 5 minutes."""
        p, w = self.p, self.world
        lo = max(T0, p.start)
        k0 = math.ceil((lo - p.start - 7 * SEC) / (10 * MINUTE))
        ks = np.arange(max(k0, 1), max(k0, 1) + int((T1 - lo) // (10 * MINUTE)) + 2, dtype=_I64)
        refresh = p.start + 7 * SEC + ks * 10 * MINUTE
        refresh = refresh[(refresh >= lo) & (refresh < T1) & (refresh < p.end)]
        locks, pslots = [], []
        for s in range(int(POOL[WORKER])):
            base = p.start + 3 * SEC + s * 13 * SEC
            every = LOCK_EVERY
            ks = np.arange(
                max(0, math.ceil((lo - base) / every)), max(0, (T1 - base) // every + 1), dtype=_I64
            )
            t = base + ks * every
            t = t[(t >= lo) & (t < T1) & (t < p.end)]
            locks.append(t)
            pslots.append(np.full(len(t), s, _I64))
        pt = np.concatenate(locks)
        n_r, n_p = len(refresh), len(pt)
        return {
            "ts": np.concatenate([refresh, pt]),
            "host": np.full(n_r + n_p, WORKER, _I64),
            "slot": np.concatenate([np.zeros(n_r, _I64), np.concatenate(pslots)]),
            "rid": np.full(n_r + n_p, -1, _I64),
            "op": np.concatenate([np.full(n_r, SET, _I64), np.full(n_p, DEL, _I64)]),
            "key": np.concatenate([np.full(n_r, w.public_key, _I64), np.full(n_p, w.lock_key, _I64)]),
            "status": np.zeros(n_r + n_p, _I64),
            "warm": np.zeros(n_r + n_p, bool),
        }

    # -- one chunk --
    def _chunk(
        self, T0: int, T1: int, n_requests: int, warm: tuple | None = None, final: bool = False
    ) -> None:
        new_reqs, new_calls = ({}, {}) if warm else self._gen_requests(T0, T1, n_requests)
        if warm is not None:
            keys, wts, wslot = warm
            k = len(keys)
            new_calls = {
                "ts": wts.astype(_I64),
                "host": np.full(k, WORKER, _I64),
                "slot": wslot.astype(_I64),
                "rid": np.full(k, -1, _I64),
                "op": np.full(k, SET, _I64),
                "key": keys.astype(_I64),
                "status": np.zeros(k, _I64),
                "warm": np.ones(k, bool),
            }
        else:
            new_calls = _concat(new_calls, self._gen_background(T0, T1))
        if _len(new_calls):
            new_calls["seq"] = self.next_seq + np.arange(_len(new_calls), dtype=_I64)
            self.next_seq += _len(new_calls)
        calls = _concat(self.pending_calls, new_calls)
        reqs = _concat(self.pending_reqs, new_reqs)
        limit = _INF if final else T1
        # Calls per connection slot in time order, never two on one slot at the same µs.
        gslot = SLOT_BASE[calls["host"]] + calls["slot"] if _len(calls) else np.zeros(0, _I64)
        # Rows are in seq order (carried calls first), so a stable sort on (slot, ts) breaks ties by seq.
        order = _group_sort(gslot, calls["ts"]) if _len(calls) else np.zeros(0, _I64)
        calls = _subset(calls, order)
        gslot = gslot[order]
        if len(gslot):
            calls["ts"] = self._strictly_increasing(calls["ts"], gslot)
        if reqs and len(reqs["rid"]):
            # A request answers after its calls (even when a µs bump moved one), so it is never final before
            # all of its calls are resolved.
            has = calls["rid"] >= 0
            pos = np.searchsorted(reqs["rid"], calls["rid"][has])
            np.maximum.at(reqs["resp"], pos, ((calls["ts"][has] // MS) + 1) * MS)
        done = calls["ts"] < limit if len(gslot) else np.zeros(0, bool)
        self.pending_calls = _subset(calls, ~done)
        calls = _subset(calls, done)
        gslot = gslot[done]
        self._resolve(calls, gslot, reqs, T1)
        # Requests whose response falls in this chunk are final now.
        if reqs:
            fin = reqs["resp"] < limit
            self._write_requests(_subset(reqs, fin))
            self.pending_reqs = _subset(reqs, ~fin)
            self._settle_truth(_subset(reqs, fin))
        self._write_sessions(limit)

    @staticmethod
    def _strictly_increasing(ts: np.ndarray, group: np.ndarray) -> np.ndarray:
        """Within each group (rows already sorted by group, ts): t'_i = max(t_i, t'_{i-1} + 1)."""
        n = len(ts)
        i = np.arange(n, dtype=_I64)
        x = ts - i
        span = int(x.max() - x.min()) + 1
        shifted = x + group * span
        return np.maximum.accumulate(shifted) - group * span + i

    # -- replies: which reply did each call read --
    def _resolve(
        self, calls: dict[str, np.ndarray], gslot: np.ndarray, reqs: dict[str, np.ndarray], T1: int
    ) -> None:
        p, w = self.p, self.world
        n = len(gslot)
        if n == 0:
            return
        ts, op, key, status = calls["ts"], calls["op"], calls["key"], calls["status"]
        is_call = op != RECONNECT
        abandoned = (status == ST_CANCELLED) | (status == ST_TIMEOUT)
        # Values: the vid each call's own reply carries (reads: the key's value at that time; writes: new
        # value).
        own_vid = self._values(calls)
        # Connection generations: outside the window an abandoned call closes its connection (the next call
        # gets a new conn_id); at the window's end every connection is replaced.
        starts = np.r_[0, np.nonzero(np.diff(gslot))[0] + 1]
        first_of_group = np.zeros(n, bool)
        first_of_group[starts] = True
        prev_ts = np.r_[-_INF, ts[:-1]]
        prev_ts[starts] = self.last_ts[gslot[starts]]
        outside = (ts < p.win_start) | (ts >= p.win_end)
        closes = abandoned & outside
        prev_closes = np.r_[False, closes[:-1]]
        prev_closes[starts] = False
        crossing_end = (ts >= p.win_end) & (prev_ts < p.win_end) & (prev_ts > -_INF)
        inc = prev_closes.astype(_I64) + crossing_end.astype(_I64)
        cs = np.cumsum(inc)
        base = (cs - inc)[starts]
        grp = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        gen = self.gen[gslot] + cs - base[grp]
        ends = np.r_[starts[1:], n] - 1
        self.gen[gslot[ends]] = gen[ends] + closes[ends]
        self.last_ts[gslot[ends]] = ts[ends]
        host = calls["host"]
        conn = gslot - SLOT_BASE[host] + POOL[host] * gen
        # FIFO, only where a reply can be pending: from an abandoned call inside the window to the next reset.
        src = np.arange(n, dtype=_I64)
        lag = np.zeros(n, dtype=_I64)
        err = np.zeros(n, bool)
        carried: list[tuple[int, ...]] = []
        cand = np.nonzero(abandoned & ~outside)[0]
        groups_with_queue = {g for g, q in self.queues.items() if q}
        visit = sorted(set(np.unique(gslot[cand]).tolist()) | groups_with_queue)
        discarded: list[tuple[int, int]] = []
        dropped_err = dropped_end = 0
        if visit:
            # The loop touches only calls behind an unread reply (a few per abandoned call): plain numpy
            # indexing.
            ts_l, op_l, ab_l = ts, op, abandoned
            rtype_l = REPLY_TYPE[op]
            expect_l = rtype_l
            gl_starts = np.searchsorted(gslot, visit, "left").tolist()
            gl_ends = np.searchsorted(gslot, visit, "right").tolist()
            win_end = p.win_end
            for g, lo, hi in zip(visit, gl_starts, gl_ends, strict=True):
                q: deque[int] = deque()
                for desc in self.queues.pop(g, []):
                    q.append(n + len(carried))
                    carried.append(desc)
                ab_pos = cand[np.searchsorted(cand, lo) : np.searchsorted(cand, hi)].tolist()
                k = 0
                i = lo if q else (ab_pos[0] if ab_pos else hi)
                while i < hi:
                    if ts_l[i] >= win_end:
                        dropped_end += len(q)
                        q.clear()
                        break
                    o = op_l[i]
                    if o == RECONNECT:
                        for s in q:
                            discarded.append((i, s))
                        q.clear()
                    elif ab_l[i]:
                        q.append(i)
                    elif q:
                        lag[i] = len(q)
                        s = q.popleft()
                        q.append(i)
                        src[i] = s
                        st = rtype_l[s] if s < n else carried[s - n][0]
                        if st != expect_l[i]:
                            err[i] = True
                            dropped_err += len(q)
                            for s in q:
                                discarded.append((i, s))
                            q.clear()
                    if q:
                        i += 1
                    else:
                        while k < len(ab_pos) and ab_pos[k] <= i:
                            k += 1
                        i = ab_pos[k] if k < len(ab_pos) else hi
                if q:  # still unread at the end of the chunk (a window end would have cleared it)
                    self.queues[g] = [self._describe(s, n, carried, calls, own_vid, conn) for s in q]
        self.c["replies_dropped_after_error"] += dropped_err
        self.c["replies_dropped_at_window_end"] += dropped_end
        # Source table: this chunk's calls, then the carried replies from earlier chunks.
        c_arr = np.array(carried, dtype=_I64).reshape(-1, 6)
        s_vid = np.r_[own_vid, c_arr[:, 1]]
        s_key = np.r_[key, c_arr[:, 2]]
        s_rid = np.r_[calls["rid"], c_arr[:, 3]]
        s_op = np.r_[op, c_arr[:, 4]]
        status = np.where(err, ST_ERROR, status)
        # Served value per call.
        reading = is_call & ~abandoned
        served_vid = np.where(reading, s_vid[src], -1)
        data_read = reading & np.isin(op, READ_OPS) & (status == ST_OK)
        digest_vid = np.where(data_read, served_vid, np.where((op == SET), own_vid, -1))
        value_key = np.where(served_vid >= 0, self.vid_key[np.maximum(served_vid, 0)], -1)
        vfam = w.key_family[np.maximum(value_key, 0)]
        owner_in_value = data_read & VALUE_NAMES_OWNER[vfam]
        if p.empty_titles:  # an empty list names no one
            owner_in_value &= self.digests[np.maximum(served_vid, 0)] != self.empty_digest
        value_owner = np.where(owner_in_value, w.key_owner[np.maximum(value_key, 0)], -1)
        # Request errors -> 500.
        erred = err & (calls["rid"] >= 0)
        if erred.any():
            pos = np.searchsorted(reqs["rid"], calls["rid"][erred])
            reqs["err"][pos] = True
        # Counters.
        crossed = reading & (src != np.arange(n))
        self.c["cache_lines"] += n
        self.c["cancelled_calls"] += int((status == ST_CANCELLED).sum())
        self.c["timeout_calls"] += int((status == ST_TIMEOUT).sum())
        self.c["abandoned_in_window"] += int(len(cand))
        self.c["reconnects"] += int((op == RECONNECT).sum())
        self.c["crossed_replies"] += int(crossed.sum())
        self.c["reads_lag_ge_2"] += int((lag >= 2).sum())
        self.c["max_lag"] = max(self.c["max_lag"], int(lag.max()) if n else 0)
        self.c["background_writes"] += int(((calls["rid"] < 0) & (op == SET)).sum())
        self.c["background_dels"] += int((op == DEL).sum())
        self.c["renames"] += int(((calls["rid"] >= 0) & (op == SET)).sum())
        # Truth candidates: crossed reads, and reads of a value whose owner is not the request's user.
        rid = calls["rid"]
        rpos = np.searchsorted(reqs["rid"], rid) if reqs else np.zeros(n, _I64)
        rpos = np.minimum(rpos, max(len(reqs.get("rid", [])) - 1, 0))
        viewer = np.where(rid >= 0, reqs["user"][rpos] if reqs else -1, -1)
        sess = np.where(rid >= 0, reqs["sess"][rpos] if reqs else -1, -1)
        vowner = w.key_owner[np.maximum(value_key, 0)]
        foreign = data_read & (vowner >= 0) & (vowner != viewer) & (rid >= 0)
        cand_t = np.nonzero(crossed | foreign)[0]
        if len(cand_t):
            truth = {
                "ts": ts[cand_t],
                "rid": rid[cand_t],
                "host": host[cand_t],
                "conn": conn[cand_t],
                "op": op[cand_t],
                "key": key[cand_t],
                "err": err[cand_t],
                "lag": lag[cand_t],
                "src_key": s_key[src[cand_t]],
                "src_rid": s_rid[src[cand_t]],
                "src_op": s_op[src[cand_t]],
                "value_key": np.where(value_key[cand_t] >= 0, value_key[cand_t], s_key[src[cand_t]]),
                "viewer": viewer[cand_t],
                "sess": sess[cand_t],
                "crossed": crossed[cand_t],
                "status": status[cand_t],
            }
            self.pending_truth = _concat(self.pending_truth, truth)
        if discarded:
            # One row per data reply thrown away unread by a reset (RECONNECT, or the reset after an error),
            # dated and attributed like the call whose reply it was (same host and conn_id as the reset).
            d = np.array(discarded, dtype=_I64)
            rows, srcs = d[:, 0], d[:, 1]
            data = np.isin(s_op[srcs], READ_OPS)
            rows, srcs = rows[data], srcs[data]
            k = len(rows)
            s_ts = np.r_[ts, c_arr[:, 5]]
            self.near.append(
                {
                    "ts": s_ts[srcs],
                    "rid": s_rid[srcs],
                    "host": host[rows],
                    "conn": conn[rows],
                    "kind": np.full(k, 1, _I64),
                    "key": s_key[srcs],
                    "value_key": s_key[srcs],
                    "viewer": np.full(k, -2, _I64),
                    "src_rid": s_rid[srcs],
                    "lag": np.zeros(k, _I64),
                    "sess": np.full(k, -1, _I64),
                }
            )
        self._write_cache(ts, calls["rid"], op, key, status, host, conn, digest_vid, value_owner)

    def _describe(
        self, s: int, n: int, carried: list, calls: dict, own_vid: np.ndarray, conn: np.ndarray
    ) -> tuple[int, ...]:
        """A pending reply carried to the next chunk: (reply type, vid, key, request, op, ts)."""
        if s >= n:
            return carried[s - n]
        o = int(calls["op"][s])
        return (
            int(REPLY_TYPE[o]),
            int(own_vid[s]),
            int(calls["key"][s]),
            int(calls["rid"][s]),
            o,
            int(calls["ts"][s]),
        )

    def _values(self, calls: dict[str, np.ndarray]) -> np.ndarray:
        """Value id of each call's own reply: the key's latest value at that time, or what a SET stores."""
        w, p = self.world, self.p
        op, key, ts = calls["op"], calls["key"], calls["ts"]
        n = len(op)
        own = np.full(n, -1, dtype=_I64)
        has_key = (key >= 0) & (op != DEL)
        # Keys nobody writes in this chunk keep their current value; only the others need ordering.
        writes = has_key & (op == SET) & ~calls["warm"]
        written = np.zeros(w.K, dtype=bool)
        written[key[writes]] = True
        plain = has_key & ~written[np.maximum(key, 0)]
        own[plain] = self.cur_vid[key[plain]]
        idx = np.nonzero(has_key & ~plain)[0]
        if len(idx) == 0:
            warm = calls["warm"]
            own[warm] = key[warm]
            return own
        k, t = key[idx], ts[idx]
        is_w = (op[idx] == SET) & ~calls["warm"][idx]
        # Writes first at equal times: a read at the same µs as a write sees the write.
        order = _sort_by(k, t * 2 + ~is_w)
        k_s, w_s = k[order], is_w[order]
        m = len(order)
        new_vid = np.full(m, -1, dtype=_I64)
        wpos = np.nonzero(w_s)[0]
        if len(wpos):
            wk = k_s[wpos]
            gstart = np.r_[True, wk[1:] != wk[:-1]]
            run = np.arange(len(wpos)) - np.maximum.accumulate(np.where(gstart, np.arange(len(wpos)), 0))
            version = self.cur_version[wk] + run + 1
            vids = self.n_vid + np.arange(len(wpos), dtype=_I64)
            new_vid[wpos] = vids
            texts = pc.binary_join_element_wise(
                pc.take(w.key_strings, pa.array(wk)), "|v", _int_strings(version), f"|seed={p.seed}", ""
            )
            digests = self._hex(texts)
            if p.empty_titles:  # a user who deletes every conversation empties the list
                empties = (w.key_family[wk] == F_TITLES) & (self.values_rng.random(len(wk)) < P_EMPTYING)
                digests[empties] = self.empty_digest
            self._add_values(wk, digests)
            last = np.r_[wk[1:] != wk[:-1], True]
            self.cur_version[wk[last]] = version[last]
        # Forward-fill the latest write per key; before any write in this chunk: the key's current value.
        kstart = np.r_[True, k_s[1:] != k_s[:-1]]
        ptr = np.maximum.accumulate(np.where(w_s | kstart, np.arange(m), 0))
        filled = np.where(w_s[ptr], new_vid[ptr], self.cur_vid[k_s])
        kend = np.r_[k_s[1:] != k_s[:-1], True]
        self.cur_vid[k_s[kend]] = filled[kend]
        res = np.empty(m, dtype=_I64)
        res[order] = filled
        own[idx] = res
        # Warm-up writes store version 0 (value id = key id); DEL/RECONNECT carry no value.
        warm = calls["warm"]
        own[warm] = key[warm]
        return own

    def _hex(self, texts: pa.Array) -> np.ndarray:
        return _hex_digests(texts, self.con)

    def _add_values(self, keys: np.ndarray, digests: np.ndarray) -> None:
        need = self.n_vid + len(keys)
        if need > len(self.vid_key):
            cap = max(need, 2 * len(self.vid_key))
            self.vid_key = np.resize(self.vid_key, cap)
            grown = np.empty(cap, dtype="S64")
            grown[: self.n_vid] = self.digests[: self.n_vid]
            self.digests = grown
        self.vid_key[self.n_vid : need] = keys
        self.digests[self.n_vid : need] = digests
        self.n_vid = need

    # -- writing the logs --
    def _write_cache(self, ts, rid, op, key, status, host, conn, digest_vid, value_owner) -> None:
        w = self.world
        order = np.argsort(ts, kind="stable")  # rows come grouped by slot: ties stay in slot order
        ts, rid, op, key, status, host, conn, digest_vid, value_owner = (
            x[order] for x in (ts, rid, op, key, status, host, conn, digest_vid, value_owner)
        )
        cols = {
            "request_id": _Col("id", rid, prefix=b"req-", width=self.rid_width),
            "op": _Col("table", op, OP_TABLE),
            "key": _Col("table", key, w.key_strings),
            "status": _Col("table", status, STATUS_TABLE),
            "host": _Col("table", host, HOST_TABLE),
            "conn_id": _Col("intstr", conn),
            "value_sha256": _Col("digest", digest_vid >= 0, digests=self.digests[np.maximum(digest_vid, 0)]),
            "value_owner": _Col("table", value_owner, w.user_ids),
        }
        self.sinks["cache"].write(cols, ts, host, HOSTS)

    def _write_requests(self, reqs: dict[str, np.ndarray]) -> None:
        if not reqs or len(reqs["rid"]) == 0:
            return
        w, p = self.world, self.p
        status = np.where(reqs["err"], 500, reqs["status"])
        reqs["final_status"] = status
        order = _sort_by(reqs["resp"], reqs["rid"])
        r = _subset(reqs, order)
        status = r["final_status"]
        n = len(order)
        self.c["requests"] += n
        self.c["anonymous_requests"] += int(np.isin(r["route"], (R_ANON_MODELS, R_ANON_SHARE)).sum())
        self.c["stale_tab_requests"] += int((r["route"] == R_STALE).sum())
        for code in (500, 499, 504, 401):
            self.c[f"status_{code}"] += int((status == code).sum())
        inwin = (r["resp"] >= p.win_start) & (r["resp"] < p.win_end) & (r["user"] >= 0) & (status != 401)
        self.active_user[r["user"][inwin]] = True
        self.active_session[r["sess"][inwin]] = True
        cols = {
            "request_id": _Col("id", r["rid"], prefix=b"req-", width=self.rid_width),
            "session_id": _Col("table", r["sess"], w.session_strings),
            "user_id": _Col("table", r["user"], w.user_ids),
            "route": _Col("table", r["route"], ROUTE_TABLE),
            "status": _Col("table", np.searchsorted(HTTP_CODES, status), HTTP_TABLE),
            "host": _Col("table", r["host"], HOST_TABLE),
        }
        self.sinks["requests"].write(cols, r["resp"], r["host"], HOSTS)

    def _write_sessions(self, T1: int) -> None:
        """Session events before T1 not written yet (chunks come in time order)."""
        w = self.world
        lo = self._ev_done
        hi = int(np.searchsorted(w.ev_ts, T1, "left"))
        if hi <= lo:
            return
        self._ev_done = hi
        sess, kind, ts = w.ev_sess[lo:hi], w.ev_kind[lo:hi], w.ev_ts[lo:hi]
        cols = {
            "session_id": _Col("table", sess, w.session_strings),
            "user_id": _Col("table", w.sess_user[sess], w.user_ids),
            "event": _Col("table", kind, EVENT_TABLE),
        }
        self.c["session_events"] += hi - lo
        self.sinks["sessions"].write(cols, ts)

    # -- ground truth --
    def _settle_truth(self, fin: dict[str, np.ndarray]) -> None:
        """Classify candidate reads once their request's final status is known."""
        t = self.pending_truth
        if not t or not fin or len(fin["rid"]) == 0:
            return
        w = self.world
        frid = fin["rid"]
        forder = np.argsort(frid)
        frid_s = frid[forder]
        pos = np.searchsorted(frid_s, t["rid"])
        pos_c = np.minimum(pos, len(frid_s) - 1)
        ready = frid_s[pos_c] == t["rid"]
        self.pending_truth = _subset(t, ~ready)
        t = _subset(t, ready)
        fi = forder[pos_c[ready]]
        req_status = np.where(fin["err"][fi], 500, fin["status"][fi])
        route = fin["route"][fi]
        n = len(t["rid"])
        if n == 0:
            return
        is_read = np.isin(t["op"], READ_OPS)
        src_data = np.isin(t["src_op"], READ_OPS)
        failed = t["crossed"] & (t["err"] | (req_status >= 500))
        not_data = t["crossed"] & ~failed & (~is_read | ~src_data)
        served = is_read & (t["status"] == ST_OK) & (req_status < 500)
        vkey = t["value_key"]
        owner = w.key_owner[vkey]
        exposure = np.zeros(n, bool)
        granted = np.zeros(n, bool)
        for i in np.nonzero(served & (owner >= 0) & (owner != t["viewer"]))[0].tolist():
            viewer = int(t["viewer"][i])
            if w.granted(int(owner[i]), viewer, int(vkey[i]), int(t["ts"][i])):
                granted[i] = True
            else:
                exposure[i] = True
        # Only inside the window (nothing crosses outside it, and every share view is under its grant).
        inside = (t["ts"] >= self.p.win_start) & (t["ts"] < self.p.win_end)
        self.c["exposures_outside_window"] += int((exposure & ~inside).sum())
        exposure &= inside
        xs = served & t["crossed"]
        self.c["crossed_served"] += int(xs.sum())
        self.c["crossed_same_owner"] += int((xs & (owner == t["viewer"])).sum())
        self.c["crossed_no_owner"] += int((xs & (owner < 0)).sum())
        self.c["crossed_granted"] += int((xs & granted).sum())
        share = served & ~t["crossed"] & granted
        self.c["share_link_views"] += int((share & (route == R_SHARE)).sum())
        self.c["anonymous_share_views"] += int((share & (route == R_ANON_SHARE)).sum())
        e = np.nonzero(exposure)[0]
        if len(e):
            self.exposures.append(
                {
                    "ts": t["ts"][e],
                    "rid": t["rid"][e],
                    "viewer": t["viewer"][e],
                    "owner": owner[e],
                    "key": t["key"][e],
                    "value_key": vkey[e],
                    "host": t["host"][e],
                    "conn": t["conn"][e],
                    "lag": t["lag"][e],
                    "src_rid": t["src_rid"][e],
                    "req_status": req_status[e],
                    "route": route[e],
                    "sess": t["sess"][e],
                }
            )
        nm = np.nonzero(failed | not_data)[0]
        if len(nm):
            self.near.append(
                {
                    "ts": t["ts"][nm],
                    "rid": t["rid"][nm],
                    "host": t["host"][nm],
                    "conn": t["conn"][nm],
                    "kind": np.where(failed[nm], 0, 2),
                    "key": t["key"][nm],
                    "value_key": vkey[nm],
                    "viewer": t["viewer"][nm],
                    "src_rid": t["src_rid"][nm],
                    "lag": t["lag"][nm],
                    "sess": t["sess"][nm],
                }
            )

    # -- the end --
    def _finish(self) -> dict[str, Any]:
        p, w, out = self.p, self.world, self.out
        stats: dict[str, dict[str, Any]] = {}
        for sink in self.sinks.values():
            stats.update(sink.close())
        for pool in self.pools + self.io_pools:
            pool.shutdown()
        self._write_tables()
        gt = out / "ground_truth"
        gt.mkdir(exist_ok=True)
        ex = _concat_all(self.exposures, EXPOSURE_KEYS)
        nm = _concat_all(self.near, NEAR_KEYS)
        ex = _subset(ex, np.lexsort((ex["key"], ex["rid"], ex["ts"])))
        nm = _subset(nm, np.lexsort((nm["conn"], nm["host"], nm["ts"])))
        uid = w.user_ids.to_numpy(zero_copy_only=False)
        keys = w.key_strings

        def ids(index: np.ndarray, strings: np.ndarray) -> list[str]:
            return ["" if i < 0 else strings[i] for i in index.tolist()]

        def rids_or_empty(index: np.ndarray) -> list[str]:
            return ["" if i < 0 else r for i, r in zip(index.tolist(), rids(index), strict=True)]

        def rids(index: np.ndarray) -> list[str]:
            return _fixed_ids(b"req-", np.maximum(index, 0), self.rid_width).to_pylist() if len(index) else []

        def key_names(index: np.ndarray) -> list[str]:
            named = pc.take(keys, pa.array(np.maximum(index, 0))).to_pylist()
            return ["" if i < 0 else k for i, k in zip(index.tolist(), named, strict=True)]

        sess_strings = w.session_strings.to_numpy(zero_copy_only=False)
        ex_cat = [CATEGORY[f] for f in w.key_family[ex["value_key"]].tolist()]
        _write_csv(
            gt / "exposures.csv",
            {
                "request_id": rids(ex["rid"]),
                "ts": _iso_list(ex["ts"]),
                "viewer_id": ids(ex["viewer"], uid),
                "owner_id": ids(ex["owner"], uid),
                "key": key_names(ex["key"]),
                "category": ex_cat,
                "severity": [SEVERITY[f] for f in w.key_family[ex["value_key"]].tolist()],
                "value_key": key_names(ex["value_key"]),
                "session_id": ids(ex["sess"], sess_strings),
                "host": [HOSTS[h] for h in ex["host"].tolist()],
                "conn_id": [str(c) for c in ex["conn"].tolist()],
                "lag": ex["lag"].tolist(),
                "reply_request_id": rids_or_empty(ex["src_rid"]),
                "request_status": ex["req_status"].tolist(),
                "route": [ROUTE_NAMES[r] for r in ex["route"].tolist()],
            },
        )
        nm_kinds = ("failed", "discarded", "not-data")
        nm_vkey_owner = w.key_owner[nm["value_key"]]
        _write_csv(
            gt / "near_misses.csv",
            {
                "ts": _iso_list(nm["ts"]),
                "request_id": rids_or_empty(nm["rid"]),
                "host": [HOSTS[h] for h in nm["host"].tolist()],
                "conn_id": [str(c) for c in nm["conn"].tolist()],
                "kind": [nm_kinds[k] for k in nm["kind"].tolist()],
                "category": [CATEGORY[f] for f in w.key_family[nm["value_key"]].tolist()],
                "owner_id": ids(nm_vkey_owner, uid),
                "viewer_id": ids(np.where(nm["viewer"] == -2, -1, nm["viewer"]), uid),
                "key": key_names(nm["key"]),
                "value_key": key_names(nm["value_key"]),
                "reply_request_id": rids_or_empty(nm["src_rid"]),
                "lag": nm["lag"].tolist(),
            },
        )
        affected, viewers = self._aggregates(ex, ex_cat, uid)
        _write_csv(gt / "affected_owners.csv", affected)
        _write_csv(gt / "viewers.csv", viewers)
        by_cat: dict[str, int] = {}
        for c in ex_cat:
            by_cat[c] = by_cat.get(c, 0) + 1
        nm_by_kind = {k: int((nm["kind"] == i).sum()) for i, k in enumerate(nm_kinds)}
        nm_by_cat: dict[str, int] = {}
        for f in w.key_family[nm["value_key"]].tolist():
            nm_by_cat[CATEGORY[f]] = nm_by_cat.get(CATEGORY[f], 0) + 1
        anon = ex["viewer"] < 0
        c = self.c
        counts = {
            "requests": c["requests"],
            "cache_lines": c["cache_lines"],
            "session_events": c["session_events"],
            "exposures": int(len(ex["rid"])),
            "affected_owners": len(affected["owner_id"]),
            "viewers": len(viewers["viewer_id"]),
            "near_misses": int(len(nm["ts"])),
            "anonymous_exposures": int(anon.sum()),
            "anonymous_viewer_sessions": int(len(np.unique(ex["sess"][anon]))),
            "crossed_replies": c["crossed_replies"],
            "log_lines": c["requests"] + c["cache_lines"] + c["session_events"],
        }
        files = {}  # what this simulation wrote (the next one into OUT removes these, and only these)
        for path in sorted(out.rglob("*")):
            if path.is_file() and path.name != "README.md":
                rel = path.relative_to(out).as_posix()
                if rel != "ground_truth/summary.json" and rel not in self.others:
                    files[rel] = path.stat().st_size
        summary: dict[str, Any] = {
            "generator": {"tool": GENERATED_MARK, "version": __version__, "options": p.options},
            "window": {"start": _iso_us(p.win_start), "end": _iso_us(p.win_end)},
            "traffic": {
                "start": _iso_us(p.start - WARMUP),
                "requests_start": _iso_us(p.start),
                "end": _iso_us(p.end),
            },
            "active_users": int(self.active_user.sum()),
            "active_sessions": int(self.active_session.sum()),
            "counts": counts,
            "exposures_by_category": dict(sorted(by_cat.items())),
            "exposures_by_severity": _tally(SEVERITY[CATEGORY.index(x)] for x in ex_cat),
            "exposures_with_lag_ge_2": int((ex["lag"] >= 2).sum()),
            "exposures_outside_window": c["exposures_outside_window"],
            "near_misses": {
                "total": counts["near_misses"],
                "by_kind": nm_by_kind,
                "by_category": dict(sorted(nm_by_cat.items())),
            },
            "crossed": {
                "replies": c["crossed_replies"],
                "served": c["crossed_served"],
                "served_same_owner": c["crossed_same_owner"],
                "served_no_owner": c["crossed_no_owner"],
                "served_granted": c["crossed_granted"],
                "reads_with_lag_ge_2": c["reads_lag_ge_2"],
                "max_lag": c["max_lag"],
                "replies_dropped_after_error": c["replies_dropped_after_error"],
                "replies_dropped_at_window_end": c["replies_dropped_at_window_end"],
            },
            "calls": {
                "cancelled": c["cancelled_calls"],
                "timeout": c["timeout_calls"],
                "abandoned_in_window": c["abandoned_in_window"],
                "reconnects": c["reconnects"],
                "renames": c["renames"],
                "background_writes": c["background_writes"],
                "background_dels": c["background_dels"],
            },
            "requests": {
                "anonymous": c["anonymous_requests"],
                "stale_tab_401": c["stale_tab_requests"],
                "share_link_views": c["share_link_views"],
                "anonymous_share_views": c["anonymous_share_views"],
                "status_500": c["status_500"],
                "status_499": c["status_499"],
                "status_504": c["status_504"],
                "status_401": c["status_401"],
            },
            "sessions": w.stats,
            "definitions": TRUTH_DEFINITIONS,
            "files": files,
        }
        if p.messy:
            messy = {"files": dict(sorted(stats.items())), "totals": _messy_totals(stats)}
            (gt / "messy.json").write_text(json.dumps(messy, indent=2) + "\n", encoding="utf-8")
            summary["messy"] = messy["totals"]
            summary["files"]["ground_truth/messy.json"] = (gt / "messy.json").stat().st_size
        (gt / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    def _aggregates(
        self, ex: dict[str, np.ndarray], ex_cat: list[str], uid: np.ndarray
    ) -> tuple[dict[str, list], dict[str, list]]:
        per_owner: dict[int, dict[str, Any]] = {}
        per_viewer: dict[int, dict[str, Any]] = {}
        # viewer_count counts each signed-in viewer once and each anonymous session once.
        for o, v, t, cat, sess in zip(
            ex["owner"].tolist(),
            ex["viewer"].tolist(),
            ex["ts"].tolist(),
            ex_cat,
            ex["sess"].tolist(),
            strict=True,
        ):
            a = per_owner.setdefault(o, {"cats": set(), "n": 0, "viewers": set(), "first": t, "last": t})
            a["cats"].add(cat)
            a["n"] += 1
            a["viewers"].add(v if v >= 0 else ("anonymous", sess))
            a["first"], a["last"] = min(a["first"], t), max(a["last"], t)
            if v >= 0:
                b = per_viewer.setdefault(v, {"cats": set(), "n": 0, "owners": set(), "first": t, "last": t})
                b["cats"].add(cat)
                b["n"] += 1
                b["owners"].add(o)
                b["first"], b["last"] = min(b["first"], t), max(b["last"], t)
        affected = {
            "owner_id": [],
            "categories": [],
            "exposure_count": [],
            "viewer_count": [],
            "first_exposed": [],
            "last_exposed": [],
        }
        for o in sorted(per_owner):
            a = per_owner[o]
            affected["owner_id"].append(uid[o])
            affected["categories"].append(";".join(sorted(a["cats"])))
            affected["exposure_count"].append(a["n"])
            affected["viewer_count"].append(len(a["viewers"]))
            affected["first_exposed"].append(a["first"])
            affected["last_exposed"].append(a["last"])
        viewers = {
            "viewer_id": [],
            "owners_seen": [],
            "categories": [],
            "exposure_count": [],
            "first_seen": [],
            "last_seen": [],
        }
        for v in sorted(per_viewer):
            b = per_viewer[v]
            viewers["viewer_id"].append(uid[v])
            viewers["owners_seen"].append(len(b["owners"]))
            viewers["categories"].append(";".join(sorted(b["cats"])))
            viewers["exposure_count"].append(b["n"])
            viewers["first_seen"].append(b["first"])
            viewers["last_seen"].append(b["last"])
        for table, names in (
            (affected, ("first_exposed", "last_exposed")),
            (viewers, ("first_seen", "last_seen")),
        ):
            for name in names:
                table[name] = _iso_list(np.array(table[name], dtype=_I64))
        return affected, viewers

    def _write_tables(self) -> None:
        """incident.toml, users.csv, ownership.csv and grants.csv: what an incident team would have."""
        p, w, out = self.p, self.world, self.out
        rng = np.random.default_rng(np.random.SeedSequence([p.seed, 99]))
        U = w.U
        first = rng.integers(0, len(FIRST), U).tolist()
        last = rng.integers(0, len(LAST), U).tolist()
        country = rng.integers(0, len(COUNTRIES), U).tolist()
        special = rng.choice(U, size=min(len(FORMULA_NAMES), U), replace=False).tolist()
        fn = pc.take(pa.array(FIRST), pa.array(first))
        ln = pc.take(pa.array(LAST), pa.array(last))
        names = pc.binary_join_element_wise(fn, ln, " ").to_numpy(zero_copy_only=False).astype(object)
        for i, u in enumerate(special):
            name = FORMULA_NAMES[i]
            names[u] = '"' + name.replace('"', '""') + '"' if any(c in name for c in ',"\n') else name
        lines = pc.binary_join_element_wise(
            w.user_ids,
            pc.utf8_lower(
                pc.binary_join_element_wise(fn, ".", ln, ".", _int_strings(np.arange(U)), "@example.com", "")
            ),
            pa.array(names, pa.string()),
            pc.take(pa.array([c for c, _ in COUNTRIES]), pa.array(country)),
            pc.binary_join_element_wise(
                pc.take(pa.array([loc for _, loc in COUNTRIES]), pa.array(country)), "\n", ""
            ),
            ",",
        )
        (out / "users.csv").write_bytes(b"user_id,email,name,country,locale\n" + bytes(_lines_bytes(lines)))
        uid = w.user_ids.to_pylist()
        owner_ids = pc.take(w.user_ids, pa.array(w.conv_owner))
        lines = pc.binary_join_element_wise(w.conv_ids, ",", owner_ids, "\n", "")
        (out / "ownership.csv").write_bytes(b"resource_id,owner_id\n" + bytes(_lines_bytes(lines)))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        # Each share link names the one conversation it shares (resource_id, beyond SPEC's columns).
        cid = w.conv_ids.to_pylist()
        writer.writerow(["owner_id", "viewer_id", "category", "valid_from", "valid_to", "resource_id"])
        for o, v, c, a, b in zip(
            w.g_owner.tolist(),
            w.g_viewer.tolist(),
            w.g_conv.tolist(),
            w.g_from.tolist(),
            w.g_to.tolist(),
            strict=True,
        ):
            writer.writerow(
                [uid[o], uid[v], "conversation_content", _iso_sec(a), "" if b >= _INF else _iso_sec(b), cid[c]]
            )
        writer.writerow(
            [uid[w.star_owner], "*", "conversation_content", _iso_sec(w.star_from), "", cid[w.star_conv]]
        )
        oo, ov = w.old_grant
        writer.writerow(
            [
                uid[oo],
                uid[ov],
                "conversation_content",
                _iso_sec(p.start - 30 * 86400 * SEC),
                _iso_sec(p.start - 20 * 86400 * SEC),
                cid[w.old_grant_conv],
            ]
        )
        (out / "grants.csv").write_text(buf.getvalue(), encoding="utf-8")
        toml = TOML_TEMPLATE.format(
            seed=p.seed,
            options=json.dumps(p.options, sort_keys=True),
            start=_iso_sec(p.win_start) if p.win_start % SEC == 0 else _iso_us(p.win_start),
            end=_iso_sec(p.win_end) if p.win_end % SEC == 0 else _iso_us(p.win_end),
            public=PUBLIC_KEY.split(":")[0],
        )
        (out / "incident.toml").write_text(toml, encoding="utf-8")


def _iso_list(ts: np.ndarray) -> list[str]:
    return _iso_array(ts).to_pylist() if len(ts) else []


def _iso_sec(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tally(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


EXPOSURE_KEYS = (
    "ts",
    "rid",
    "viewer",
    "owner",
    "key",
    "value_key",
    "host",
    "conn",
    "lag",
    "src_rid",
    "req_status",
    "route",
    "sess",
)
NEAR_KEYS = ("ts", "rid", "host", "conn", "kind", "key", "value_key", "viewer", "src_rid", "lag", "sess")


def _concat_all(parts: list[dict[str, np.ndarray]], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not parts:
        return {k: np.zeros(0, _I64) for k in keys}
    return {k: np.concatenate([part[k] for part in parts]).astype(_I64) for k in keys}


def _write_csv(path: Path, columns: dict[str, list]) -> None:
    """A small CSV of ids, keys, times and counts (no free text, so nothing a spreadsheet could evaluate)."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(rows)


def _messy_totals(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {
        "files": len(stats),
        "lines": 0,
        "records": 0,
        "duplicates": 0,
        "rejected": 0,
        "malformed": dict.fromkeys(MALFORMED_REASONS, 0),
        "ts_forms": {"iso_z": 0, "offset": 0, "epoch": 0},
        "gzip_files": sum(1 for name in stats if name.endswith(".gz")),
    }
    for s in stats.values():
        for k in ("lines", "records", "duplicates", "rejected"):
            totals[k] += s[k]
        for k, v in s["malformed"].items():
            totals["malformed"][k] += v
        for k, v in s["ts_forms"].items():
            totals["ts_forms"][k] += v
    return totals


TRUTH_DEFINITIONS = {
    "exposure": (
        "a GET/HGETALL with status ok in a request that answered < 500, whose value (the reply it actually "
        "read) has an owner who is not the user holding the request's session at that instant (anonymous = "
        "empty viewer_id), and no grant covers (owner, viewer or '*', category, the value's conversation "
        "(resource_id), time); key = the key asked "
        "for, category = the category of the value served"
    ),
    "crossed_reply": "a call that read (ok or error) the reply of another, earlier call on its connection",
    "near_miss.failed": (
        "a crossed reply read by a call that errored (type mismatch: the connection is reset) or in a "
        "request that answered 5xx"
    ),
    "near_miss.not-data": (
        "any other crossed reply where the reading call is not a data read or the reply was not data "
        "(e.g. a SET reading another SET's OK)"
    ),
    "near_miss.discarded": (
        "a data reply (of a GET/HGETALL) left unread and thrown away by a reset: a RECONNECT line or the "
        "reset after an error; one row per reply, with the ts, request_id and key of the call whose reply it "
        "was (replies still unread when the fix replaced the connections at the window's end are not near "
        "misses)"
    ),
    "lag": "how many replies the reading call was behind (1 = the previous call's reply; >= 2 = a chain)",
    "active_users": "users with at least one signed-in request (status not 401) answered inside the window",
}

TOML_TEMPLATE = """\
# A simulated incident written by `whosaw simulate` (seed {seed}).
# Options: {options}
# The window is the bug window of the simulation: the client library returned connections with unread replies
# to the pool from start to end; outside it, nothing crossed.

[window]
start = "{start}"
end   = "{end}"

[[keys]]
pattern  = '^user:(?P<owner>[^:]+):titles$'
category = "conversation_titles"
severity = "low"

[[keys]]
pattern  = '^billing:(?P<owner>[^:]+)$'
category = "payment_info"
severity = "high"

[[keys]]
pattern  = '^conv:(?P<resource>[^:]+)$'
category = "conversation_content"
severity = "high"

[[keys]]
pattern  = '^{public}:'
category = "public"
severity = "low"

[tables]
ownership = "ownership.csv"
grants    = "grants.csv"
users     = "users.csv"
"""
