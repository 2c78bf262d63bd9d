"""Differential test: whosaw's analysis (real ingest + DuckDB) against an independent, deliberately simple
pure-Python reading of SPEC.md "What counts as an exposure" and docs/design.md (cache log semantics, viewer,
owner tiers, crossed reply, near miss, grants, window), on small random incidents from fixed seeds.

The oracle works per row: it replays each pooled connection's FIFO reply queue, looks digests up by scanning
the writes, and the session holder by scanning the session's events. It knows nothing of the SQL. The incidents
mix identical timestamps, lines of one connection split over two files, resets, cancelled/timed-out/error calls,
background calls, missing requests, 5xx requests, shared devices (stale user_id), refreshes without a user,
ownership rows over time, grants (random ones, and some aimed at the oracle's own exposures, each at an edge of
the grant rule: an interval's ends, '*', another category or resource), partial value_owner/value_sha256, exact
re-shipped duplicates, a request line repeated with other content (the first wins), and the spellings ingest
normalises (op case, 'canceled', epoch s/ms/ns and offset timestamps, upper-case digests, a numeric conn_id). To
hunt for new disagreements, run ``python tests/test_oracle.py FIRST LAST`` (seeds FIRST..LAST-1; each prints its
differences)."""

from __future__ import annotations

import json
import random
import re
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from lakes import KEYS

from pipeline.analyze import analyze
from pipeline.ingest import ingest
from pipeline.schema import DEFAULT_READ_OPS, DEFAULT_RESET_OPS, DEFAULT_WRITE_OPS

READ, WRITE, RESET = set(DEFAULT_READ_OPS), set(DEFAULT_WRITE_OPS), set(DEFAULT_RESET_OPS)
NEG, POS = -(2**62), 2**62
BASE = datetime(2023, 3, 20, 1, 0, tzinfo=UTC)
S = 1_000_000  # microseconds

# ----------------------------------------------------------------------------------------- the oracle

class Rules:
    """Key rules (first match), ownership over time, grants; times are int microseconds, None = open."""

    def __init__(self, ownership, grants):
        self.keys = [(re.compile(k["pattern"]), k) for k in KEYS]
        self.ownership, self.grants = ownership, grants

    def rule(self, key):
        for rx, k in self.keys:
            m = rx.search(key or "") if key is not None else None
            if m:
                return k, m
        return None, None

    def category(self, key):
        k, _ = self.rule(key)
        return (k["category"], k["severity"]) if k else ("uncategorized", "unknown")

    def key_owner(self, key, t):
        """(owner, kind): kind 'owner', 'nobody' (a rule naming no owner or resource) or 'unknown'."""
        k, m = self.rule(key)
        if k is None:
            return None, "unknown"
        if "owner" in m.re.groupindex:
            return m.group("owner"), "owner"
        if "resource" not in m.re.groupindex:
            return None, "nobody"
        # among the rows that claim t (valid_from <= t < valid_to), the latest start (equal starts: smallest owner_id)
        start = lambda r: NEG if r["valid_from"] is None else r["valid_from"]  # noqa: E731
        rows = [r for r in self.ownership if r["resource_id"] == m.group("resource") and start(r) <= t
                and (r["valid_to"] is None or t < r["valid_to"])]
        if not rows:
            return None, "unknown"
        return min(rows, key=lambda r: (-start(r), r["owner_id"]))["owner_id"], "owner"

    def resource(self, key):
        """The resource a key's rule names (None without a resource group)."""
        k, m = self.rule(key)
        return m.group("resource") if k is not None and "resource" in m.re.groupindex else None

    def granted(self, owner, viewer, category, t, value_key):
        return any(
            g["owner_id"] == owner and (g["viewer_id"] == "*" or g["viewer_id"] == viewer)
            and g["category"] in ("", "*", category)
            and (g["resource_id"] is None or g["resource_id"] == self.resource(value_key))
            and (g["valid_from"] is None or g["valid_from"] <= t) and (g["valid_to"] is None or t < g["valid_to"])
            for g in self.grants
        )


