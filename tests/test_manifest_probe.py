"""Manifest probe: fetch over file://, http:// and s3:// (a real S3-compatible server on loopback), validate
manifest v1, and verify artifacts against their content-hash versions."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from recsys_audit.params import S3Params, Secret
from recsys_audit.probes import ProbeError
from recsys_audit.probes.manifest import (
    ObjectStore,
    artifact_scope,
    manifest_uri,
    uri_scope,
    validate_manifest,
    verify_artifact,
    version_from_uri,
)

TENANT, SURFACE = "demo", "home"


def go_compact(value: Any) -> str:
    """Compact JSON with Go's HTML escaping (what the pipelines hash)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def make_artifact(kind: str, items: list[dict[str, Any]]) -> tuple[str, str]:
    """(version, body as written) for an artifact whose version is the hash of its build-blanked compact JSON."""
    artifact: dict[str, Any] = {"v": 1, "artifact_type": kind, "tenant": TENANT, "surface": SURFACE,
                                "window": {"start": "2026-05-01", "end": "2026-05-08"}, "items": items}  # fmt: skip
    version = hashlib.sha256(go_compact({**artifact, "build": {"built_at": "", "version": ""}}).encode()).hexdigest()
    artifact["build"] = {"built_at": "2026-05-08T02:10:00Z", "version": version}
    return version, json.dumps(artifact, indent=2, ensure_ascii=False)


def manifest_body(uris: dict[str, str], **overrides: Any) -> bytes:
    document = {"v": 1, "tenant": TENANT, "surface": SURFACE, "current": uris, "updated_at": "2026-05-08T02:15:00Z"}
    document.update(overrides)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


# --- validation ----------------------------------------------------------------------------------------------------


def test_valid_manifest_parses() -> None:
    check = validate_manifest(manifest_body({"popularity": "s3://b/demo/home/popularity/x.json"}), TENANT, SURFACE)
    assert check.valid and check.problems == []
    assert check.manifest is not None
    assert check.manifest.updated_at == dt.datetime(2026, 5, 8, 2, 15, tzinfo=dt.UTC)
    assert check.manifest.current == {"popularity": "s3://b/demo/home/popularity/x.json"}


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"v": 2}, "v must be the integer 1"),
        ({"v": True}, "v must be the integer 1"),
        ({"updated_at": "2026-05-08 02:15"}, "updated_at is not an RFC3339"),
        ({"updated_at": "2026-05-08T02:15:00"}, "updated_at is not an RFC3339"),  # no zone
        ({"updated_at": ...}, "missing field 'updated_at'"),
        ({"extra": 1}, "unknown field 'extra'"),
        ({"tenant": "beta"}, "names tenant 'beta', expected 'demo'"),
        ({"surface": "pdp"}, "names surface 'pdp', expected 'home'"),
        ({"current": {"popularity": "ftp://x/y.json"}}, "current.popularity: not a file://"),
        ({"current": {"bogus": "s3://b/k.json"}}, "current.bogus: unknown artifact kind"),
        ({"current": ["s3://b/k.json"]}, "current must be an object"),
    ],
)
def test_invalid_manifests_name_the_field(overrides: dict[str, Any], problem: str) -> None:
    check = validate_manifest(manifest_body({"popularity": "s3://b/k.json"}, **overrides), TENANT, SURFACE)
    assert not check.valid
    assert any(problem in p for p in check.problems), check.problems


def test_not_json() -> None:
    check = validate_manifest(b"<html>oops</html>", TENANT, SURFACE)
    assert check.manifest is None and check.problems[0].startswith("not JSON")


# --- file:// -------------------------------------------------------------------------------------------------------


def write_blob(root: Path, kind: str, items: list[dict[str, Any]]) -> str:
    version, body = make_artifact(kind, items)
    path = root / TENANT / SURFACE / kind / f"{version}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path.as_uri()


