"""Artifact manifests: fetch (``file://``, ``http(s)://``, ``s3://``), validate against manifest v1, verify artifacts.

Manifest v1 (recsys-pipelines ``manifest.v1.json``): exactly the fields ``v`` (integer 1), ``tenant``, ``surface``,
``current`` (kind -> URI) and ``updated_at`` (RFC3339 with a zone). Artifacts are immutable blobs
``<tenant>/<surface>/<kind>/<version>.json`` whose ``version`` is the SHA-256 hex of the artifact's compact JSON with
its ``build`` block blanked. The exact blanked form depends on the writer, so :func:`artifact_hash_forms` tries a
small fixed set of forms (document key order, Go-style HTML escaping) and reports which one matched.

Everything here only reads: GET/HEAD over HTTP, ``GetObject``/``HeadObject``/``ListObjectsV2`` on S3, file reads.

URIs inside a manifest come from the target and never choose what the auditor reads: an artifact URI must lie in the
artifact location the params allow (:func:`artifact_scope`: the template's bucket, origin or registry folder, or
``manifests.artifact_root``), ``file://`` only when the manifest itself came from a ``file://`` template. One outside
it is a problem of the manifest, and is not read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from recsys_audit.probes import ProbeError, http

if TYPE_CHECKING:
    from recsys_audit.params import S3Params

MANIFEST_FIELDS = ("v", "tenant", "surface", "current", "updated_at")
ARTIFACT_KINDS = ("popularity", "cooc", "implicit", "content_sim", "session_seq")
SCHEMES = ("file", "http", "https", "s3")
DEFAULT_MAX_BYTES = 10_000_000  # RECSYS_ARTIFACT_MAX_BYTES default
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def manifest_uri(template: str, tenant: str, surface: str) -> str:
    return template.replace("{tenant}", tenant).replace("{surface}", surface)


def local_path(uri: str, file_root: Path) -> Path:
    """``file:///abs/path`` -> /abs/path; ``file://rel/path`` -> <file_root>/rel/path."""
    parsed = urlparse(uri)
    path = Path(unquote((parsed.netloc or "") + parsed.path))
    return path if path.is_absolute() else file_root / path


@dataclass(frozen=True)
class UriScope:
    """Where a URI may point: the same scheme, the same host or bucket, under a path prefix (a real folder for
    ``file://``, with ``..`` and symlinks resolved)."""

    scheme: str
    authority: str  # host[:port] (http/https), bucket (s3), "" (file)
    prefix: str

    def contains(self, uri: str, file_root: Path) -> bool:
        try:
            parsed = urlparse(uri)
        except ValueError:
            return False
        scheme = parsed.scheme.lower()
        if scheme != self.scheme:
            return False
        if scheme == "file":
            real = Path(os.path.realpath(local_path(uri, file_root)))
            return real.is_relative_to(self.prefix)
        if parsed.netloc.lower() != self.authority:
            return False
        path = unquote(parsed.path)
        if scheme == "s3":  # keys are literal: no '..' to resolve
            return path.lstrip("/").startswith(self.prefix)
        path = posixpath.normpath(path or "/") + ("/" if path.endswith("/") else "")
        return path.startswith(self.prefix)

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.prefix}/"
        if self.scheme == "s3":
            return f"s3://{self.authority}/{self.prefix}"
        return f"{self.scheme}://{self.authority}{self.prefix}"


def _fixed_part(template: str) -> str:
    """The template up to its first placeholder, cut back to the last '/' (the folder every URI shares)."""
    head = template.split("{", 1)[0]
    return head[: head.rfind("/") + 1] if "/" in head else head


def uri_scope(uri_prefix: str, file_root: Path, *, up: int = 0) -> UriScope:
    """The scope of a URI prefix or template; ``up`` climbs that many folders from its fixed part (file:// only)."""
    fixed = _fixed_part(uri_prefix)
    parsed = urlparse(fixed)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        folder = Path(os.path.realpath(local_path(fixed, file_root)))
        for _ in range(up):
            folder = folder.parent
        return UriScope("file", "", str(folder))
    path = unquote(parsed.path) if scheme == "s3" else posixpath.normpath(unquote(parsed.path) or "/")
    if scheme != "s3" and not path.endswith("/"):
        path += "/"
    return UriScope(scheme, parsed.netloc.lower(), path.lstrip("/") if scheme == "s3" else path)