def viewer_of(req, t, sessions):
    """(viewer_id, viewer_kind) of a logged request at t."""
    events = sorted((e for e in sessions if req["session_id"] is not None and e["session_id"] == req["session_id"]
                     and e["ts"] <= t), key=lambda e: (e["ts"], e["file_rank"], e["source_line"]))
    while events and events[-1]["event"] in ("logout", "expire") and events[-1]["ts"] == t:
        events = events[:-1]  # at the very instant of its ends, the session is as it was just before the first
    if events:
        last = events[-1]
        if last["event"] in ("logout", "expire"):
            return None, "anonymous"
        holder = last["user_id"]
        if holder is None and last["event"] == "refresh":  # the latest login or named refresh, if no logout since
            named = [e for e in events[:-1]
                     if e["event"] in ("login", "logout") or (e["event"] == "refresh" and e["user_id"])]
            holder = named[-1]["user_id"] if named and named[-1]["event"] != "logout" else None
        if holder is not None:
            return holder, "session"
    return (req["user_id"], "request") if req["user_id"] is not None else (None, "anonymous")


def rank_files(rows):
    """Each row's file_rank: its file's place in the order the files were written, by the first ts each holds,
    then by name (a rotated cache.jsonl.1 before the current cache.jsonl): ties of ts go by file, then line."""
    first = {}
    for r in rows:
        first[r["source_file"]] = min(first.get(r["source_file"], r["ts"]), r["ts"])
    rank = {name: i for i, name in enumerate(sorted(first, key=lambda name: (first[name], name)))}
    for r in rows:
        r["file_rank"] = rank[r["source_file"]]


