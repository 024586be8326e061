"""Where audit runs are kept: a folder (``audits/<env>/<run id>/``) or S3 (``s3://bucket/prefix/<env>/<run id>/``).

A *run store* lists environments and runs, hands a run to the readers (verify, sign, diff, archive, review notebook)
as a local run directory, and — for S3 — stores runs write-once:

- **Upload.** The files of a finished run directory are uploaded under ``<env>/<run id>/``, then ``manifest.json``
  (every file with size and SHA-256) last, with ``If-None-Match: *``: a reader never sees a half-written run (no
  manifest, no run), and a run is stored once. Each object carries its SHA-256 (``x-amz-checksum-sha256``), which
  S3 checks on receipt.
- **Triggers.** A run started by a trigger (a Kubernetes Job name, a deploy) is identified by the environment, the
  trigger and the deployed version: their digest names a write-once *claim*, ``<env>/triggers/<digest>.json``, which
  fixes the run id (the UTC start of the first attempt). A retried Job reuses that run id, and does nothing once its
  manifest exists — so a retry never stores a second run.
- **Reading.** An S3 run is copied into a private temporary folder ``<tmp>/<env>/<run id>/`` — every object under its
  prefix, nothing dropped, nothing renamed — and checked against its manifest; then the same rules as for a folder
  apply (:mod:`recsys_audit.rundir`, :func:`recsys_audit.signoff.verify_run`): every entry listed, nothing else, the
  run where its record says (environment and run id come from the object keys).
- **Signing.** Signing a run in S3 adds ``signoff.json`` and ``signoff.json.sig`` beside its manifest, write-once; the
  files the audit uploaded stay exactly as they are.

Credentials and endpoint come from the standard AWS chain (environment, config files, web identity, instance
metadata); ``AWS_ENDPOINT_URL_S3`` points the kit at an S3-compatible store.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import recsys_audit
from recsys_audit.rundir import (
    EXPECTED_DIRS,
    MAX_ENTRIES,
    MAX_FILE_BYTES,
    MAX_LISTED,
    RUN_ID,
    SIGNATURE_FILE,
    SIGNOFF_FILE,
    RunDirError,
    env_folder,
    environments_of,
    read_document,
    read_entry,
    runs_of,
)

S3_SCHEME = "s3://"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "recsys-audit-manifest/1"
CLAIM_FORMAT = "recsys-audit-trigger/1"
TRIGGERS_DIR = "triggers"
INDEX_FILE = "index.html"
MAX_MANIFEST_BYTES = 4 << 20
MAX_RUN_BYTES = 1 << 30  # every object of one run together
ENV_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")  # what rundir.env_folder makes of an environment name
_KEY_PART = re.compile(r"^[^\x00-\x1f\x7f/\\]{1,255}$")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".xml": "application/xml",
    ".sarif": "application/sarif+json",
    ".csv": "text/csv; charset=utf-8",
}


class StoreError(Exception):
    """A run store that cannot be read or written; one line naming the location or object and what to do."""


class IncompleteRun(StoreError):
    """A run prefix without a manifest: its upload has not finished (or was killed). Readers skip it."""


class AlreadyStored(StoreError):
    """The write-once object exists already."""


class MissingObject(StoreError):
    """No object at that key."""


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(S3_SCHEME)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- stores ----------------------------------------------------------------------------------------------------


class RunStore(Protocol):
    def describe(self) -> str:
        """The store's location as the user gives it (a folder or s3://bucket/prefix)."""

    def check(self) -> None:
        """StoreError unless the store is there to be read."""

    def environments(self) -> list[str]:
        """Environment folders, by name."""

    def runs(self, env: str) -> list[str]:
        """Run ids of an environment, newest first."""

    def run_location(self, env: str, run: str) -> str:
        """Where a run is, as the user would give it to verify or diff."""

    def local_run(self, env: str, run: str) -> contextlib.AbstractContextManager[Path]:
        """The run as a local run directory ``…/<env>/<run id>/`` (a checked copy for S3), for the with-block."""

    def write_index(self, page: str) -> str:
        """Store the archive's index page; returns where it is."""


