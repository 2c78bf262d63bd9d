"""manifest.json: what went in (files, hashes, counts), with which settings, and what came out (hashes).

Each stage updates its own sections; ``outputs`` is recomputed from the files on disk at the end of a stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from . import __version__

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(out: Path) -> dict[str, Any]:
    """The manifest in ``out``, or an empty one."""
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return {"tool": "whosaw", "version": __version__, "files": [], "skipped": [], "outputs": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def save_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    path = Path(out) / MANIFEST_NAME
    manifest["tool"] = "whosaw"
    manifest["version"] = __version__
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def update_manifest(out: Path, **sections: Any) -> dict[str, Any]:
    """Set top-level sections of the manifest, refresh ``outputs``, and save it."""
    manifest = load_manifest(out)
    manifest.update(sections)
    manifest["outputs"] = output_hashes(Path(out))
    save_manifest(out, manifest)
    return manifest


def output_hashes(out: Path) -> dict[str, str]:
    """SHA-256 of every file whosaw wrote under ``out`` (the manifest itself and scratch space excluded)."""
    hashes = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not path.is_file() or rel.parts[0].startswith(".") or rel.name == MANIFEST_NAME:
            continue
        hashes[rel.as_posix()] = sha256_file(path)
    return hashes