def oracle(cache, requests, sessions, rules, window):
    """(exposure rows in the window, exposure rows outside it, near-miss rows, summary) for normalised,
    de-duplicated log rows."""
    inw = lambda t: window[0] <= t < window[1]  # noqa: E731
    rank_files(cache)
    rank_files(sessions)
    order = lambda c: (c["ts"], c["file_rank"], c["source_line"])  # noqa: E731
    reqs = {}
    for r in requests:
        reqs.setdefault(r["request_id"], r)
    cache = sorted(cache, key=order)
    reply_of, discarded, conns = {}, [], {}
    for c in cache:
        if c["host"] is not None and c["conn_id"] is not None:
            conns.setdefault((c["host"], c["conn_id"]), []).append(c)
    after_reset = set()  # calls logged after a reset or error on their connection: its queue was known empty
    for lines in conns.values():  # every sent call queues one reply; a reading call takes the oldest
        queue, reset_seen = [], False
        for c in lines:
            if c["op"] in RESET:
                discarded += [q for q in queue if q["op"] in READ]
                queue, reset_seen = [], True
                continue
            if reset_seen:
                after_reset.add(id(c))
            queue.append(c)
            if c["status"] in ("ok", "error"):
                reply_of[id(c)] = queue.pop(0)
                if c["status"] == "error":
                    reset_seen = True
                    discarded += [q for q in queue if q["op"] in READ]
                    queue = []
    writes = [c for c in cache if c["op"] in WRITE and c["value_sha256"] is not None]

    def written_digest(c):
        """(owners the writes of c's digest up to c name, latest write's owner, its key): None = nobody."""
        found = [(order(w), *rules.key_owner(w["key"], w["ts"]), w["key"]) for w in writes
                 if w["value_sha256"] == c["value_sha256"] and w["ts"] <= c["ts"]]
        # a write under a key whose family names nobody is a known owner: nobody (it names no owner)
        found = [(at, o, k) for at, o, kind, k in found if o is not None or kind == "nobody"]
        return ({f[1] for f in found}, *max(found)[1:]) if found else (set(), None, None)

    # a read that got its own reply, on a host whose log shows abandoned calls, of a digest the writes give to one
    # owner while its key is another's (or nobody's): from then on the digest names both, when the read came after a
    # reset or error on its connection, or when such reads of the digest came under 3 owners' keys (nobody counts as
    # one) on 3 connections
    witnessing = {c["host"] for lines in conns.values() for c in lines
                  if c["op"] not in RESET and c["status"] in ("cancelled", "timeout")}
    own_reads = {}  # digest -> [(ts, after a reset, key owner, connection)]
    for c in cache:
        if (c["op"] in READ and c["status"] == "ok" and c["value_sha256"] is not None and c["host"] in witnessing
                and reply_of.get(id(c)) is c):
            owners, o2, _ = written_digest(c)
            key_o, key_kind = rules.key_owner(c["key"], c["ts"])
            if (len(owners) == 1 and o2 is not None and key_kind in ("owner", "nobody") and key_o != o2
                    and c["value_owner"] != o2):
                own_reads.setdefault(c["value_sha256"], []).append(
                    (c["ts"], id(c) in after_reset, key_o, (c["host"], c["conn_id"])))
    read_as_own = {}
    for digest, reads in own_reads.items():
        many = len({owner for _, _, owner, _ in reads}) >= 3 and len({conn for *_, conn in reads}) >= 3
        times = [t for t, after_a_reset, _, _ in reads if many or after_a_reset]
        if times:
            read_as_own[digest] = min(times)
    exposures, outside, near, served, flagged = [], [], [], [], Counter()
    crossed_n = unknown_reads = 0
    for c in cache:
        if c["op"] in RESET or c["status"] not in ("ok", "error"):
            continue
        t, is_read = c["ts"], c["op"] in READ
        key_o, key_kind = rules.key_owner(c["key"], t)
        reply = reply_of.get(id(c))
        by_conn = reply is not None and reply is not c
        o1 = c["value_owner"] if is_read else None
        o2 = dkey = None
        ambiguous = False
        if is_read and c["value_sha256"] is not None:
            owners, latest, latest_key = written_digest(c)
            ambiguous = len(owners) > 1 or (latest is not None and read_as_own.get(c["value_sha256"], POS) <= t)
            if owners and not ambiguous:
                o2, dkey = latest, latest_key if latest is not None else None
        reply_data = not by_conn or reply["op"] in READ
        reply_owner = rules.key_owner(reply["key"], reply["ts"])[0] if by_conn else None
        o3 = reply_owner if by_conn and reply_data else None
        o4 = None if by_conn else key_o
        # a value naming another owner than its key's (a key of a family naming no owner: any owner is another)
        crossed = by_conn or (is_read and any(o is not None and (key_kind == "nobody" or key_o not in (None, o))
                                              for o in (o1, o2)))
        crossed_n += crossed and inw(t)
        owner, evidence = next(((o, n) for o, n in ((o1, "value_owner"), (o2, "digest"), (o3, "connection"),
                                                    (o4, "key")) if o is not None), (None, None))
        if owner is None and by_conn:
            evidence = "connection"
        conflict = len({o for o in (o1, o2, o3) if o is not None}) > 1 or (
            is_read and not reply_data and (o1 is not None or o2 is not None))
        if conflict:
            evidence = "conflict"
        elif ambiguous and o1 is None:
            evidence = "digest-ambiguous"
        vkey = dkey if dkey is not None else (reply["key"] if by_conn and reply_data else c["key"])
        category, severity = rules.category(vkey)
        req = reqs.get(c["request_id"])
        viewer, vkind = ((None, "background") if c["request_id"] is None else
                         (None, "unknown") if req is None else viewer_of(req, t, sessions))
        failed_req = req is not None and req["status"] is not None and req["status"] >= 500
        if c["status"] == "error" or failed_req:  # near-miss kinds: the first that applies
            outcome = "failed"
        elif not is_read or (not reply_data and not conflict):
            outcome = "not-data"
        else:
            outcome = "background" if c["request_id"] is None else "served"
        if crossed and outcome != "served":
            n_owner, n_cat = (reply_owner, rules.category(reply["key"])[0]) if not reply_data else (owner, category)
            near.append({"request_id": c["request_id"], "kind": outcome, "ts": t, "owner_id": n_owner,
                         "category": n_cat, "viewer_id": viewer})
        if not is_read or c["status"] != "ok":
            continue
        served.append(c)
        unknown_reads += vkind == "unknown" and inw(t)
        exposed = outcome == "served" and owner is not None and (
            owner != key_o if vkind == "unknown" else viewer != owner) and not rules.granted(
            owner, viewer, category, t, vkey)
        if not exposed:
            flagged[evidence] += evidence in ("conflict", "digest-ambiguous") and inw(t)
            continue
        row = {"ts": t, "request_id": c["request_id"], "key": c["key"], "viewer_id": viewer, "owner_id": owner,
               "category": category, "evidence": evidence, "viewer_kind": vkind, "value_key": vkey,
               "severity": severity, "session_id": req["session_id"] if req else None,
               "reply_request_id": reply["request_id"] if by_conn else None, "owner_by_value": o1,
               "owner_by_digest": o2, "owner_by_connection": o3, "owner_by_key": key_o}
        (exposures if inw(t) else outside).append(row)
    near += [{"request_id": q["request_id"], "kind": "discarded", "ts": q["ts"], "viewer_id": None,
              "owner_id": rules.key_owner(q["key"], q["ts"])[0], "category": rules.category(q["key"])[0]}
             for q in discarded]
    active = set()  # (viewer, session) of the requests answered inside the window, signed in
    for r in reqs.values():
        if inw(r["ts"]) and viewer_of(r, r["ts"], sessions)[0] is not None:
            active.add((viewer_of(r, r["ts"], sessions)[0], r["session_id"]))
    users, owners = {v for v, _ in active}, {e["owner_id"] for e in exposures}
    near_in = [n for n in near if inw(n["ts"])]
    served_in = [c for c in served if inw(c["ts"])]
    by = lambda rows, col: dict(Counter(r[col] for r in rows))  # noqa: E731
    owners_by_category = {}
    for e in exposures:
        owners_by_category.setdefault(e["category"], set()).add(e["owner_id"])
    summary = {
        "requests": sum(1 for r in reqs.values() if inw(r["ts"])),
        "active_users": len(users),
        "active_sessions": len({s for _, s in active if s is not None}),
        "served_items": len(served_in),
        "served_items_without_connection": sum(1 for c in served_in if c["host"] is None or c["conn_id"] is None),
        "crossed_replies": crossed_n,
        "exposures": len(exposures),
        "affected_owners": len(owners),
        "viewers": len({e["viewer_id"] for e in exposures if e["viewer_id"] is not None}),
        "anonymous_viewer_sessions": len({e["session_id"] or "request:" + e["request_id"]
                                          for e in exposures if e["viewer_kind"] == "anonymous"}),
        "unknown_viewer_exposures": sum(1 for e in exposures if e["viewer_kind"] == "unknown"),
        "exposures_by_category": by(exposures, "category"),
        "exposures_by_severity": by(exposures, "severity"),
        "exposures_by_evidence": by(exposures, "evidence"),
        "affected_owners_by_category": {k: len(v) for k, v in owners_by_category.items()},
        "ambiguous_rows": sum(1 for e in exposures if e["evidence"] == "digest-ambiguous"),
        "conflict_rows": sum(1 for e in exposures if e["evidence"] == "conflict"),
        "flagged_not_exposed": {k: v for k, v in flagged.items() if v},
        "unknown_viewer_reads": unknown_reads,
        "near_misses": {"total": len(near_in), "by_kind": by(near_in, "kind"),
                        "by_category": by(near_in, "category"), "outside_window": len(near) - len(near_in)},
        "outside_window": {"exposures": len(outside), "affected_owners": len({e["owner_id"] for e in outside}),
                           "by_category": by(outside, "category")},
        "affected_active_users": len(owners & users),
    }
    return exposures, outside, near, summary


