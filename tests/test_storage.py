"""Runs stored in S3 (a real S3 API on loopback): write-once upload with the manifest last, claimed run ids per
trigger, and verify, sign, diff, archive and the review notebook reading ``s3://`` with the same rules as folders."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from run_fixtures import REVIEWER, build_run, make_signer, write_allowed_signers, write_params
from s3_fixtures import aws_environment, keys, new_bucket, s3, s3_endpoint  # noqa: F401  (fixtures)
from test_signoff import STATUSES

from recsys_audit.archive import collect_entries
from recsys_audit.cli import main
from recsys_audit.judgement import ExitCode
from recsys_audit.storage import (
    MANIFEST_FILE,
    S3Store,
    StoreError,
    claim_run,
    open_run,
    trigger_digest,
    upload_run,
)
from recsys_audit.storage_cli import run_into_store

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "99_review.ipynb"
PASSING = {**STATUSES, "auth.cross-tenant-admin": "pass", "db.rls-enabled": "pass"}


class Fleet:
    """Two environments' runs in one bucket: staging twice, production once; one staging run signed."""

    def __init__(self, tmp_path: Path, bucket: str) -> None:
        self.bucket, self.url = bucket, f"s3://{bucket}/fleet"
        self.rita = make_signer(tmp_path / "keys")
        self.trusted = write_allowed_signers(tmp_path / "trusted", self.rita)
        self.params = {
            env: write_params(tmp_path / "params", env, allowed_signers=self.trusted)
            for env in ("staging", "production")
        }
        self.local = tmp_path / "audits"
        self.runs = {
            ("staging", "20250301T100000Z"): build_run(
                self.local, self.params["staging"], "20250301T100000Z", STATUSES
            ),
            ("staging", "20250302T100000Z"): build_run(self.local, self.params["staging"], "20250302T100000Z", PASSING),
            ("production", "20250301T120000Z"): build_run(
                self.local, self.params["production"], "20250301T120000Z", STATUSES
            ),
        }
        for run_dir in self.runs.values():
            assert main(["upload", str(run_dir), self.url]) == 0

    def run_url(self, env: str, run: str) -> str:
        return f"{self.url}/{env}/{run}"

    def sign(self, env: str, run: str, decision: str = "reject") -> int:
        return main(["sign", self.run_url(env, run), "--reviewer", REVIEWER, "--role", "SRE lead",
                     "--decision", decision, "--key", str(self.rita.key)])  # fmt: skip

    def verify(self, env: str, run: str) -> int:
        return main(["verify", self.run_url(env, run), "--allowed-signers", str(self.trusted)])


@pytest.fixture
def fleet(tmp_path: Path, new_bucket: Callable[..., str]) -> Fleet:  # noqa: F811
    return Fleet(tmp_path, new_bucket(locked=True))


# --- upload ----------------------------------------------------------------------------------------------------


def test_upload_stores_every_file_then_the_manifest(fleet: Fleet, s3: Any) -> None:  # noqa: F811
    run_dir = fleet.runs[("staging", "20250301T100000Z")]
    stored = keys(s3, fleet.bucket, "fleet/staging/20250301T100000Z/")
    local = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    assert [k.removeprefix("fleet/staging/20250301T100000Z/") for k in stored] == local
    manifest = json.loads(s3.get_object(Bucket=fleet.bucket, Key=stored[local.index(MANIFEST_FILE)])["Body"].read())
    assert manifest["environment"] == "staging" and manifest["run"] == "20250301T100000Z"
    assert set(manifest["files"]) == set(local) - {MANIFEST_FILE}
    assert manifest["directories"] == ["findings", "notebooks"] and manifest["verdict"] == "fail"
    findings = s3.get_object(Bucket=fleet.bucket, Key=f"{stored[0].rsplit('/', 1)[0]}/findings.json")
    assert findings["ContentType"] == "application/json"