class LocalStore:
    """An audits folder: ``<root>/<env>/<run id>/``. Read in place, never through a symlink."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def check(self) -> None:
        if not self.root.is_dir() or self.root.is_symlink():
            raise StoreError(f"{self.root}: no such archive directory — audits are written to audits/<env>/<run id>/")

    def environments(self) -> list[str]:
        return [p.name for p in environments_of(self.root)]

    def runs(self, env: str) -> list[str]:
        return [p.name for p in runs_of(self.root / env)]

    def run_location(self, env: str, run: str) -> str:
        return str(self.root / env / run)

    @contextlib.contextmanager
    def local_run(self, env: str, run: str) -> Iterator[Path]:
        yield self.root / env / run

    def write_index(self, page: str) -> str:
        path = self.root / INDEX_FILE
        path.write_text(page, encoding="utf-8")
        return str(path)


def s3_client() -> Any:
    """An S3 client from the standard AWS chain (``AWS_ENDPOINT_URL_S3`` for S3-compatible stores), with timeouts."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 4, "mode": "standard"})
    return session.client("s3", region_name=session.region_name or "us-east-1", config=config)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _reason(exc: Exception) -> str:
    code = _error_code(exc)
    if code:
        message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
        return f"S3 {code}" + (f" ({message})" if message else "")
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


@dataclass(frozen=True)
class _Object:
    rel: str  # key relative to the run prefix
    size: int