def artifact_scope(template: str, artifact_root: str | None, file_root: Path) -> UriScope:
    """Where the artifacts named by manifests of ``template`` may be: ``artifact_root`` if given, else the
    template's bucket (s3), origin (http/https) or registry folder (file: the parent of its fixed folder, as in
    ``<registry>/current/{tenant}/{surface}/manifest.json``). ``file://`` only for a ``file://`` template."""
    template_scheme = urlparse(template).scheme.lower()
    if artifact_root:
        scope = uri_scope(artifact_root.rstrip("/") + "/", file_root)
        if scope.scheme == "file" and template_scheme != "file":
            raise ProbeError("manifests.artifact_root: file:// artifacts are allowed only with a file:// template")
        return scope
    scope = uri_scope(template, file_root, up=1)
    if scope.scheme == "file":
        return scope
    return UriScope(scope.scheme, scope.authority, "" if scope.scheme == "s3" else "/")


# --- fetching ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    uri: str
    body: bytes
    elapsed_ms: float


class ObjectStore:
    """Read-only access to the three URI schemes the manifests use."""

    def __init__(
        self,
        s3: S3Params | None = None,
        *,
        file_root: Path | None = None,
        timeout_s: float = 5.0,
        verify: ssl.SSLContext | bool = True,
        max_bytes: int = DEFAULT_MAX_BYTES,
        scopes: list[UriScope] | None = None,
        artifact_scope: UriScope | None = None,
    ) -> None:
        """``scopes``: the only places this store reads (None: anywhere, for direct use); ``artifact_scope``: where
        the artifacts a manifest names may be."""
        self._s3_params = s3
        self.file_root = file_root or Path.cwd()
        self.timeout_s = timeout_s
        self.cap = http.Cap(http.MANIFEST.what, max_bytes)
        self.max_bytes = max_bytes
        self.scopes = scopes
        self.artifact_scope = artifact_scope
        self._http = http.client(timeout_s=timeout_s, verify=verify)
        self._s3_client: Any = None

    def close(self) -> None:
        self._http.close()

    def local_path(self, uri: str) -> Path:
        return local_path(uri, self.file_root)

    def allows(self, uri: str) -> bool:
        return self.scopes is None or any(scope.contains(uri, self.file_root) for scope in self.scopes)

    def artifact_allowed(self, uri: str) -> bool:
        return self.artifact_scope is None or self.artifact_scope.contains(uri, self.file_root)

    def _refuse_outside(self, uri: str) -> None:
        if not self.allows(uri):
            places = ", ".join(str(scope) for scope in self.scopes or [])
            raise ProbeError(f"{uri[:200]}: outside the manifest and artifact locations the params name ({places})"
                             " — not read")  # fmt: skip

    def _s3(self) -> Any:
        if self._s3_client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            params = self._s3_params
            keys: dict[str, str] = {}
            if params is not None and params.access_key is not None and params.secret_key is not None:
                keys = {
                    "aws_access_key_id": params.access_key.reveal(),
                    "aws_secret_access_key": params.secret_key.reveal(),
                }
            session = boto3.session.Session()
            unsigned = not keys and session.get_credentials() is None
            config = Config(
                connect_timeout=self.timeout_s,
                read_timeout=self.timeout_s,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path"},
                signature_version=UNSIGNED if unsigned else None,
            )
            self._s3_client = session.client(
                "s3",
                endpoint_url=params.endpoint if params else None,
                region_name=(params.region if params else None) or "us-east-1",
                config=config,
                **keys,
            )
        return self._s3_client

    @staticmethod
    def _bucket_key(uri: str) -> tuple[str, str]:
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise ProbeError(f"{uri}: an s3:// URI needs a bucket (s3://bucket/key)")
        return parsed.netloc, unquote(parsed.path.lstrip("/"))

    def _s3_error(self, uri: str, exc: Exception) -> ProbeError:
        """The S3 error code, or the kind of failure in the kit's words (botocore's text may quote the request)."""
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        name = type(exc).__name__
        if code:
            reason = f"S3 {str(code)[:40]}"
        elif "Timeout" in name:
            reason = "S3 endpoint: no answer in time"
        elif "Connect" in name or "Endpoint" in name:
            reason = "S3 endpoint unreachable"
        elif "Credential" in name:
            reason = "no usable S3 credentials"
        elif "SSL" in name:
            reason = "S3 endpoint: TLS failed"
        else:
            reason = f"S3 client error ({name})"
        return ProbeError(f"GET {uri}: {reason}")

    def fetch(self, uri: str) -> Fetched:
        """The object's bytes (at most ``max_bytes``); ProbeError with a one-line reason otherwise."""
        self._refuse_outside(uri)
        scheme = urlparse(uri).scheme
        started = time.perf_counter()
        too_big = f"{uri}: {self.cap.what} over {self.cap}"
        if scheme == "file":
            path = self.local_path(uri)
            try:
                size = path.stat().st_size
                if size > self.max_bytes:
                    raise ProbeError(f"{too_big} ({size:,} bytes)")
                with path.open("rb") as handle:
                    body = handle.read(self.max_bytes + 1)
            except FileNotFoundError:
                raise ProbeError(f"{uri}: no such file") from None
            except OSError as exc:
                raise ProbeError(f"{uri}: cannot read ({exc.strerror or type(exc).__name__})") from None
        elif scheme in {"http", "https"}:
            answer = http.fetch(self._http, "GET", uri, cap=self.cap, deadline_s=self.timeout_s)
            if answer.status != 200:
                raise ProbeError(f"GET {uri}: HTTP {answer.status}")
            body = answer.body
        elif scheme == "s3":
            from botocore.exceptions import BotoCoreError, ClientError

            bucket, key = self._bucket_key(uri)
            try:
                answer = self._s3().get_object(Bucket=bucket, Key=key)
                if answer.get("ContentLength", 0) > self.max_bytes:
                    answer["Body"].close()
                    raise ProbeError(f"{too_big} ({answer['ContentLength']:,} bytes)")
                body = answer["Body"].read(self.max_bytes + 1)
                answer["Body"].close()
            except (BotoCoreError, ClientError) as exc:
                raise self._s3_error(uri, exc) from None
        else:
            raise ProbeError(f"{uri}: unsupported scheme {scheme!r} (use file://, http(s):// or s3://)")
        if len(body) > self.max_bytes:
            raise ProbeError(too_big)
        return Fetched(uri, body, round((time.perf_counter() - started) * 1000, 1))

    def exists(self, uri: str) -> bool:
        """Whether the object exists (HEAD / HeadObject / stat); ProbeError when the store cannot answer."""
        self._refuse_outside(uri)
        scheme = urlparse(uri).scheme
        if scheme == "file":
            return self.local_path(uri).is_file()
        if scheme in {"http", "https"}:
            status = http.fetch(self._http, "HEAD", uri, cap=self.cap, deadline_s=self.timeout_s).status
            if status in {404, 410}:
                return False
            if status >= 400:
                raise ProbeError(f"HEAD {uri}: HTTP {status}")
            return True
        if scheme == "s3":
            from botocore.exceptions import BotoCoreError, ClientError

            bucket, key = self._bucket_key(uri)
            try:
                self._s3().head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return False
                raise self._s3_error(uri, exc) from None
            except BotoCoreError as exc:
                raise self._s3_error(uri, exc) from None
        raise ProbeError(f"{uri}: unsupported scheme {scheme!r}")

    def list_json(self, prefix_uri: str, limit: int = 1000) -> list[str]:
        """URIs of the ``*.json`` objects directly under a folder (file://) or prefix (s3://), sorted by name."""
        self._refuse_outside(prefix_uri)
        scheme = urlparse(prefix_uri).scheme
        if scheme == "file":
            folder = self.local_path(prefix_uri)
            if not folder.is_dir():
                return []
            return [path.resolve().as_uri() for path in sorted(folder.glob("*.json"))[:limit]]
        if scheme == "s3":
            from botocore.exceptions import BotoCoreError, ClientError

            bucket, prefix = self._bucket_key(prefix_uri)
            try:
                answer = self._s3().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=limit)
            except (BotoCoreError, ClientError) as exc:
                raise self._s3_error(prefix_uri, exc) from None
            keys = [item["Key"] for item in answer.get("Contents", []) if item["Key"].endswith(".json")]
            return [f"s3://{bucket}/{key}" for key in sorted(keys) if "/" not in key[len(prefix) :]]
        raise ProbeError(f"{prefix_uri}: listing is supported for file:// and s3:// only — name one manifest instead")