def test_a_second_manifest_is_refused_write_once(fleet: Fleet, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    run_dir = fleet.runs[("staging", "20250301T100000Z")]
    capsys.readouterr()
    assert main(["upload", str(run_dir), fleet.url]) == ExitCode.STORE_FAILED
    assert "already stored (it has a manifest.json)" in capsys.readouterr().err
    # Even a writer that skips the kit's check cannot replace it: S3 refuses the conditional write.
    store = S3Store(fleet.bucket, "fleet")
    with pytest.raises(StoreError, match="already exists \\(write-once\\)"):
        store.put(store.key("staging", "20250301T100000Z", MANIFEST_FILE), b"{}", write_once=True)


def test_a_signed_run_is_not_uploaded(fleet: Fleet, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recsys_audit.signoff import sign_run

    run_dir = build_run(tmp_path / "more", fleet.params["staging"], "20250305T100000Z", STATUSES)
    sign_run(run_dir, reviewer=REVIEWER, role="SRE", decision="reject", key_path=fleet.rita.key)
    assert main(["upload", str(run_dir), fleet.url]) == ExitCode.STORE_FAILED
    assert "signed before upload" in capsys.readouterr().err


def test_a_failed_upload_keeps_the_run_and_says_why(
    tmp_path: Path,
    s3: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = write_params(tmp_path / "params", "staging")

    def audit(paths: list[Path], out_dir: Path, run_ids: dict[str, str]) -> list[Any]:
        from recsys_audit.run import AuditResult

        run_dir = build_run(out_dir, paths[0], "20250301T100000Z", STATUSES)
        return [AuditResult("staging", run_dir, [], 1)]

    code = run_into_store([params], "s3://no-such-bucket-here/fleet", trigger=None, deployed_version=None,
                          work_dir=str(tmp_path / "work"), run=audit, summarise=lambda results: None)  # fmt: skip
    err = capsys.readouterr().err
    assert code == ExitCode.STORE_FAILED == 5
    run_dir = tmp_path / "work" / "staging" / "20250301T100000Z"
    assert "NoSuchBucket" in err and f"the run stays in {run_dir}" in err and "recsys-audit upload" in err
    assert (run_dir / "findings.json").is_file() and (run_dir / "report.html").is_file()


# --- triggers: a retried Job stores no second run --------------------------------------------------------------


def test_a_trigger_claims_one_run_id_and_a_retry_does_not_audit_again(
    tmp_path: Path,
    s3: Any,  # noqa: F811
    new_bucket: Callable[..., str],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = new_bucket()
    url = f"s3://{bucket}/fleet"
    params = write_params(tmp_path / "params", "staging")
    audited: list[dict[str, str]] = []

    def audit(paths: list[Path], out_dir: Path, run_ids: dict[str, str]) -> list[Any]:
        from recsys_audit.run import AuditResult

        audited.append(dict(run_ids))
        run_dir = build_run(out_dir, paths[0], run_ids["staging"], STATUSES)
        return [AuditResult("staging", run_dir, [], 1)]

    def attempt(work: str, trigger: str = "audit-staging-29012345", version: str | None = "1.4.2") -> int:
        return run_into_store([params], url, trigger=trigger, deployed_version=version, work_dir=str(tmp_path / work),
                              run=audit, summarise=lambda results: None)  # fmt: skip

    # An attempt that dies after claiming (before storing anything): the retry reuses the claimed run id.
    store = S3Store(bucket, "fleet")
    claim = claim_run(store, "staging", "audit-staging-29012345", "1.4.2", "20250301T100000Z")
    assert claim.run == "20250301T100000Z" and not claim.stored
    assert attempt("first") == ExitCode.FAILED
    assert audited == [{"staging": "20250301T100000Z"}]
    assert capsys.readouterr().out.strip() == f"{url}/staging/20250301T100000Z"
    # The retry of a stored trigger: not audited again, answers with the stored verdict.
    assert attempt("second") == ExitCode.FAILED
    assert len(audited) == 1 and "is stored already as" in capsys.readouterr().err
    assert store.runs("staging") == ["20250301T100000Z"]
    digest = trigger_digest("staging", "audit-staging-29012345", "1.4.2")
    claim_key = f"fleet/staging/triggers/{digest}.json"
    claimed = json.loads(s3.get_object(Bucket=bucket, Key=claim_key)["Body"].read())
    assert claimed["run"] == "20250301T100000Z" and claimed["deployed_version"] == "1.4.2"
    # Another deployed version is another run.
    assert attempt("third", version="1.4.3") == ExitCode.FAILED
    assert len(audited) == 2 and len(store.runs("staging")) == 2
    assert audited[1]["staging"] != "20250301T100000Z"


def test_stray_objects_of_an_interrupted_upload_are_replaced(
    tmp_path: Path,
    s3: Any,  # noqa: F811
    new_bucket: Callable[..., str],  # noqa: F811
) -> None:
    bucket = new_bucket()
    run_dir = build_run(tmp_path / "audits", write_params(tmp_path / "p", "staging"), "20250301T100000Z", STATUSES)
    prefix = "fleet/staging/20250301T100000Z/"
    s3.put_object(Bucket=bucket, Key=prefix + "notebooks/99_left_over.ipynb", Body=b"{}")
    s3.put_object(Bucket=bucket, Key=prefix + "findings.json", Body=b"half")
    upload_run(S3Store(bucket, "fleet"), run_dir)
    assert prefix + "notebooks/99_left_over.ipynb" not in keys(s3, bucket, prefix)
    with open_run(f"s3://{bucket}/{prefix}") as copy:
        assert (copy / "findings.json").read_bytes() == (run_dir / "findings.json").read_bytes()


# --- reading: verify, sign, diff, archive over s3:// -----------------------------------------------------------


def test_sign_and_verify_a_run_in_s3(fleet: Fleet, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    prefix = "fleet/staging/20250301T100000Z/"
    before = {k: s3.get_object(Bucket=fleet.bucket, Key=k)["Body"].read() for k in keys(s3, fleet.bucket, prefix)}
    assert fleet.sign("staging", "20250301T100000Z") == 0
    assert fleet.verify("staging", "20250301T100000Z") == 0
    out = capsys.readouterr().out
    assert f"verified {fleet.run_url('staging', '20250301T100000Z')}: staging run 20250301T100000Z" in out
    after = keys(s3, fleet.bucket, prefix)
    # The sign-off is added beside the manifest; the uploaded files stay exactly as they were.
    assert sorted(set(after) - set(before)) == [prefix + "signoff.json", prefix + "signoff.json.sig"]
    assert all(s3.get_object(Bucket=fleet.bucket, Key=k)["Body"].read() == data for k, data in before.items())
    record = json.loads(s3.get_object(Bucket=fleet.bucket, Key=prefix + "signoff.json")["Body"].read())
    assert record["verdict"] == "fail" and record["decision"] == "reject" and MANIFEST_FILE in record["files"]
    # Write-once: signing again is refused, and so is replacing.
    assert fleet.sign("staging", "20250301T100000Z") == 2
    assert "already signed" in capsys.readouterr().err
    assert main(["sign", fleet.run_url("staging", "20250301T100000Z"), "--reviewer", REVIEWER, "--role", "SRE",
                 "--decision", "reject", "--key", str(fleet.rita.key), "--replace"]) == 2  # fmt: skip
    assert "write-once" in capsys.readouterr().err
    # approve of a failing run is refused as for a folder.
    assert fleet.sign("staging", "20250302T100000Z", "approve") == 0  # that one passes
    assert fleet.sign("production", "20250301T120000Z", "approve") == 2
    assert "approve" in capsys.readouterr().err


def test_verify_fails_when_any_object_of_a_signed_run_is_replaced(
    fleet: Fleet,
    s3: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fleet.sign("staging", "20250301T100000Z") == 0
    prefix = "fleet/staging/20250301T100000Z/"
    for key in keys(s3, fleet.bucket, prefix):
        original = s3.get_object(Bucket=fleet.bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=fleet.bucket, Key=key, Body=_altered(original), ChecksumAlgorithm="SHA256")
        capsys.readouterr()
        assert fleet.verify("staging", "20250301T100000Z") == 1, key
        out = capsys.readouterr().out
        assert out.startswith("verify FAILED: "), out
        name = key.removeprefix(prefix)
        assert name in out or (name == "signoff.json.sig" and "signature" in out.lower()), (name, out)
        s3.put_object(Bucket=fleet.bucket, Key=key, Body=original, ChecksumAlgorithm="SHA256")
    assert fleet.verify("staging", "20250301T100000Z") == 0


def _altered(data: bytes) -> bytes:
    """``data`` with one letter or digit near the middle changed (a different signature, digest or value)."""
    index = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isalnum())
    return data[:index] + (b"A" if data[index : index + 1] != b"A" else b"B") + data[index + 1 :]


@pytest.mark.parametrize(
    ("key", "body", "message"),
    [
        ("extra.txt", b"x", "extra.txt: stored but not in manifest.json — added after the upload"),
        ("notebooks/nested/x.ipynb", b"{}", "notebooks/nested/x.ipynb: stored but not in manifest.json"),
        ("../production/20250301T120000Z/x", b"x", "not a name a run directory holds"),
        ("notebooks/", b"content", "a folder object with content"),
    ],
)
def test_objects_added_to_a_run_are_named(
    fleet: Fleet,
    s3: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    key: str,
    body: bytes,
    message: str,
) -> None:
    assert fleet.sign("staging", "20250301T100000Z") == 0
    s3.put_object(Bucket=fleet.bucket, Key=f"fleet/staging/20250301T100000Z/{key}", Body=body)
    capsys.readouterr()
    assert fleet.verify("staging", "20250301T100000Z") == 1
    assert message in capsys.readouterr().out


def test_a_run_copied_to_another_place_does_not_verify(
    fleet: Fleet,
    s3: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fleet.sign("staging", "20250301T100000Z") == 0
    for env, run in (("staging", "20250309T100000Z"), ("production", "20250301T100000Z")):
        for key in keys(s3, fleet.bucket, "fleet/staging/20250301T100000Z/"):
            target = key.replace("staging/20250301T100000Z", f"{env}/{run}")
            body = s3.get_object(Bucket=fleet.bucket, Key=key)["Body"].read()
            s3.put_object(Bucket=fleet.bucket, Key=target, Body=body, ChecksumAlgorithm="SHA256")
        capsys.readouterr()
        assert fleet.verify(env, run) == 1
        assert "manifest.json: the manifest is of 'staging' run '20250301T100000Z'" in capsys.readouterr().out


def test_diff_and_archive_over_s3(fleet: Fleet, s3: Any, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert fleet.sign("staging", "20250301T100000Z") == 0
    capsys.readouterr()
    assert main(["diff", fleet.run_url("staging", "20250301T100000Z"), fleet.run_url("staging", "20250302T100000Z"),
                 "--json"]) == 0  # fmt: skip
    diff = json.loads(capsys.readouterr().out)
    assert diff["counts"] == {"new": 0, "resolved": 2, "persisting": 2, "status_changes": 2}
    assert (
        main(["diff", fleet.run_url("staging", "20250301T100000Z"), fleet.run_url("production", "20250301T120000Z")])
        == 2
    )
    assert "compare one environment" in capsys.readouterr().err
    # An upload still in progress (no manifest) is not an audit: the archive does not list it.
    s3.put_object(Bucket=fleet.bucket, Key="fleet/production/20250309T000000Z/findings.json", Body=b"{}")
    assert main(["archive", fleet.url, "--allowed-signers", str(fleet.trusted)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {fleet.url}/index.html: 3 audits, 0 failing verification"
    page = s3.get_object(Bucket=fleet.bucket, Key="fleet/index.html")["Body"].read().decode()
    entries = collect_entries(fleet.url, lambda env: fleet.trusted)
    assert [(e.env, e.run, e.state) for e in entries] == [
        ("production", "20250301T120000Z", "unsigned"),
        ("staging", "20250302T100000Z", "unsigned"),
        ("staging", "20250301T100000Z", "verified"),
    ]
    trend = _TrendRows()
    trend.feed(page)
    # The trend per environment, oldest first: fail, warn, error counts of each run.
    assert trend.rows == [
        ["20250301T120000Z", "fail", "1", "1", "0"],
        ["20250301T100000Z", "fail", "1", "1", "0"],
        ["20250302T100000Z", "pass", "0", "0", "0"],
    ]
    assert page.index("id='env-production'") < page.index("id='env-staging'")
    # a chart for staging's two runs; production's one run is a sentence, not a degenerate chart
    staging = page.split("id='env-staging'", 1)[1]
    assert page.count('<figure class="ra-trend"') == 1 and '<figure class="ra-trend"' in staging
    assert 'alt="Fail, warn and error findings per audit of staging, oldest first: 20250301T100000Z: 1 fail' in staging
    assert "1 audit(s) of production so far (20250301T120000Z: 1 fail, 1 warn, 0 error): a trend needs two." in page
    assert "href='staging/20250301T100000Z/report.html'" in page and "20250309T000000Z" not in page


class _TrendRows(HTMLParser):
    """Cell texts of the trend tables' rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self._in_row = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._in_row = dict(attrs).get("class") == "ra-trend-run"
            if self._in_row:
                self.rows.append([])
        elif tag == "td" and self._in_row:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_object_lock_keeps_what_was_stored(fleet: Fleet, s3: Any) -> None:  # noqa: F811
    key = "fleet/staging/20250301T100000Z/manifest.json"
    head = s3.head_object(Bucket=fleet.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    original = s3.get_object(Bucket=fleet.bucket, Key=key)["Body"].read()
    # A locked version cannot be deleted, so it cannot be replaced: a plain overwrite only adds a newer version…
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=fleet.bucket, Key=key, VersionId=head["VersionId"])
    s3.put_object(Bucket=fleet.bucket, Key=key, Body=b"{}", ChecksumAlgorithm="SHA256")
    assert s3.get_object(Bucket=fleet.bucket, Key=key, VersionId=head["VersionId"])["Body"].read() == original
    # …which verify does not accept.
    assert fleet.verify("staging", "20250301T100000Z") == 1


# --- a killed upload leaves no manifest ------------------------------------------------------------------------


class _HoldingProxy:
    """A TCP proxy to the S3 server that forwards everything until the upload of ``manifest.json`` starts, then
    holds that connection (nothing more reaches S3) and sets ``held``."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held = threading.Event()
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, inspect: bool) -> None:
        seen = b""
        try:
            while data := source.recv(65536):
                seen = (seen + data)[-4096:]
                if inspect and re.search(rb"PUT [^ ]*/manifest\.json", seen):
                    self.held.set()
                    self.closing.wait(30)
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                sock.close()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


@pytest.fixture
def holding_proxy(s3_endpoint: str) -> Iterator[_HoldingProxy]:  # noqa: F811
    proxy = _HoldingProxy(s3_endpoint)
    yield proxy
    proxy.close()


def test_a_killed_upload_leaves_no_manifest_and_no_visible_run(
    tmp_path: Path,
    s3: Any,  # noqa: F811
    s3_endpoint: str,  # noqa: F811
    new_bucket: Callable[..., str],  # noqa: F811
    holding_proxy: _HoldingProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = new_bucket()
    run_dir = build_run(tmp_path / "audits", write_params(tmp_path / "p", "staging"), "20250301T100000Z", STATUSES)
    env = {**os.environ, **aws_environment(s3_endpoint), "AWS_ENDPOINT_URL_S3": holding_proxy.url}
    upload = subprocess.Popen(
        [sys.executable, "-m", "recsys_audit.cli", "upload", str(run_dir), f"s3://{bucket}/fleet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holding_proxy.held.wait(60), "the upload never reached its manifest"
    finally:
        upload.send_signal(signal.SIGKILL)
        upload.wait(10)
    assert upload.returncode == -signal.SIGKILL
    stored = keys(s3, bucket, "fleet/staging/20250301T100000Z/")
    assert "fleet/staging/20250301T100000Z/findings.json" in stored
    assert not any(k.endswith(MANIFEST_FILE) for k in stored)
    # Readers do not see it: verify says why, the archive does not list it.
    assert main(["verify", f"s3://{bucket}/fleet/staging/20250301T100000Z"]) == 1
    assert "no manifest.json — the upload has not finished" in capsys.readouterr().out
    assert collect_entries(f"s3://{bucket}/fleet", lambda env: None) == []
    # The run stayed where it was; uploading it again completes it.
    assert main(["upload", str(run_dir), f"s3://{bucket}/fleet"]) == 0
    assert [e.run for e in collect_entries(f"s3://{bucket}/fleet", lambda env: None)] == ["20250301T100000Z"]


# --- the review notebook reads S3 ------------------------------------------------------------------------------


def test_review_notebook_picks_and_signs_a_run_in_s3(fleet: Fleet, tmp_path: Path) -> None:
    from recsys_audit.widgets import EnvironmentPicker, SignoffForm

    picker = EnvironmentPicker(tmp_path / "params", fleet.url, env="staging")
    assert [value for _, value in picker.run.options] == [
        fleet.run_url("staging", "20250302T100000Z"),
        fleet.run_url("staging", "20250301T100000Z"),
    ]
    picker.select(fleet.run_url("staging", "20250301T100000Z"))
    form = SignoffForm(picker.run_dir)
    form.reviewer.value, form.role.value, form.decision.value = REVIEWER, "SRE", "reject"
    form.key.value = str(fleet.rita.key)
    assert form.submit() is not None, form.result.value
    assert "verified" in form.result.value
    assert fleet.verify("staging", "20250301T100000Z") == 0

    output = tmp_path / "review.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(output),
        parameters={"audits_dir": fleet.url, "env": "staging", "params_dir": str(tmp_path / "params")},
        progress_bar=False,
        cwd=str(tmp_path),
        kernel_name="python3",
    )
    notebook = nbformat.read(output, as_version=4)
    static = "\n".join(
        out.get("data", {}).get("text/html", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert all(out.get("output_type") != "error" for cell in notebook.cells for out in cell.get("outputs", []))
    assert f"Selected run: <code>{fleet.run_url('staging', '20250302T100000Z')}</code>" in static
    assert "auth.cross-tenant-admin" in static