def test_file_artifacts_verify_and_tampering_is_caught(tmp_path: Path) -> None:
    # floats as Python writes them, and strings Go would HTML-escape, survive re-serialisation
    items = [{"item_id": "a<b>&c", "score": 0.333333}, {"item_id": "é", "score": 1e-05}, {"item_id": "x", "score": 7}]
    uri = write_blob(tmp_path, "popularity", items)
    store = ObjectStore(file_root=tmp_path)
    good = verify_artifact(store, "popularity", uri, TENANT, SURFACE)
    assert good.exists and good.hash_verified and good.problem is None
    assert good.hash_form == "build fields emptied"
    assert good.version == version_from_uri(uri)

    path = store.local_path(uri)
    path.write_text(path.read_text().replace("0.333333", "0.9"), encoding="utf-8")
    tampered = verify_artifact(store, "popularity", uri, TENANT, SURFACE)
    assert tampered.exists and tampered.hash_verified is False
    assert "content hash does not match" in (tampered.problem or "")

    wrong_kind = verify_artifact(store, "cooc", write_blob(tmp_path, "popularity", items[:1]), TENANT, SURFACE)
    assert "artifact_type 'popularity' != 'cooc'" in (wrong_kind.problem or "")

    missing = verify_artifact(store, "cooc", (tmp_path / "nope" / ("0" * 64 + ".json")).as_uri(), TENANT, SURFACE)
    assert missing.exists is False and missing.row()["hash"] == "not checkable"


def test_file_listing_relative_uris_and_size_limit(tmp_path: Path) -> None:
    folder = tmp_path / "previous" / TENANT / SURFACE
    folder.mkdir(parents=True)
    for stamp in ("2026-05-06T02:15:00Z", "2026-05-07T02:15:00Z"):
        (folder / f"{stamp}.json").write_bytes(manifest_body({}, updated_at=stamp))
    store = ObjectStore(file_root=tmp_path, max_bytes=200)
    listed = store.list_json(f"file://previous/{TENANT}/{SURFACE}/")  # relative to file_root
    assert [Path(store.local_path(u)).name for u in listed] == [
        "2026-05-06T02:15:00Z.json",
        "2026-05-07T02:15:00Z.json",
    ]
    assert validate_manifest(store.fetch(listed[-1]).body, TENANT, SURFACE).valid
    (tmp_path / "big.json").write_bytes(b"[" + b"0," * 200 + b"0]")
    with pytest.raises(ProbeError, match="over 200 bytes"):
        store.fetch("file://big.json")
    with pytest.raises(ProbeError, match="no such file"):
        store.fetch((tmp_path / "absent.json").as_uri())
    with pytest.raises(ProbeError, match="unsupported scheme 'ftp'"):
        store.fetch("ftp://host/x.json")


# --- http:// -------------------------------------------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()
    server.server_close()


def test_http_manifest_and_artifacts(http_root: tuple[str, Path]) -> None:
    base, root = http_root
    version, body = make_artifact("popularity", [{"item_id": "i1", "score": 0.5}])
    (root / f"{version}.json").write_text(body, encoding="utf-8")
    (root / "manifest.json").write_bytes(manifest_body({"popularity": f"{base}/{version}.json"}))
    store = ObjectStore()
    fetched = store.fetch(f"{base}/manifest.json")
    check = validate_manifest(fetched.body, TENANT, SURFACE)
    assert check.valid and fetched.elapsed_ms >= 0
    artifact = verify_artifact(store, "popularity", check.manifest.current["popularity"], TENANT, SURFACE)  # type: ignore[union-attr]
    assert artifact.exists and artifact.hash_verified
    assert store.exists(f"{base}/{version}.json") and not store.exists(f"{base}/missing.json")
    with pytest.raises(ProbeError, match="HTTP 404"):
        store.fetch(f"{base}/missing.json")
    store.close()


# --- s3:// against a real S3-compatible server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ObjectStore, Any, str]]:
    monkeypatch.setenv("RA_TEST_S3_ACCESS", "AKIATESTAUDIT0001")
    monkeypatch.setenv("RA_TEST_S3_SECRET", "secret-for-the-moto-server-only")
    bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
    admin = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                         aws_access_key_id="AKIATESTAUDIT0001", aws_secret_access_key="x")  # fmt: skip
    admin.create_bucket(Bucket=bucket)
    params = S3Params(endpoint=s3_server, region="us-east-1", access_key=Secret("env:RA_TEST_S3_ACCESS"),
                      secret_key=Secret("env:RA_TEST_S3_SECRET"))  # fmt: skip
    store = ObjectStore(params, timeout_s=5)
    yield store, admin, bucket
    store.close()