class S3Store:
    """Runs under ``s3://bucket/prefix/<env>/<run id>/``."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> S3Store:
        bucket, _, prefix = url[len(S3_SCHEME) :].partition("/")
        if not bucket:
            raise StoreError(f"{url}: an s3:// location needs a bucket — s3://BUCKET/PREFIX")
        return cls(bucket, prefix)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def describe(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def url(self, *parts: str) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.key(*parts)}"

    def run_location(self, env: str, run: str) -> str:
        return self.url(env, run)

    def check(self) -> None:
        self._call(self.describe(), "head_bucket")

    # -- low-level operations, each turning the client's errors into one line --

    def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = _error_code(exc)
            if code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                raise AlreadyStored(f"{what}: already exists (write-once)") from None
            if code in {"404", "NoSuchKey", "NotFound"}:
                raise MissingObject(f"{what}: no such object") from None
            raise StoreError(f"{what}: {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{what}: {_reason(exc)}") from None

    def _names(self, prefix: str, limit: int = MAX_LISTED) -> list[str]:
        """Names of the 'folders' directly under ``prefix`` (a delimiter listing), at most ``limit``."""
        names: list[str] = []
        token: dict[str, str] = {}
        while len(names) < limit:
            page = self._call(self.url(prefix), "list_objects_v2", Prefix=self.prefix + prefix, Delimiter="/", **token)
            for common in page.get("CommonPrefixes", []):
                names.append(common["Prefix"][len(self.prefix + prefix) :].rstrip("/"))
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": page["NextContinuationToken"]}
        return names[:limit]

    def objects(self, env: str, run: str) -> list[_Object]:
        """Every object under the run's prefix, at most MAX_ENTRIES (more is not a run)."""
        base = self.key(env, run) + "/"
        found: list[_Object] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(self.url(env, run), "list_objects_v2", Prefix=base, **token)
            found += [_Object(item["Key"][len(base) :], int(item["Size"])) for item in page.get("Contents", [])]
            if len(found) > MAX_ENTRIES:
                raise StoreError(f"{self.url(env, run)}: more than {MAX_ENTRIES} objects — not an audit run")
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def read(self, key: str, max_bytes: int) -> bytes:
        what = f"{S3_SCHEME}{self.bucket}/{key}"
        response = self._call(what, "get_object", Key=key)
        body = response["Body"]
        try:
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise StoreError(f"{what}: larger than {max_bytes} bytes — not written by recsys-audit")
        return data

    def exists(self, key: str) -> bool:
        try:
            self._call(f"{S3_SCHEME}{self.bucket}/{key}", "head_object", Key=key)
        except MissingObject:
            return False
        return True

    def put(self, key: str, data: bytes, *, write_once: bool = False, if_match: str | None = None) -> str:
        """Store ``data`` at ``key`` with its SHA-256 for S3 to check; ``write_once``: only if nothing is there
        (``If-None-Match: *``, AlreadyStored otherwise). Returns the ETag."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        conditions: dict[str, str] = {"IfNoneMatch": "*"} if write_once else {}
        if if_match:
            conditions = {"IfMatch": if_match}
        content_type = _CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
        response = self._call(
            f"{S3_SCHEME}{self.bucket}/{key}",
            "put_object",
            Key=key,
            Body=data,
            ContentType=content_type,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
            **conditions,
        )
        return str(response.get("ETag", ""))

    def delete(self, key: str) -> None:
        self._call(f"{S3_SCHEME}{self.bucket}/{key}", "delete_object", Key=key)

    # -- the run store --

    def environments(self) -> list[str]:
        return sorted(name for name in self._names("") if ENV_NAME.match(name) and name not in {".", ".."})

    def runs(self, env: str) -> list[str]:
        return sorted((name for name in self._names(f"{env}/") if RUN_ID.match(name)), reverse=True)

    @contextlib.contextmanager
    def local_run(self, env: str, run: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="recsys-audit-s3-") as folder:
            yield self.copy_run(env, run, Path(folder))

    def copy_run(self, env: str, run: str, into: Path) -> Path:
        """Copy the run into ``into/<env>/<run id>/``, checked against its manifest (StoreError naming the object)."""
        if not ENV_NAME.match(env) or env in {".", ".."} or not RUN_ID.match(run):
            raise StoreError(f"{self.url(env, run)}: not <environment>/<run id> of an audit archive")
        where = self.url(env, run)
        objects = self.objects(env, run)
        if not objects:
            raise StoreError(f"{where}: no such run")
        if MANIFEST_FILE not in {o.rel for o in objects}:
            raise IncompleteRun(f"{where}: no {MANIFEST_FILE} — the upload has not finished (or was interrupted)")
        total = sum(o.size for o in objects)
        if total > MAX_RUN_BYTES:
            raise StoreError(f"{where}: {total} bytes, more than an audit run holds ({MAX_RUN_BYTES})")
        run_dir = Path(into) / env / run
        run_dir.mkdir(parents=True)
        digests: dict[str, tuple[str, int]] = {}
        for obj in sorted(objects, key=lambda o: o.rel):
            digests[obj.rel] = self._copy_object(env, run, obj, run_dir)
        try:
            manifest = parse_manifest(read_entry(run_dir, MANIFEST_FILE, MAX_MANIFEST_BYTES), env, run)
        except (RunDirError, StoreError) as exc:
            raise StoreError(f"{where}: {exc}") from None
        for folder in manifest["directories"]:
            (run_dir / folder).mkdir(exist_ok=True)
        problem = manifest_problem(manifest, digests)
        if problem:
            raise StoreError(f"{where}: {problem}")
        return run_dir

    def _copy_object(self, env: str, run: str, obj: _Object, run_dir: Path) -> tuple[str, int]:
        parts = obj.rel.rstrip("/").split("/")
        if not obj.rel or any(not _KEY_PART.match(p) or p in {".", ".."} for p in parts):
            raise StoreError(f"{self.url(env, run)}/{obj.rel}: not a name a run directory holds")
        target = run_dir.joinpath(*parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if obj.rel.endswith("/"):  # a 'folder' object, as consoles create them
                if obj.size:
                    raise StoreError(f"{self.url(env, run)}/{obj.rel}: a folder object with content")
                target.mkdir(exist_ok=True)
                return "", 0
            data = self.read(self.key(env, run, *parts), MAX_FILE_BYTES)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise StoreError(f"{self.url(env, run)}/{obj.rel}: cannot be copied ({exc.strerror})") from None
        return hashlib.sha256(data).hexdigest(), len(data)

    def write_index(self, page: str) -> str:
        self.put(self.key(INDEX_FILE), page.encode("utf-8"))
        return self.url(INDEX_FILE)


def open_store(location: str | Path) -> LocalStore | S3Store:
    """The run store at a folder or ``s3://bucket/prefix``."""
    if is_remote(location):
        return S3Store.from_url(str(location))
    return LocalStore(Path(location))