# --- manifest v1 -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    tenant: str
    surface: str
    current: dict[str, str]
    updated_at: dt.datetime

    def age_s(self, now: dt.datetime | None = None) -> float:
        return ((now or dt.datetime.now(dt.UTC)) - self.updated_at).total_seconds()


@dataclass
class ManifestCheck:
    """A manifest body judged against manifest v1 and the requested tenant/surface."""

    manifest: Manifest | None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.manifest is not None and not self.problems


def parse_rfc3339(text: str) -> dt.datetime | None:
    if not isinstance(text, str) or not _RFC3339.match(text):
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None


def validate_manifest(
    body: bytes, tenant: str | None = None, surface: str | None = None, store: ObjectStore | None = None
) -> ManifestCheck:
    """Validate a manifest body; problems are short sentences naming the field. With a ``store``, an artifact URI
    outside its artifact location is a problem too (such a manifest steers reads the params did not ask for)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return ManifestCheck(None, [f"not JSON ({exc.msg if hasattr(exc, 'msg') else exc})"])
    if not isinstance(doc, dict):
        return ManifestCheck(None, [f"expected a JSON object, found {type(doc).__name__}"])
    problems = [f"unknown field {name!r}" for name in doc if name not in MANIFEST_FIELDS]
    problems += [f"missing field {name!r}" for name in MANIFEST_FIELDS if name not in doc]
    version = doc.get("v")
    if "v" in doc and (type(version) is not int or version != 1):
        problems.append(f"v must be the integer 1, found {version!r}")
    for name in ("tenant", "surface"):
        if name in doc and (not isinstance(doc[name], str) or not doc[name]):
            problems.append(f"{name} must be a non-empty string")
    current = doc.get("current")
    if "current" in doc:
        if not isinstance(current, dict):
            problems.append("current must be an object of kind -> URI")
            current = {}
        for kind, uri in current.items():
            if kind not in ARTIFACT_KINDS:
                problems.append(f"current.{kind}: unknown artifact kind (known: {', '.join(ARTIFACT_KINDS)})")
            if not isinstance(uri, str) or urlparse(uri).scheme not in SCHEMES:
                problems.append(f"current.{kind}: not a file://, http(s):// or s3:// URI")
            elif store is not None and not store.artifact_allowed(uri):
                problems.append(
                    f"current.{kind}: {uri[:160]!r} is outside the artifact location the params allow "
                    f"({store.artifact_scope}) — not followed"
                )
    updated_at = parse_rfc3339(doc.get("updated_at")) if "updated_at" in doc else None
    if "updated_at" in doc and updated_at is None:
        problems.append(f"updated_at is not an RFC3339 timestamp with a zone: {str(doc.get('updated_at'))[:40]!r}")
    if tenant is not None and isinstance(doc.get("tenant"), str) and doc["tenant"] != tenant:
        problems.append(f"names tenant {doc['tenant']!r}, expected {tenant!r}")
    if surface is not None and isinstance(doc.get("surface"), str) and doc["surface"] != surface:
        problems.append(f"names surface {doc['surface']!r}, expected {surface!r}")
    manifest = None
    if updated_at is not None and isinstance(current, dict):
        uris = {str(k): v for k, v in current.items() if isinstance(v, str)}
        manifest = Manifest(str(doc.get("tenant", "")), str(doc.get("surface", "")), uris, updated_at)
    return ManifestCheck(manifest, problems)


# --- artifact versions -------------------------------------------------------------------------------------------


class _RawNumber(str):
    """A JSON number kept as written, so re-serialising reproduces the writer's formatting."""