# ----------------------------------------------------------------------------------------- random incidents

def pick(rng, weights):
    return rng.choices(list(weights), list(weights.values()))[0]


def generate(seed):
    """A tiny random incident: rows with int-microsecond ts, before ingest's spellings are applied."""
    rng = random.Random(seed)
    users = [f"u{i}" for i in range(rng.randint(3, 8))]
    sids = [f"S{i}" for i in range(rng.randint(2, 6))]
    nominal = {s: rng.choice(users) for s in sids}
    rids = [f"r{i}" for i in range(rng.randint(4, 25))]
    digests = [f"{i:x}" * 64 for i in range(rng.randint(2, 6))]
    sha_p, owner_p = rng.choice([0, 0.4, 1]), rng.choice([0, 0.3, 1])
    ties = rng.random() < 0.4  # most lines of a connection share their second

    def key():
        u = rng.choice(users)
        return pick(rng, {f"user:{u}:titles": 4, f"billing:{u}": 3, "public:motd": 2,
                          f"conv:c{rng.randint(0, 2)}": 2, f"misc:{rng.randint(0, 2)}": 1, f"user:{u}:avatar": 1})

    cache = []
    for h in range(rng.randint(2, 4)):
        for conn in range(1, rng.randint(1, 3) + 1):
            t = rng.randint(0, 8 if ties else 60) * S
            for _ in range(rng.randint(3, 14)):
                t += rng.choice([0, 0, 0, 1]) * S if ties else rng.choice([0, 0, 1, 1, 2, 5, 20]) * S + rng.choice(
                    [0, 0, 0, S // 2])
                op = pick(rng, {"GET": 12, "HGETALL": 1, "SET": 4, "DEL": 1, "PING": 1, "RECONNECT": 1, "CONNECT": 0.3})
                line = {"ts": t, "request_id": rng.choice(rids) if rng.random() > 0.12 else None, "op": op,
                        "host": f"h{h}", "conn_id": str(conn), "key": key(),
                        "status": pick(rng, {"ok": 10, None: 2, "cancelled": 3, "timeout": 1.5, "error": 1.5})}
                if op in RESET:
                    line["key"] = rng.choice([None, ""])
                    line["request_id"] = None if rng.random() < 0.7 else line["request_id"]
                if op in ("GET", "HGETALL", "SET") and rng.random() < sha_p:
                    line["value_sha256"] = rng.choice(digests)
                if op in ("GET", "HGETALL") and rng.random() < owner_p:
                    line["value_owner"] = rng.choice([*users, ""])
                cache.append(line)
    for _ in range(rng.randint(0, 3)):  # no connection logged (or only half of it)
        line = {"ts": rng.randint(0, 120) * S, "request_id": rng.choice(rids), "op": "GET", "key": key(),
                "value_sha256": rng.choice([None, rng.choice(digests)]), "value_owner": rng.choice([None, *users])}
        line.update(rng.choice([{}, {"conn_id": "1"}, {"conn_id": "1", "host": ""}]))
        cache.append(line)
    cache.sort(key=lambda c: c["ts"])
    for _ in range(rng.randint(0, 2)):  # re-shipped duplicates
        cache.insert(rng.randint(0, len(cache)), dict(rng.choice(cache)))
    files = rng.choice([1, 1, 2])
    for c in cache:
        c["_file"] = rng.randint(1, files)

    last = {}
    for c in cache:
        if c["request_id"] is not None:
            last[c["request_id"]] = max(last.get(c["request_id"], 0), c["ts"])
    requests = []
    for rid, t in last.items():
        if rng.random() < 0.06:
            continue  # missing from the requests log
        sid = rng.choice(sids) if rng.random() > 0.1 else rng.choice([None, ""])
        who = pick(rng, {"nominal": 6, "other": 2, "none": 1.5})
        user = nominal[sid] if who == "nominal" and sid else (rng.choice(users) if who != "none" else None)
        requests.append({"ts": t + 1000, "request_id": rid, "session_id": sid, "user_id": user, "route": "GET /x",
                         "status": pick(rng, {200: 8, 404: 1, 499: 0.5, 500: 1, 503: 1, None: 1})})
    rng.shuffle(requests)
    if requests and rng.random() < 0.3:
        requests.append(dict(rng.choice(requests)))
    if requests and rng.random() < 0.3:  # the same request_id with other content: the first line wins
        requests.append({**rng.choice(requests), "user_id": rng.choice(users), "status": 200})
    sessions = []
    for s in sids:
        for _ in range(rng.randint(0, 4)):
            sessions.append({"ts": rng.randint(0, 12) * S if ties else rng.randint(0, 30) * 5 * S, "session_id": s,
                             "user_id": pick(rng, {nominal[s]: 7, rng.choice(users): 1, None: 2}),
                             "event": pick(rng, {"login": 4, "refresh": 3, "logout": 1.5, "expire": 1.5})})
    sessions.sort(key=lambda e: e["ts"])
    if sessions and rng.random() < 0.3:
        sessions.insert(rng.randint(0, len(sessions)), dict(rng.choice(sessions)))
    files = rng.choice([1, 1, 2])
    for e in sessions:
        e["_file"] = rng.randint(1, files)
    ownership = []
    for r in range(3):
        for _ in range(rng.randint(0, 2)):
            a, b = rng.choice([None, rng.randint(0, 5) * 30 * S]), rng.choice([None, None, rng.randint(0, 150) * S])
            if a is not None and b is not None and b <= a:
                a, b = b, a + S
            ownership.append({"resource_id": f"c{r}", "owner_id": rng.choice(users), "valid_from": a, "valid_to": b})
    grants = []
    for _ in range(rng.randint(0, 3)):
        a = rng.choice([None, rng.randint(0, 100) * S])
        grants.append({"owner_id": rng.choice(users), "viewer_id": rng.choice([*users, "*"]),
                       "category": rng.choice(["", "*", "conversation_titles", "payment_info", "conversation_content",
                                               "public", "uncategorized", "profile"]),
                       "valid_from": a, "valid_to": rng.choice([None, (a or 0) + rng.randint(1, 100) * S])})
    shares = random.Random(f"{seed}-shares")  # a grant of one resource (a share link); its own draws
    for g in grants:
        g["resource_id"] = shares.choice([None, None, None, "c0", "c1", "c2"])
    window = None
    if rng.random() < 0.25:
        a = rng.randint(0, 100) * S
        window = (a, a + rng.randint(10, 200) * S)
    return {"seed": seed, "cache": cache, "requests": requests, "sessions": sessions, "ownership": ownership,
            "grants": grants, "window": window}


def iso(us):
    return (BASE + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


def spelled(kind, row, rng):
    """The row as a log line, in one of the spellings ingest normalises."""
    out = {k: v for k, v in row.items() if not k.startswith("_")}
    form, us = rng.random(), row["ts"]
    out["ts"] = (int(BASE.timestamp() * 10**9) + us * 1000 if form < 0.05 else BASE.timestamp() + us / 1e6
                 if form < 0.1 else (BASE.timestamp() * 10**6 + us) / 1000 if form < 0.15 else
                 (BASE + timedelta(microseconds=us)).astimezone(timezone(timedelta(hours=1))).isoformat()
                 if form < 0.3 else iso(us))
    if kind == "cache":
        if rng.random() < 0.15:
            out["op"] = out["op"].lower()
        if out.get("status") == "cancelled" and rng.random() < 0.3:
            out["status"] = "canceled"
        elif out.get("status") and rng.random() < 0.15:
            out["status"] = out["status"].upper()
        if out.get("value_sha256") and rng.random() < 0.2:
            out["value_sha256"] = out["value_sha256"].upper()
        if out.get("conn_id") and rng.random() < 0.2:
            out["conn_id"] = int(out["conn_id"])
    if kind == "sessions" and rng.random() < 0.15:
        out["event"] = out["event"].upper()
    return json.dumps(out)


def write_case(case, root: Path):
    """Logs (JSON Lines), side tables (CSV) and incident.toml under root; the oracle's normalised rows."""
    rng, logs = random.Random(f"spell-{case['seed']}"), root / "logs"
    logs.mkdir(parents=True)
    rows = {}
    for kind in ("cache", "requests", "sessions"):
        files = max((r.get("_file", 1) for r in case[kind]), default=1)
        seen, rows[kind] = set(), []
        for fno in range(1, files + 1):
            path = logs / f"{kind}-{fno}.jsonl"
            mine = [r for r in case[kind] if r.get("_file", 1) == fno]
            path.write_text("".join(spelled(kind, r, rng) + "\n" for r in mine))
            for line, row in enumerate(mine, 1):  # what ingest keeps: empty -> NULL, status ok, first copy wins
                rec = {k: (None if v == "" else v) for k, v in row.items() if not k.startswith("_")}
                if kind == "cache":
                    rec = {**dict.fromkeys(("request_id", "key", "host", "conn_id", "value_sha256", "value_owner")),
                           **rec, "status": rec.get("status") or "ok"}
                ident = rec["request_id"] if kind == "requests" else tuple(sorted(rec.items(), key=str))
                if ident not in seen:
                    seen.add(ident)
                    rows[kind].append({"status": None, **rec, "source_file": str(path), "source_line": line})
    toml = []
    if case["window"]:
        toml += ["[window]", f'start = "{iso(case["window"][0])}"', f'end = "{iso(case["window"][1])}"']
    for k in KEYS:
        toml += ["[[keys]]", *(f"{name} = '{value}'" for name, value in k.items())]
    toml += ["[tables]", 'ownership = "ownership.csv"', 'grants = "grants.csv"']
    (root / "incident.toml").write_text("\n".join(toml) + "\n")
    write_tables(case, root)
    return root / "incident.toml", rows


def write_tables(case, root: Path) -> None:
    """The case's ownership and grants tables as CSV under root."""
    for name, cols in (("ownership", ("resource_id", "owner_id", "valid_from", "valid_to")),
                       ("grants", ("owner_id", "viewer_id", "category", "valid_from", "valid_to", "resource_id"))):
        lines = [",".join(cols)] + [",".join("" if r[c] is None else iso(r[c]) if c.startswith("valid") else r[c]
                                             for c in cols) for r in case[name]]
        (root / f"{name}.csv").write_text("\n".join(lines) + "\n")


def aimed_grants(case, rows, seed):
    """Grants aimed at a few of the exposures the case's own grants leave, each at one edge of the grant rule:
    from the read's very instant (excuses it), ending at it (does not: valid_to is exclusive), to anyone ('*'),
    of another category, of the read value's resource or of another one. Random grants rarely name a pair of
    users that a crossed reply joined."""
    rng = random.Random(f"{seed}-aim")
    found, outside, _, _ = oracle(rows["cache"], rows["requests"], rows["sessions"],
                                  Rules(case["ownership"], case["grants"]), case["window"] or (NEG, POS))
    rules, grants = Rules(case["ownership"], []), []
    for e in rng.sample(found + outside, min(3, len(found + outside))):
        grant = {"owner_id": e["owner_id"], "viewer_id": e["viewer_id"], "category": e["category"],
                 "valid_from": e["ts"] - rng.randint(0, 5) * S, "valid_to": e["ts"] + S, "resource_id": None}
        edge = rng.choice(["from", "until", "anyone", "category", "resource", "other resource"])
        if e["viewer_id"] is None:  # an anonymous viewer: only a grant to anyone names them
            grant["viewer_id"] = "*"
        if edge == "from":
            grant["valid_from"] = e["ts"]
        elif edge == "until":
            grant["valid_to"] = e["ts"]
        elif edge == "anyone":
            grant.update(viewer_id="*", category=rng.choice(["", "*"]))
        elif edge == "category":
            grant["category"] = "profile" if e["category"] != "profile" else "payment_info"
        else:
            resource = rules.resource(e["value_key"])
            grant["resource_id"] = resource if edge == "resource" and resource is not None else "c9"
        grants.append(grant)
    return grants


EXPOSURE_FIELDS = ("ts", "request_id", "key", "viewer_id", "owner_id", "category", "evidence", "viewer_kind",
                   "value_key", "severity", "session_id", "reply_request_id", "owner_by_value", "owner_by_digest",
                   "owner_by_connection", "owner_by_key")
NEAR_FIELDS = ("ts", "request_id", "kind", "owner_id", "category", "viewer_id")


def value(v):
    """A cell of whosaw's output as the oracle writes it: NULL as None, a time as microseconds after BASE."""
    if isinstance(v, pd.Timestamp):
        return (v - pd.Timestamp(BASE)) // pd.Timedelta(microseconds=1)
    return None if not isinstance(v, str) and pd.isna(v) else v


def differences(seed, root: Path):
    """What whosaw and the oracle disagree on for one seed (empty: they agree)."""
    case = generate(seed)
    config, rows = write_case(case, root)
    case["grants"] += aimed_grants(case, rows, seed)
    write_tables(case, root)
    ingest([root / "logs"], root / "out", config=config, progress=False)
    summary = analyze(root / "out", config, progress=False)
    window = case["window"] or (NEG, POS)
    want_exp, want_outside, want_near, want = oracle(rows["cache"], rows["requests"], rows["sessions"],
                                                     Rules(case["ownership"], case["grants"]), window)
    diffs = []
    for name, fields, want_rows in (("exposures", EXPOSURE_FIELDS, want_exp),
                                    ("exposures_outside_window", EXPOSURE_FIELDS, want_outside),
                                    ("near_misses", NEAR_FIELDS, want_near)):
        frame = pd.read_parquet(root / "out" / f"{name}.parquet")
        got = Counter(tuple(value(getattr(r, f)) for f in fields) for r in frame.itertuples())
        expected = Counter(tuple(r[f] for f in fields) for r in want_rows)
        if got != expected:
            diffs.append((name, "whosaw only", sorted(got - expected, key=str), "oracle only",
                          sorted(expected - got, key=str)))
    diffs += [(k, summary.get(k), v) for k, v in want.items() if summary.get(k) != v]
    return diffs


@pytest.mark.parametrize("seed", range(20))
def test_whosaw_agrees_with_the_oracle(seed, tmp_path):
    assert differences(seed, tmp_path) == []


if __name__ == "__main__":  # seed hunting: python tests/test_oracle.py FIRST LAST
    first, last = int(sys.argv[1]), int(sys.argv[2])
    bad = 0
    for s in range(first, last):
        with tempfile.TemporaryDirectory() as tmp:
            found = differences(s, Path(tmp))
        if found:
            bad += 1
            print(s, found, flush=True)
    print(f"{last - first - bad}/{last - first} seeds agree")