# --- manifests -------------------------------------------------------------------------------------------------


def build_manifest(run_dir: Path, **extra: str | None) -> dict[str, Any]:
    """The manifest of a finished run directory: environment, run id, every file with size and SHA-256."""
    from recsys_audit.signoff_record import SignoffError, run_entries

    try:
        document = read_document(run_dir)
        files, directories = run_entries(run_dir)
    except (RunDirError, SignoffError) as exc:
        raise StoreError(f"{run_dir}: {exc}") from None
    files.pop(MANIFEST_FILE, None)
    return {
        "format": MANIFEST_FORMAT,
        "environment": str(document["env"]),
        "run": Path(run_dir).name,
        "kit_version": str(document.get("kit_version", recsys_audit.__version__)),
        "verdict": str(document.get("verdict", "")),
        "uploaded_at": _utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{name: value for name, value in extra.items() if value},
        "files": files,
        "directories": directories,
    }


def parse_manifest(data: bytes, env: str, run: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise StoreError(f"{MANIFEST_FILE}: not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise StoreError(f"{MANIFEST_FILE}: not a {MANIFEST_FORMAT} manifest")
    files, directories = manifest.get("files"), manifest.get("directories")
    if not isinstance(files, dict) or not isinstance(directories, list):
        raise StoreError(f"{MANIFEST_FILE}: fields 'files' and 'directories' are missing")
    if any(not isinstance(d, str) or d not in EXPECTED_DIRS for d in directories):
        raise StoreError(f"{MANIFEST_FILE}: directories: only {', '.join(EXPECTED_DIRS)} belong to a run")
    if manifest.get("run") != run or env_folder(str(manifest.get("environment", ""))) != env:
        raise StoreError(
            f"{MANIFEST_FILE}: the manifest is of {manifest.get('environment')!r} run {manifest.get('run')!r}, "
            f"but it is stored as {env}/{run}"
        )
    return manifest


def manifest_problem(manifest: dict[str, Any], stored: dict[str, tuple[str, int]]) -> str | None:
    """Why the stored objects (relative key -> SHA-256, size) are not the manifest's run, or None. Sign-off files
    come after the manifest and are checked by the signature."""
    files: dict[str, Any] = manifest["files"]
    present = {rel: value for rel, value in stored.items() if not rel.endswith("/")}
    for rel in sorted(set(files) | set(present)):
        if rel in {MANIFEST_FILE, SIGNOFF_FILE, SIGNATURE_FILE}:
            continue
        if rel not in present:
            return f"{rel}: in {MANIFEST_FILE} but not stored"
        if rel not in files:
            return f"{rel}: stored but not in {MANIFEST_FILE} — added after the upload"
        expected = files[rel]
        if not isinstance(expected, dict) or (present[rel][0], present[rel][1]) != (
            expected.get("sha256"),
            expected.get("size"),
        ):
            return f"{rel}: differs from {MANIFEST_FILE} (SHA-256) — replaced after the upload"
    return None


# --- uploading -------------------------------------------------------------------------------------------------


def trigger_digest(env: str, trigger: str, deployed_version: str | None) -> str:
    """The identity of a triggered run: SHA-256 of environment, trigger and deployed version (first 24 hex)."""
    return hashlib.sha256(_canonical([env, trigger, deployed_version or ""])).hexdigest()[:24]


@dataclass(frozen=True)
class Claim:
    run: str  # the run id the trigger's run has
    stored: bool  # its manifest exists: the run is archived already


def claim_run(store: S3Store, env: str, trigger: str, deployed_version: str | None, proposed: str) -> Claim:
    """The run id of (environment, trigger, deployed version): the one an earlier attempt claimed, else
    ``proposed``, claimed now with a write-once object."""
    folder = env_folder(env)
    key = store.key(folder, TRIGGERS_DIR, f"{trigger_digest(env, trigger, deployed_version)}.json")
    claim = {
        "format": CLAIM_FORMAT,
        "environment": env,
        "trigger": trigger,
        "deployed_version": deployed_version or "",
        "run": proposed,
        "claimed_at": _utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        store.put(key, _canonical(claim), write_once=True)
        return Claim(proposed, False)
    except AlreadyStored:
        pass
    try:
        earlier = json.loads(store.read(key, 64 << 10).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StoreError(f"{S3_SCHEME}{store.bucket}/{key}: not a trigger claim — remove it") from None
    same = [earlier.get(k) for k in ("environment", "trigger", "deployed_version")] == [env, trigger, claim[
        "deployed_version"]]  # fmt: skip
    run = earlier.get("run")
    if not same or not isinstance(run, str) or not RUN_ID.match(run):
        raise StoreError(f"{S3_SCHEME}{store.bucket}/{key}: a claim of another trigger or run — remove it")
    return Claim(run, store.exists(store.key(folder, run, MANIFEST_FILE)))


def upload_run(store: S3Store, run_dir: Path, **extra: str | None) -> str:
    """Upload a finished run directory under ``<env>/<run id>/``: files first, the manifest last and write-once.
    Objects an interrupted earlier upload left under the prefix and the run does not have are removed first.
    Returns the run's location; StoreError (the local run directory untouched but for its manifest) otherwise."""
    run_dir = Path(run_dir)
    env, run = run_dir.parent.name, run_dir.name
    if not ENV_NAME.match(env) or not RUN_ID.match(run):
        raise StoreError(f"{run_dir}: not <environment>/<run id> of an audit run")
    names = {p.name for p in run_dir.iterdir()}
    if names & {SIGNOFF_FILE, SIGNATURE_FILE}:
        raise StoreError(
            f"{run_dir}: signed before upload — upload the run unsigned, then sign it where it is stored: "
            f"recsys-audit sign {store.url(env, run)} …"
        )
    manifest = build_manifest(run_dir, **extra)
    if manifest["run"] != run or env_folder(manifest["environment"]) != env:
        raise StoreError(f"{run_dir}: findings.json is of {manifest['environment']!r}, the folder says {env!r}")
    location = store.url(env, run)
    if store.exists(store.key(env, run, MANIFEST_FILE)):
        raise AlreadyStored(f"{location}: already stored (it has a {MANIFEST_FILE})")
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    (run_dir / MANIFEST_FILE).write_bytes(data)
    for leftover in sorted({o.rel for o in store.objects(env, run)} - set(manifest["files"])):
        store.delete(store.key(env, run, leftover))
    for rel in sorted(manifest["files"]):
        try:
            body = read_entry(run_dir, rel, MAX_FILE_BYTES)
        except RunDirError as exc:
            raise StoreError(f"{run_dir}: {exc}") from None
        if hashlib.sha256(body).hexdigest() != manifest["files"][rel]["sha256"]:
            raise StoreError(f"{run_dir}/{rel}: changed during the upload")
        store.put(store.key(env, run, *rel.split("/")), body)
    store.put(store.key(env, run, MANIFEST_FILE), data, write_once=True)
    return location


# --- reading one run, wherever it is ---------------------------------------------------------------------------


def split_run_url(url: str) -> tuple[S3Store, str, str]:
    """``s3://bucket/prefix/<env>/<run id>`` -> (store at the prefix, env, run id)."""
    parts = url[len(S3_SCHEME) :].rstrip("/").split("/")
    if len(parts) < 3 or not parts[0]:
        raise StoreError(f"{url}: expected s3://BUCKET/[PREFIX/]ENV/RUN_ID")
    return S3Store(parts[0], "/".join(parts[1:-2])), parts[-2], parts[-1]


@contextlib.contextmanager
def open_run(location: str | Path) -> Iterator[Path]:
    """A run given as a folder (used in place) or as ``s3://…/<env>/<run id>`` (a checked temporary copy)."""
    if not is_remote(location):
        yield Path(location)
        return
    store, env, run = split_run_url(str(location))
    with store.local_run(env, run) as run_dir:
        yield run_dir


_copies: dict[Path, tuple[S3Store, str, str]] = {}  # local copy -> where it came from (review notebook)
_copies_root: Path | None = None


def local_copy(location: str | Path) -> Path:
    """A run as a local run directory that lasts for the process: the folder itself, or a cached copy of an S3 run
    (the review notebook's widgets work on it; :func:`sign` stores its sign-off where it came from)."""
    global _copies_root
    if not is_remote(location):
        return Path(location)
    store, env, run = split_run_url(str(location))
    for path, origin in _copies.items():
        if origin[0].describe() == store.describe() and origin[1:] == (env, run):
            return path
    if _copies_root is None:
        _copies_root = Path(tempfile.mkdtemp(prefix="recsys-audit-s3-"))
        atexit.register(shutil.rmtree, _copies_root, True)
    run_dir = store.copy_run(env, run, _copies_root / str(len(_copies)))
    _copies[run_dir] = (store, env, run)
    return run_dir


# --- signing a stored run --------------------------------------------------------------------------------------


def sign(location: str | Path, **options: Any) -> dict[str, Any]:
    """Sign a run where it is: a folder (:func:`recsys_audit.signoff.sign_run`), or an S3 run, whose files stay as
    uploaded while ``signoff.json`` and its signature are added beside its manifest, write-once."""
    from recsys_audit.signoff import SignoffError, sign_run

    origin = _copies.get(Path(location)) if not is_remote(location) else None
    if not is_remote(location) and origin is None:
        return sign_run(Path(location), **options)
    if options.get("replace_existing"):
        raise SignoffError("--replace: a sign-off in S3 is write-once; it cannot be replaced")
    try:
        if origin is not None:
            store, env, run = origin
            return _sign_copy(store, env, run, Path(location), options)
        store, env, run = split_run_url(str(location))
        with store.local_run(env, run) as run_dir:
            return _sign_copy(store, env, run, run_dir, options)
    except StoreError as exc:
        raise SignoffError(str(exc)) from None


def _sign_copy(store: S3Store, env: str, run: str, run_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    from recsys_audit.signoff import sign_run

    record = sign_run(run_dir, rewrite_run=False, **options)
    store_signoff(store, env, run, (run_dir / SIGNOFF_FILE).read_bytes(), (run_dir / SIGNATURE_FILE).read_bytes())
    return record


def store_signoff(store: S3Store, env: str, run: str, record: bytes, signature: bytes) -> None:
    """Add the record, then its signature (the sign-off counts once the signature is there), both write-once.
    A record left without a signature by an interrupted sign-off is not a sign-off and may be replaced."""
    record_key, signature_key = store.key(env, run, SIGNOFF_FILE), store.key(env, run, SIGNATURE_FILE)
    if store.exists(signature_key):
        raise AlreadyStored(f"{store.url(env, run)}: already signed ({SIGNATURE_FILE})")
    try:
        store.put(record_key, record, write_once=True)
    except AlreadyStored:
        etag = store._call(store.url(env, run, SIGNOFF_FILE), "head_object", Key=record_key).get("ETag", "")
        store.put(record_key, record, if_match=etag)
    store.put(signature_key, signature, write_once=True)