def _go_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        encoded = encoded.replace(char, escape)
    return encoded.replace("\u2029", "\\u2029")


def compact_json(value: Any, sort_keys: bool = False) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML-escaped strings, numbers as written)."""
    if isinstance(value, _RawNumber):
        return str(value)
    if isinstance(value, str):
        return _go_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        items = sorted(value.items()) if sort_keys else value.items()
        return "{" + ",".join(_go_string(k) + ":" + compact_json(v, sort_keys) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(compact_json(v, sort_keys) for v in value) + "]"
    return json.dumps(value)


def _blanked_builds(build: Any) -> Iterator[tuple[str, Any]]:
    yield "build fields emptied", {k: "" for k in build if k != "source_hash"} if isinstance(build, dict) else {}
    if isinstance(build, dict):
        yield "build fields emptied (all kept)", dict.fromkeys(build, "")
        yield "build zero (Go time)", {"built_at": "0001-01-01T00:00:00Z", "version": ""}
    yield "build empty object", {}
    yield "build null", None
    yield "build removed", ...


def artifact_hash_forms(body: bytes) -> Iterator[tuple[str, str]]:
    """(form, sha256 hex) for each accepted canonical form of an artifact body."""
    doc = json.loads(body, parse_float=_RawNumber, parse_int=_RawNumber)
    if not isinstance(doc, dict):
        raise ValueError("artifact is not a JSON object")
    for label, build in _blanked_builds(doc.get("build")):
        blanked = {k: v for k, v in doc.items() if k != "build"} if build is ... else {**doc, "build": build}
        for sort_keys in (False, True):
            text = compact_json(blanked, sort_keys)
            yield f"{label}{', sorted keys' if sort_keys else ''}", hashlib.sha256(text.encode()).hexdigest()


def version_from_uri(uri: str) -> str | None:
    """The content version an artifact URI names (``…/<version>.json``), when it is a SHA-256 hex."""
    stem = Path(urlparse(uri).path).name.removesuffix(".json")
    return stem if _HEX64.match(stem) else None


@dataclass
class ArtifactCheck:
    kind: str
    uri: str
    exists: bool | None  # None: the store could not say
    version: str | None = None
    hash_verified: bool | None = None  # None: cannot be checked (no hash-like version)
    hash_form: str | None = None
    problem: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "uri": self.uri,
            "exists": self.exists,
            "version": (self.version[:12] + "…") if self.version else None,
            "hash": {True: "match", False: "MISMATCH", None: "not checkable"}[self.hash_verified],
            "form": self.hash_form,
            "problem": self.problem,
        }


def verify_artifact(store: ObjectStore, kind: str, uri: str, tenant: str, surface: str) -> ArtifactCheck:
    """Fetch one artifact and check that it exists, names tenant/surface/kind, and hashes to its version."""
    version = version_from_uri(uri)
    if not store.artifact_allowed(uri):
        problem = f"not read: outside the artifact location the params allow ({store.artifact_scope})"
        return ArtifactCheck(kind, uri, exists=False, version=version, problem=problem)
    try:
        fetched = store.fetch(uri)
    except ProbeError as exc:
        missing = any(marker in str(exc) for marker in ("no such file", "NoSuchKey", "S3 404", "HTTP 404", "HTTP 410"))
        return ArtifactCheck(kind, uri, exists=False if missing else None, version=version, problem=str(exc))
    check = ArtifactCheck(kind, uri, exists=True, version=version)
    try:
        doc = json.loads(fetched.body)
        forms = dict(artifact_hash_forms(fetched.body))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        check.problem = f"artifact is not a JSON object ({str(exc)[:80]})"
        check.hash_verified = False if version else None
        return check
    problems = []
    for name, expected in (("tenant", tenant), ("surface", surface), ("artifact_type", kind)):
        if name in doc and doc[name] != expected:
            problems.append(f"{name} {doc[name]!r} != {expected!r}")
    build_version = (doc.get("build") or {}).get("version") if isinstance(doc.get("build"), dict) else None
    if version and build_version and build_version != version:
        problems.append("build.version differs from the URI version")
    if version:
        match = next((form for form, digest in forms.items() if digest == version), None)
        check.hash_verified = match is not None
        check.hash_form = match
        if match is None:
            problems.append("content hash does not match the version")
    check.problem = "; ".join(problems) or None
    return check
