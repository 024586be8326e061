"""Subcommands ``sign``, ``verify``, ``keygen``, ``diff`` and ``archive`` of ``recsys-audit``.

Exit codes: 0 success; 1 verification failed; 2 the command could not be carried out (bad input, refused sign-off).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys_audit.signoff import DECISIONS, INTEGRITY_ONLY_NOTE, SignoffError


def _error(command: str, message: str) -> int:
    print(f"recsys-audit {command}: error: {message}", file=sys.stderr)
    return 2


def sign_command(args: argparse.Namespace) -> int:
    from recsys_audit.signoff import attestation_valid, sign_run, signed_on

    try:
        record = sign_run(
            Path(args.run_dir),
            reviewer=args.reviewer,
            role=args.role,
            decision=args.decision,
            key_path=Path(args.key),
            comment=args.comment,
            attest=args.attest,
            params_path=Path(args.params) if args.params else None,
            replace_existing=args.replace,
        )
    except SignoffError as exc:
        return _error("sign", str(exc))
    print(
        f"signed {args.run_dir}: {record['decision']} by {record['reviewer']} ({record['role']}) at "
        f"{record['signed_at']}, key {record['key_fingerprint']}, {len(record['files'])} files"
    )
    for attestation in record["attestations"]:
        if not attestation_valid(attestation, record["attestation_max_age_days"], signed_on(record)):
            print(
                f"warning: attestation of {attestation['check']} dated {attestation['date']} is older than "
                f"{record['attestation_max_age_days']} days — the check stays manual",
                file=sys.stderr,
            )
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from recsys_audit.signoff import verify_run

    result = verify_run(Path(args.run_dir), Path(args.pubkey) if args.pubkey else None)
    if not result.ok:
        print(f"verify FAILED: {args.run_dir}: {result.problem}")
        return 1
    record = result.record or {}
    print(
        f"verified {args.run_dir}: {len(record.get('files', {}))} files, signed by {record.get('reviewer')} "
        f"({record.get('role')}) at {record.get('signed_at')}, decision {record.get('decision')}, "
        f"key {record.get('key_fingerprint')}"
    )
    if result.key_source != "given":
        print(f"note: {INTEGRITY_ONLY_NOTE}")
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    from recsys_audit.signoff import generate_key_pair

    try:
        public_path, fingerprint = generate_key_pair(Path(args.path))
    except (SignoffError, OSError) as exc:
        return _error("keygen", str(exc))
    print(
        f"private key: {args.path} (mode 0600, keep it secret)\npublic key:  {public_path}\nfingerprint: {fingerprint}"
    )
    return 0


def diff_command(args: argparse.Namespace) -> int:
    from recsys_audit.diff import DiffError, diff_runs

    try:
        result = diff_runs(Path(args.old_run), Path(args.new_run))
    except DiffError as exc:
        return _error("diff", str(exc))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return 0


def archive_command(args: argparse.Namespace) -> int:
    from recsys_audit.archive import write_index

    try:
        path, entries = write_index(Path(args.dir), [Path(k) for k in args.pubkey])
    except SignoffError as exc:
        return _error("archive", str(exc))
    failed = [e for e in entries if e.state in {"failed", "unreadable"}]
    print(f"wrote {path}: {len(entries)} audits, {len(failed)} failing verification")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the sign-off subcommands to the ``recsys-audit`` parser."""
    sign = subparsers.add_parser("sign", help="sign an audit run (reviewer, decision, Ed25519 signature)")
    sign.add_argument("run_dir", metavar="RUN_DIR")
    sign.add_argument("--reviewer", required=True, help="who signs (must not be the environment owner)")
    sign.add_argument("--role", required=True, help="the reviewer's role, e.g. 'SRE lead'")
    sign.add_argument("--decision", required=True, choices=DECISIONS)
    sign.add_argument("--key", required=True, help="Ed25519 private key (from 'recsys-audit keygen')")
    sign.add_argument("--comment", default="")
    sign.add_argument(
        "--attest",
        action="append",
        default=[],
        metavar="CHECK_ID=URL@YYYY-MM-DD",
        help="attest a manual check with evidence URL and date (repeatable)",
    )
    sign.add_argument("--params", help="the audit's params file, when findings.json does not name it")
    sign.add_argument("--replace", action="store_true", help="replace an existing sign-off")
    sign.set_defaults(handler=sign_command)

    verify = subparsers.add_parser("verify", help="check a run's signature and every file it covers")
    verify.add_argument("run_dir", metavar="RUN_DIR")
    verify.add_argument("--pubkey", help="the reviewer's public key (without it: integrity only, not identity)")
    verify.set_defaults(handler=verify_command)

    keygen = subparsers.add_parser("keygen", help="create an Ed25519 key pair for signing audits")
    keygen.add_argument("path", nargs="?", default="signing.key", help="private key path; public key: PATH.pub")
    keygen.set_defaults(handler=keygen_command)

    diff = subparsers.add_parser("diff", help="new, resolved and persisting findings between two runs")
    diff.add_argument("old_run", metavar="OLD_RUN")
    diff.add_argument("new_run", metavar="NEW_RUN")
    diff.add_argument("--json", action="store_true", help="print JSON instead of text")
    diff.set_defaults(handler=diff_command)

    archive = subparsers.add_parser("archive", help="write DIR/index.html listing every audit")
    archive.add_argument("dir", metavar="DIR", nargs="?", default="audits")
    archive.add_argument("--pubkey", action="append", default=[], help="a trusted reviewer public key (repeatable)")
    archive.set_defaults(handler=archive_command)


def main(argv: list[str] | None = None) -> int:
    """Run these subcommands on their own (``python -m recsys_audit.signoff_cli``)."""
    parser = argparse.ArgumentParser(prog="recsys-audit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
