"""manifest.json's output hashes: kept up to date with the files on disk, without re-hashing unchanged files;
OUT's lock and the ingest journal."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from pipeline.errors import WhosawError
from pipeline.manifest import LOCK_NAME, MANIFEST_NAME, PENDING_NAME, locked, update_manifest


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_outputs_hash_every_file_and_skip_scratch_and_the_manifest(tmp_path):
    (tmp_path / "parquet" / "cache").mkdir(parents=True)
    (tmp_path / "parquet" / "cache" / "part.parquet").write_bytes(b"lake bytes")
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "spill.bin").write_bytes(b"scratch")

    manifest = update_manifest(tmp_path, stage={"done": True})

    assert manifest["outputs"] == {
        "parquet/cache/part.parquet": _sha(tmp_path / "parquet" / "cache" / "part.parquet"),
        "summary.json": _sha(tmp_path / "summary.json"),
    }
    assert set(manifest["output_stats"]) == set(manifest["outputs"])
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["outputs"] == manifest["outputs"]


def test_a_rewritten_file_is_hashed_again_and_an_unchanged_one_keeps_its_hash(tmp_path):
    lake_file, summary = tmp_path / "lake.parquet", tmp_path / "summary.json"
    lake_file.write_bytes(b"written once")
    summary.write_text('{"exposures": 1}')
    update_manifest(tmp_path)

    # Plant a recorded hash for the unchanged lake file: reused as it is, since size and mtime still match.
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    manifest["outputs"]["lake.parquet"] = "recorded-earlier"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    # Rewrite the summary with the same size: its mtime changes, so it is hashed again.
    stat = summary.stat()
    summary.write_text('{"exposures": 2}')
    os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    manifest = update_manifest(tmp_path)

    assert manifest["outputs"]["lake.parquet"] == "recorded-earlier"
    assert manifest["outputs"]["summary.json"] == _sha(summary)
    summary.unlink()
    assert "summary.json" not in update_manifest(tmp_path)["outputs"]


def test_another_thread_is_refused_while_one_holds_the_lock(tmp_path):
    """The lock is re-entrant in the thread that holds it (run = ingest + analyze + report), not in the whole
    process: a second thread (a background job in a notebook) used to walk in and write to OUT beside it."""
    import threading

    from pipeline.errors import WhosawError
    from pipeline.manifest import locked

    seen = []

    def other() -> None:
        try:
            with locked(tmp_path, "analyze"):
                seen.append("entered")
        except WhosawError as exc:
            seen.append(str(exc))

    with locked(tmp_path, "run"), locked(tmp_path, "ingest"):  # re-entrant in this thread
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert seen == [f"another run (pid {os.getpid()}) is writing to {tmp_path}; try again when it is done"]
    worker = threading.Thread(target=other)  # free again once released
    worker.start()
    worker.join()
    assert seen[1:] == ["entered"]


def test_a_journal_never_moves_a_file_from_outside_out(tmp_path):
    """The rollback restores the rejects it kept in OUT/.ingest-pending/; a journal naming '../../victim' as a
    kept file used to move that file, from outside OUT, into OUT's rejects (gone from where it was)."""
    from pipeline.manifest import PENDING_NAME, locked

    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.write_text("not whosaw's\n")
    (out / PENDING_NAME).mkdir(parents=True)
    (out / "rejects").mkdir()
    journal = {"run": "killed", "created": [], "restore": {"../../victim": "rejects/requests.csv"}}
    (out / PENDING_NAME / "journal.json").write_text(json.dumps(journal))
    with locked(out, "report"):
        pass
    assert victim.read_text() == "not whosaw's\n"
    assert not (out / "rejects" / "requests.csv").exists() and not (out / PENDING_NAME).exists()


def test_the_lock_never_follows_a_link(tmp_path):
    """The lock file is truncated when taken: a link planted in its place must not truncate what it points to."""
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious\n")
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(WhosawError, match="cannot lock"):
        with locked(out, "analyze"):
            pass
    assert victim.read_text() == "precious\n"


def test_a_damaged_journal_says_what_to_do(tmp_path):
    out = tmp_path / "out"
    (out / PENDING_NAME).mkdir(parents=True)
    (out / PENDING_NAME / "journal.json").write_text('{"run": "x", "crea')
    with pytest.raises(WhosawError, match="was killed and its journal .* is damaged"):
        with locked(out, "analyze"):
            pass
