"""The run directory ``audits/<env>/<run id>/``: its layout, and reading it safely.

A run directory may have been altered by someone else after the audit (that is what a sign-off guards against), so
everything that reads one — verify, sign-off, diff, archive, the review widgets — reads it through this module:

- nothing is followed: the run directory, every folder and every file is opened with ``O_NOFOLLOW`` relative to its
  parent's descriptor, and a symlink is reported, never resolved;
- nothing special is opened: an entry whose ``lstat`` is not a regular file or an expected folder (a FIFO, a socket,
  a device, an unexpected folder) is reported by name and left alone;
- everything is bounded: entries per listing, bytes per file, earlier runs examined.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from recsys_audit.params import Params, ParamsError, load_params, walk_secrets

FINDINGS_FILE = "findings.json"
REPORT_FILE = "report.html"
JUNIT_FILE = "junit.xml"
PARAMS_FILE = "params.yaml"
SIGNOFF_FILE = "signoff.json"
SIGNATURE_FILE = "signoff.json.sig"  # the name `ssh-keygen -Y sign signoff.json` gives it
NOTEBOOKS_DIR = "notebooks"
FINDINGS_DIR = "findings"
EXPECTED_DIRS = (FINDINGS_DIR, NOTEBOOKS_DIR)  # the only folders a run has, each one level deep

RUN_ID = re.compile(r"^\d{8}T\d{6}Z(?:-\d{1,3})?$")  # the UTC start of the run, e.g. 20261126T101500Z
MAX_ENTRIES = 5_000  # entries of one run directory (a full audit has about 20)
MAX_LISTED = 10_000  # entries read from an environment folder or an archive root
MAX_FILE_BYTES = 256 << 20
MAX_DOCUMENT_BYTES = 64 << 20  # findings.json, params.yaml, signoff.json

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class RunDirError(Exception):
    """A run directory that cannot be read as one; the message names the entry and what is wrong with it."""


class MissingEntry(RunDirError):
    """The entry does not exist."""


def env_folder(env: str) -> str:
    """The folder name of an environment under the audits root."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", env).lstrip(".") or "env"  # never '..' or a hidden folder


# --- entries ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    path: str  # relative POSIX path, e.g. notebooks/00_serving_mode.ipynb
    kind: str  # file | dir | symlink | FIFO | socket | device
    size: int

    @property
    def problem(self) -> str | None:
        """Why this entry does not belong in a run directory, or None."""
        if self.kind == "file":
            return None
        if self.kind == "dir":
            return None if self.path in EXPECTED_DIRS else f"{self.path}/: unexpected directory"
        return f"{self.path}: {self.kind} (a run directory holds only regular files; never followed or opened)"


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


def _open_run_dir(run_dir: Path) -> int:
    try:
        return os.open(run_dir, _OPEN_DIR)
    except OSError as exc:
        if exc.errno in {errno.ELOOP, errno.ENOTDIR} and run_dir.is_symlink():
            raise RunDirError(f"{run_dir}: a symlink — pass the run directory itself") from None
        if exc.errno == errno.ENOENT:
            raise RunDirError(f"{run_dir}: no such run directory") from None
        raise RunDirError(f"{run_dir}: not a readable directory ({exc.strerror})") from None


def list_entries(run_dir: Path) -> list[Entry]:
    """Every entry of a run directory (folders descended only when expected), sorted by path; at most MAX_ENTRIES."""
    entries: list[Entry] = []
    root = _open_run_dir(Path(run_dir))
    try:
        _scan(root, "", entries)
    finally:
        os.close(root)
    return sorted(entries, key=lambda e: e.path)


def _scan(fd: int, prefix: str, entries: list[Entry]) -> None:
    with os.scandir(fd) as listing:
        for item in listing:
            if len(entries) >= MAX_ENTRIES:
                raise RunDirError(f"{prefix or '.'}: more than {MAX_ENTRIES} entries — not an audit run directory")
            info = item.stat(follow_symlinks=False)
            entry = Entry(prefix + item.name, _kind(info.st_mode), info.st_size)
            entries.append(entry)
            if entry.kind == "dir" and entry.problem is None:
                sub = os.open(item.name, _OPEN_DIR, dir_fd=fd)
                try:
                    _scan(sub, entry.path + "/", entries)
                finally:
                    os.close(sub)


def _open_entry(run_dir: Path, rel: str) -> int:
    """A descriptor of the regular file ``rel`` in ``run_dir``, reached without following any symlink."""
    parts = rel.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise RunDirError(f"{rel}: not a plain relative path")
    fd = _open_run_dir(Path(run_dir))
    try:
        for index, part in enumerate(parts):
            try:
                info = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise MissingEntry(f"{rel}: missing") from None
            kind = _kind(info.st_mode)
            last = index == len(parts) - 1
            if kind != ("file" if last else "dir"):
                where = "/".join(parts[: index + 1])
                raise RunDirError(f"{where}: {kind}, not a {'regular file' if last else 'directory'} — never followed")
            child = os.open(part, _OPEN_FILE if last else _OPEN_DIR, dir_fd=fd)
            opened = os.fstat(child)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                os.close(child)
                raise RunDirError(f"{rel}: changed while being read")
            os.close(fd)
            fd = child
        return fd
    except OSError as exc:
        os.close(fd)
        raise RunDirError(f"{rel}: cannot be read ({exc.strerror})") from None
    except RunDirError:
        os.close(fd)
        raise


