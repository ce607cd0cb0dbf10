"""Output folders: mcugen's files apart from the user's, through a manifest of hashes; nothing changed is lost."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from mcugen.errors import OutputError

MANIFEST = ".mcugen-output"
BACKUP_DIR = ".mcugen-backup"
FORMAT = 2

# A file holding these markers keeps what the user wrote between them across regenerations.
_SECTION = re.compile(
    r"(/\* USER CODE BEGIN (?P<name>[A-Za-z0-9_]+) \*/)(?P<body>.*?)(/\* USER CODE END (?P=name) \*/)", re.DOTALL
)


@dataclass
class WriteResult:
    """What `write` did: files written, stale files removed, where replaced files were backed up."""

    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    backup: Path | None = None
    kept_sections: list[str] = field(default_factory=list)  # "main.c: input" for each user section carried over


def user_sections(text: str) -> dict[str, str]:
    """{name: body} of the USER CODE sections of `text`."""
    return {m.group("name"): m.group("body") for m in _SECTION.finditer(text)}


def skeleton(text: str) -> str:
    """`text` with the bodies of its USER CODE sections emptied: what mcugen owns of the file."""
    return _SECTION.sub(lambda m: m.group(1) + m.group(4), text)


def _digest(data: bytes, sectioned: bool) -> str:
    if sectioned:
        data = skeleton(data.decode("utf-8", errors="surrogateescape")).encode("utf-8", errors="surrogateescape")
    return hashlib.sha256(data).hexdigest()


def _as_bytes(content: str | bytes) -> bytes:
    return content if isinstance(content, bytes) else content.encode("utf-8")


def _has_sections(data: bytes) -> bool:
    return b"/* USER CODE BEGIN " in data


@dataclass
class _Manifest:
    files: dict[str, str]  # relative path -> sha256 (of the skeleton for sectioned files); "" = unknown
    sectioned: set[str]
    scratch: list[str]  # folders of build outputs mcugen may empty
    legacy: bool = False  # an older mcugen's marker: no hashes, every file counts as possibly edited


def _read_manifest(out_dir: Path) -> _Manifest | None:
    path = out_dir / MANIFEST
    if not path.is_file():
        if (out_dir / "mcugen_firmware.json").is_file():  # firmware projects of older mcugen versions
            return _Manifest(files={}, sectioned=set(), scratch=["build", "build-cmake"], legacy=True)
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError
        return _Manifest(files=dict(data["files"]), sectioned=set(data.get("sectioned", ())),
                         scratch=list(data.get("scratch", ())))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return _Manifest(files={}, sectioned=set(), scratch=[], legacy=True)


def _safe_relative(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts and parts[0] not in (MANIFEST, BACKUP_DIR)


def _existing_files(out_dir: Path) -> list[str]:
    """Every file under `out_dir` (relative, sorted), without mcugen's manifest and backups."""
    found = []
    for root, dirs, names in os.walk(out_dir):
        dirs[:] = sorted(d for d in dirs if not (Path(root) == out_dir and d == BACKUP_DIR))
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), out_dir)
            if rel != MANIFEST:
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _conflicts(out_dir: Path, manifest: _Manifest | None, new: Mapping[str, bytes] | None,
               scratch: Sequence[str]) -> list[str]:
    """Files that writing `new` would overwrite or delete although mcugen did not write them as
    they are now: edited generated files, and the user's own files in the way."""
    owned_scratch = tuple(f"{d}/" for d in (manifest.scratch if manifest else []))
    conflicts = []
    if manifest is not None and not manifest.legacy:
        for rel, recorded in sorted(manifest.files.items()):
            path = out_dir / rel
            if _safe_relative(rel) and path.is_file() and _digest(path.read_bytes(), rel in manifest.sectioned) != recorded:
                conflicts.append(rel)
    owned = set(manifest.files) if manifest is not None and not manifest.legacy else set()
    candidates = set(new or ())
    new_scratch = tuple(f"{d}/" for d in scratch if f"{d}/" not in owned_scratch)
    if new_scratch:
        # Build folders mcugen will empty but did not make: what is in them is the user's.
        candidates |= {f for f in _existing_files(out_dir) if f.startswith(new_scratch)}
    for rel in sorted(candidates - owned):
        path = out_dir / rel
        if not path.is_file() or rel.startswith(owned_scratch):
            continue
        if new is not None and rel in new and path.read_bytes() == new[rel]:
            continue  # already holds exactly what mcugen would write
        conflicts.append(rel)
    if new is not None and manifest is not None and not manifest.legacy:
        # A user section the new file no longer has would be lost.
        for rel in sorted(manifest.sectioned & set(new)):
            path = out_dir / rel
            if rel in conflicts or not path.is_file():
                continue
            old = user_sections(path.read_text(errors="surrogateescape"))
            kept = user_sections(new[rel].decode("utf-8"))
            if any(body.strip() for name, body in old.items() if name not in kept):
                conflicts.append(rel)
    return sorted(set(conflicts))