def test_s3_manifest_artifacts_and_previous(s3_store: tuple[ObjectStore, Any, str]) -> None:
    store, admin, bucket = s3_store
    current = {}
    for kind in ("popularity", "cooc"):
        version, body = make_artifact(kind, [{"item_id": f"{kind}-1", "score": 0.25}])
        key = f"{TENANT}/{SURFACE}/{kind}/{version}.json"
        admin.put_object(Bucket=bucket, Key=key, Body=body.encode())
        current[kind] = f"s3://{bucket}/{key}"
    manifest_key = f"registry/current/{TENANT}/{SURFACE}/manifest.json"
    admin.put_object(Bucket=bucket, Key=manifest_key, Body=manifest_body(current))
    for stamp in ("2026-05-06T02:15:00Z", "2026-05-07T02:15:00Z"):
        admin.put_object(Bucket=bucket, Key=f"registry/previous/{TENANT}/{SURFACE}/{stamp}.json",
                         Body=manifest_body(current, updated_at=stamp))  # fmt: skip
    admin.put_object(Bucket=bucket, Key=f"registry/previous/{TENANT}/{SURFACE}/nested/x.json", Body=b"{}")

    fetched = store.fetch(f"s3://{bucket}/{manifest_key}")
    check = validate_manifest(fetched.body, TENANT, SURFACE)
    assert check.valid
    for kind, uri in check.manifest.current.items():  # type: ignore[union-attr]
        result = verify_artifact(store, kind, uri, TENANT, SURFACE)
        assert result.exists and result.hash_verified, result
    previous = store.list_json(f"s3://{bucket}/registry/previous/{TENANT}/{SURFACE}/")
    assert [u.rsplit("/", 1)[1] for u in previous] == ["2026-05-06T02:15:00Z.json", "2026-05-07T02:15:00Z.json"]

    assert not store.exists(f"s3://{bucket}/{TENANT}/{SURFACE}/popularity/{'0' * 64}.json")
    with pytest.raises(ProbeError, match="S3 NoSuchKey"):
        store.fetch(f"s3://{bucket}/registry/current/{TENANT}/pdp/manifest.json")
    with pytest.raises(ProbeError, match="S3 NoSuchBucket"):
        store.fetch(f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}/m.json")
    missing = verify_artifact(store, "popularity", f"s3://{bucket}/gone/{'a' * 64}.json", TENANT, SURFACE)
    assert missing.exists is False


def test_s3_overwritten_artifact_is_caught(s3_store: tuple[ObjectStore, Any, str]) -> None:
    store, admin, bucket = s3_store
    version, _ = make_artifact("popularity", [{"item_id": "i1", "score": 0.5}])
    _, other = make_artifact("popularity", [{"item_id": "i2", "score": 0.5}])
    key = f"{TENANT}/{SURFACE}/popularity/{version}.json"
    admin.put_object(Bucket=bucket, Key=key, Body=other.encode())  # same name, different content
    result = verify_artifact(store, "popularity", f"s3://{bucket}/{key}", TENANT, SURFACE)
    assert result.exists and result.hash_verified is False
    assert "build.version differs" in (result.problem or "")


def test_s3_store_confined_to_the_params_locations(s3_store: tuple[ObjectStore, Any, str]) -> None:
    unconfined, admin, bucket = s3_store
    template = f"s3://{bucket}/registry/current/{{tenant}}/{{surface}}/manifest.json"
    previous = f"s3://{bucket}/registry/previous/{{tenant}}/{{surface}}/"
    artifacts = artifact_scope(template, None, Path.cwd())
    scopes = [uri_scope(template, Path.cwd()), uri_scope(previous, Path.cwd()), artifacts]
    store = ObjectStore(unconfined._s3_params, timeout_s=5, artifact_scope=artifacts, scopes=scopes)
    version, body = make_artifact("popularity", [{"item_id": "i1", "score": 0.5}])
    admin.put_object(Bucket=bucket, Key=f"{TENANT}/{SURFACE}/popularity/{version}.json", Body=body.encode())
    uris = {"popularity": f"s3://{bucket}/{TENANT}/{SURFACE}/popularity/{version}.json",
            "cooc": f"s3://other-{bucket}/{TENANT}/{SURFACE}/cooc/{version}.json"}  # fmt: skip
    admin.put_object(Bucket=bucket, Key=f"registry/current/{TENANT}/{SURFACE}/manifest.json", Body=manifest_body(uris))
    check = validate_manifest(store.fetch(manifest_uri(template, TENANT, SURFACE)).body, TENANT, SURFACE, store)
    assert check.problems == [f"current.cooc: {uris['cooc']!r} is outside the artifact location the params allow "
                              f"(s3://{bucket}/) — not followed"]  # fmt: skip
    assert verify_artifact(store, "popularity", uris["popularity"], TENANT, SURFACE).hash_verified is True
    assert store.list_json(manifest_uri(previous, TENANT, SURFACE)) == []
    with pytest.raises(ProbeError, match="outside the manifest and artifact locations the params name"):
        store.fetch(uris["cooc"])
    store.close()