def read_entry(run_dir: Path, rel: str, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of the regular file ``rel`` (never a symlink or special file), at most ``max_bytes``."""
    fd = _open_entry(run_dir, rel)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise RunDirError(f"{rel}: larger than {max_bytes} bytes — not written by recsys-audit")
    return data


def sha256_entry(run_dir: Path, rel: str, max_bytes: int = MAX_FILE_BYTES) -> tuple[str, int]:
    """SHA-256 and size of the regular file ``rel``, reading at most ``max_bytes + 1`` bytes."""
    digest, size = hashlib.sha256(), 0
    fd = _open_entry(run_dir, rel)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            while size <= max_bytes and (chunk := handle.read(min(1 << 20, max_bytes + 1 - size))):
                digest.update(chunk)
                size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise RunDirError(f"{rel}: larger than {max_bytes} bytes")
    return digest.hexdigest(), size


def read_json(run_dir: Path, rel: str) -> Any:
    try:
        return json.loads(read_entry(run_dir, rel).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise RunDirError(f"{rel}: not valid JSON") from None


def read_document(run_dir: Path) -> dict[str, Any]:
    """``findings.json`` of a run, read safely; its ``env`` and ``findings`` must be there."""
    document = read_json(run_dir, FINDINGS_FILE)
    if not isinstance(document, dict) or not isinstance(document.get("env"), str):
        raise RunDirError(f"{FINDINGS_FILE}: not the findings of an audit run (no 'env')")
    if not isinstance(document.get("findings"), list):
        raise RunDirError(f"{FINDINGS_FILE}: field 'findings' is missing")
    return document


# --- locations -------------------------------------------------------------------------------------------------


def location_problem(run_dir: Path, env: str, run_id: str) -> str | None:
    """Why ``run_dir`` is not where a run of ``env`` with id ``run_id`` belongs (``<root>/<env>/<run id>``), or None."""
    run_dir = Path(run_dir).absolute()
    if run_dir.name != run_id:
        return f"run: the record is of run {run_id}, but the directory is {run_dir.name}"
    if run_dir.parent.name != env_folder(env):
        return f"environment: the record is of {env!r}, but the run sits in folder {run_dir.parent.name!r}"
    return None


def _subdirectories(folder: Path) -> list[Path]:
    """Real folders (not symlinks) directly under ``folder``, reading at most MAX_LISTED entries."""
    found = []
    try:
        with os.scandir(folder) as listing:
            for count, item in enumerate(listing):
                if count >= MAX_LISTED:
                    break
                if item.is_dir(follow_symlinks=False):
                    found.append(folder / item.name)
    except OSError:
        return []
    return found


def runs_of(env_dir: Path) -> list[Path]:
    """Run directories of one environment folder, newest first (names that are run ids, never symlinks)."""
    return sorted(
        (p for p in _subdirectories(Path(env_dir)) if RUN_ID.match(p.name)), key=lambda p: p.name, reverse=True
    )


def environments_of(root: Path) -> list[Path]:
    """Environment folders under an audits root (never symlinks), by name."""
    return sorted(_subdirectories(Path(root)), key=lambda p: p.name)


def earlier_runs(run_dir: Path, limit: int) -> list[Path]:
    """At most ``limit`` runs of the same environment folder older than ``run_dir``, newest first."""
    run_dir = Path(run_dir).absolute()
    return [p for p in runs_of(run_dir.parent) if p.name < run_dir.name][:limit]


# --- the params a run used ---------------------------------------------------------------------------------------


def recorded_params_yaml(params: Params) -> str:
    """The merged params document a run used (``include`` fragments folded in), with secret references kept as
    references — the copy a run keeps as ``params.yaml`` so judging it later needs neither the original file nor the
    secrets."""
    secrets = {id(secret): secret.ref for _, secret in walk_secrets(params)}

    def plain(value: Any) -> Any:
        if id(value) in secrets:
            return secrets[id(value)]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    document = plain(params.model_dump(mode="python", exclude={"include", "source"}))
    header = "# the params this audit ran with: include fragments merged in, secrets as references only\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def load_recorded_params(run_dir: Path, document: dict[str, Any]) -> Params:
    """The run's recorded ``params.yaml`` through the params loader, without resolving secrets. Relative paths in it
    resolve against the original params file (``params_file`` in findings.json), as they did during the run."""
    data = read_entry(run_dir, PARAMS_FILE)
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
        raise RunDirError(f"{PARAMS_FILE}: not valid YAML") from None
    if not isinstance(raw, dict) or "include" in raw:
        raise RunDirError(f"{PARAMS_FILE}: not the merged params of a run — re-run the audit with this kit")
    # The loader reads a path: give it the bytes read above, so nothing is read twice from the run directory.
    with tempfile.TemporaryDirectory(prefix="recsys-audit-params-") as folder:
        copy = Path(folder) / PARAMS_FILE
        copy.write_bytes(data)
        try:
            params = load_params(copy, resolve_secrets=False)
        except ParamsError as exc:
            first = str(exc).splitlines()[0].replace(str(copy), PARAMS_FILE)
            raise RunDirError(first) from None
    original = document.get("params_file")
    params.source = Path(original) if isinstance(original, str) and original else Path(run_dir).absolute() / PARAMS_FILE
    return params