def check(out_dir: Path, force: bool = False, files: Mapping[str, str | bytes] | None = None,
          scratch: Sequence[str] = ()) -> None:
    """OutputError (exit 2), before anything is written, if `out_dir` is not a folder, or if
    writing there would overwrite or delete a file mcugen did not write as it is now (a
    generated file the user edited, a file of the user's) and not `force`. A non-empty folder
    without an mcugen manifest is refused as a whole (with `force`, mcugen writes beside the
    files there and backs up those it replaces)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder; choose another output folder")
    if not out_dir.is_dir() or force:
        return
    manifest = _read_manifest(out_dir)
    new = {k: _as_bytes(v) for k, v in files.items()} if files is not None else None
    if manifest is None:
        foreign = _existing_files(out_dir)
        if foreign:
            raise OutputError(
                f"{out_dir}: folder holds files mcugen did not write ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); nothing was written (choose a new or empty folder, or "
                f"--force: mcugen then writes beside them and backs up any it replaces in {out_dir / BACKUP_DIR})"
            )
        return
    conflicts = _conflicts(out_dir, manifest, new, scratch)
    if conflicts:
        what = ("written by an older mcugen that kept no hashes (they may hold your edits)" if manifest.legacy
                else "changed since mcugen wrote them")
        raise OutputError(
            f"{out_dir}: refusing to overwrite or delete files {what}: {', '.join(conflicts[:8])}"
            f"{', ...' if len(conflicts) > 8 else ''}; nothing was written (--force replaces them and keeps "
            f"a copy in {out_dir / BACKUP_DIR})"
        )


def _merge_sections(new_text: str, old_text: str) -> tuple[str, list[str]]:
    old = user_sections(old_text)
    kept: list[str] = []

    def keep(m: re.Match) -> str:
        name = m.group("name")
        if name in old and old[name] != m.group("body"):
            kept.append(name)
            return m.group(1) + old[name] + m.group(4)
        return m.group(0)

    return _SECTION.sub(keep, new_text), kept


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.mcugen-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write(out_dir: Path, files: Mapping[str, str | bytes], *, force: bool = False,
          scratch: Sequence[str] = (), quiet: bool = False) -> WriteResult:
    """Writes `files` ({relative path: text or bytes}) into `out_dir` and records them in its
    manifest. Only what mcugen owns changes: files of a previous output that are not written
    again are removed, the `scratch` folders (build outputs) emptied, the user's other files
    kept. USER CODE sections of a file are carried over into its new version. A file the user
    changed (or a file of theirs in the way) is refused, naming it, before anything is written;
    with `force` it is replaced after a copy goes to <out_dir>/.mcugen-backup/<time>/."""
    out_dir = Path(out_dir)
    new = {}
    for rel, content in files.items():
        if not _safe_relative(rel):
            raise OutputError(f"{rel}: not a file name mcugen writes inside its output folder")
        new[rel] = _as_bytes(content)
    check(out_dir, force=force, files=new, scratch=scratch)
    manifest = _read_manifest(out_dir) if out_dir.is_dir() else None
    conflicts = _conflicts(out_dir, manifest, new, scratch) if out_dir.is_dir() else []
    result = WriteResult()
    old_files = dict(manifest.files) if manifest is not None and not manifest.legacy else {}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if conflicts:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            backup = out_dir / BACKUP_DIR / stamp
            n = 1
            while backup.exists():
                n += 1
                backup = out_dir / BACKUP_DIR / f"{stamp}-{n}"
            for rel in conflicts:
                (backup / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(out_dir / rel, backup / rel)
            result.backup = backup
        for folder in sorted(set(scratch) | set(manifest.scratch if manifest else ())):
            if _safe_relative(folder) and (out_dir / folder).is_dir():
                shutil.rmtree(out_dir / folder)
        for rel in sorted(set(old_files) - set(new)):
            path = out_dir / rel
            if _safe_relative(rel) and path.is_file():
                path.unlink()
                result.removed.append(rel)
                parent = path.parent
                while parent != out_dir and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        sectioned = set()
        hashes = {}
        for rel, data in sorted(new.items()):
            path = out_dir / rel
            if _has_sections(data):
                sectioned.add(rel)
                if path.is_file():  # under --force too: the backup has the whole old file
                    merged, kept = _merge_sections(data.decode("utf-8"), path.read_text(errors="surrogateescape"))
                    data = merged.encode("utf-8", errors="surrogateescape")
                    result.kept_sections += [f"{rel}: {name}" for name in kept]
            if not (path.is_file() and path.read_bytes() == data):
                _write_atomically(path, data)
            result.written.append(rel)
            hashes[rel] = _digest(data, rel in sectioned)
        record = {"format": FORMAT, "generator": "mcugen", "files": hashes, "sectioned": sorted(sectioned),
                  "scratch": sorted(set(scratch))}
        _write_atomically(out_dir / MANIFEST, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    except OSError as e:
        raise OutputError(f"{out_dir}: cannot write the output ({e.strerror or e})") from None
    if result.backup is not None and not quiet:
        print(f"note: replaced {len(conflicts)} changed file(s) ({', '.join(conflicts[:4])}"
              f"{', ...' if len(conflicts) > 4 else ''}); the previous versions are in {result.backup}",
              file=sys.stderr)
    return result


def update(out_dir: Path, files: Mapping[str, str | bytes]) -> None:
    """Rewrites files mcugen owns in `out_dir` (a measurement added after the build) and
    records their new hashes; a file the user changed meanwhile is left alone."""
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    if manifest is None or manifest.legacy:
        return
    record = json.loads((out_dir / MANIFEST).read_text())
    for rel, content in files.items():
        path = out_dir / rel
        if rel not in manifest.files or not path.is_file():
            continue
        sectioned = rel in manifest.sectioned
        if _digest(path.read_bytes(), sectioned) != manifest.files[rel]:
            continue
        data = _as_bytes(content)
        _write_atomically(path, data)
        record["files"][rel] = _digest(data, sectioned)
    _write_atomically(out_dir / MANIFEST, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())


def is_output(out_dir: Path) -> bool:
    """True if `out_dir` holds an mcugen manifest (this version's or an older one's)."""
    return _read_manifest(Path(out_dir)) is not None
