"""Subcommands ``sign``, ``verify``, ``keygen``, ``diff`` and ``archive`` of ``recsys-audit``.

Exit codes: 0 success; 1 verification failed (verify: the run is not a valid sign-off by a trusted signer; archive:
at least one signed run fails verification); 2 the command could not be carried out (bad input, refused sign-off).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys_audit.judgement import DECISIONS
from recsys_audit.signoff_record import SignoffError


def _error(command: str, message: str) -> int:
    print(f"recsys-audit {command}: error: {message}", file=sys.stderr)
    return 2


def environment_trust(env_or_params: str) -> Path | None:
    """The allowed_signers file that the params of an environment (``params/ENV.yaml``, or a params file) name.

    Loaded through the params loader without resolving secrets: verifying needs none. None when there are no such
    params or they name no allowed_signers."""
    from recsys_audit.cli import CliError, resolve_params
    from recsys_audit.params import ParamsError, load_params
    from recsys_audit.signoff_record import trusted_signers

    try:
        return trusted_signers(load_params(resolve_params(env_or_params), resolve_secrets=False))
    except (CliError, ParamsError):
        return None


def sign_command(args: argparse.Namespace) -> int:
    from recsys_audit.storage import StoreError, is_remote, sign, split_run_url

    trust = Path(args.allowed_signers) if args.allowed_signers else None
    if trust is None and is_remote(args.run_dir):
        # The run's recorded params name the allowed_signers where the audit ran (e.g. in a pod): use the
        # environment's params here, as verify does.
        try:
            trust = environment_trust(split_run_url(args.run_dir)[1])
        except StoreError as exc:
            return _error("sign", str(exc))
    try:
        record = sign(
            args.run_dir,
            reviewer=args.reviewer,
            role=args.role,
            decision=args.decision,
            key_path=Path(args.key),
            signer=args.signer,
            accept=args.accept,
            comment=args.comment,
            attest=args.attest,
            allowed_signers=trust,
            prompt_at_terminal=sys.stdin.isatty(),
            replace_existing=args.replace,
        )
    except SignoffError as exc:
        return _error("sign", str(exc))
    accepted = f", accepting {' '.join(record['accepted'])}" if record["accepted"] else ""
    print(
        f"signed {args.run_dir}: {record['decision']}{accepted} by {record['reviewer']} ({record['role']}) as "
        f"{record['signer']} at {record['signed_at']}, key {record['key_fingerprint']}, verdict {record['verdict']}, "
        f"{len(record['files'])} files"
    )
    return 0


def verify_command(args: argparse.Namespace) -> int:
    from recsys_audit.signoff_record import Verification, verify_run
    from recsys_audit.storage import StoreError, open_run

    try:
        with open_run(args.run_dir) as run_dir:
            if args.allowed_signers:
                trust: Path | None = Path(args.allowed_signers)
            else:
                trust = environment_trust(args.params or run_dir.absolute().parent.name)
            result = verify_run(run_dir, trust)
    except StoreError as exc:
        result = Verification(False, str(exc).removeprefix(f"{args.run_dir.rstrip('/')}: "))
    if not result.ok:
        print(f"verify FAILED: {args.run_dir}: {result.problem}")
        return 1
    record = result.record or {}
    print(
        f"verified {args.run_dir}: {record.get('environment')} run {record.get('run')}, "
        f"{len(record.get('files', {}))} files, signed by {record.get('reviewer')} ({record.get('role')}) as trusted "
        f"signer {record.get('signer')} at {record.get('signed_at')}, decision {record.get('decision')}, "
        f"key {record.get('key_fingerprint')}"
    )
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    from recsys_audit.signatures import SignatureError, generate_key

    if not args.no_passphrase and not sys.stdin.isatty():
        return _error(
            "keygen", "ssh-keygen asks for the passphrase at a terminal — run it in one, or pass --no-passphrase"
        )
    try:
        key = generate_key(Path(args.path), args.principal, passphrase="" if args.no_passphrase else None)
    except (SignatureError, OSError) as exc:
        return _error("keygen", str(exc))
    print(
        f"private key: {args.path} (mode 0600, keep it secret)\npublic key:  {args.path}.pub\n"
        f"fingerprint: {key.fingerprint}\n"
        f"add this line to the allowed_signers file that verifiers trust:\n{key.allowed_signers_line(args.principal)}"
    )
    return 0


def diff_command(args: argparse.Namespace) -> int:
    from recsys_audit.diff import DiffError, diff_runs
    from recsys_audit.storage import StoreError, open_run

    try:
        with open_run(args.old_run) as old_run, open_run(args.new_run) as new_run:
            result = diff_runs(old_run, new_run)
    except (DiffError, StoreError) as exc:
        return _error("diff", str(exc))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    return 0


def archive_command(args: argparse.Namespace) -> int:
    from recsys_audit.render.archive import write_index

    given = Path(args.allowed_signers) if args.allowed_signers else None
    try:
        path, entries = write_index(args.dir, lambda env: given or environment_trust(env))
    except SignoffError as exc:
        return _error("archive", str(exc))
    failed = [e for e in entries if e.state in {"failed", "unreadable"}]
    print(f"wrote {path}: {len(entries)} audits, {len(failed)} failing verification")
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the sign-off subcommands to the ``recsys-audit`` parser."""
    trust_help = "allowed_signers file of trusted reviewers (default: environment.allowed_signers of the params)"
    sign = subparsers.add_parser("sign", help="sign an audit run (reviewer, decision, SSH signature)")
    sign.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, or s3://BUCKET/PREFIX/ENV/RUN_ID")
    sign.add_argument("--reviewer", required=True, help="who signs (must not be the environment owner)")
    sign.add_argument("--role", required=True, help="the reviewer's role, e.g. 'SRE lead'")
    sign.add_argument("--decision", required=True, choices=DECISIONS)
    sign.add_argument(
        "--accept",
        action="extend",
        nargs="+",
        default=[],
        metavar="ID",
        help="approve-with-exceptions: every failing or erroring finding id the reviewer accepts",
    )
    sign.add_argument(
        "--key", required=True, help="Ed25519 private key file (ssh-keygen format), or KEY.pub of a key in ssh-agent"
    )
    sign.add_argument("--signer", help="your principal in allowed_signers (default: the key's comment)")
    sign.add_argument("--allowed-signers", help=trust_help)
    sign.add_argument("--comment", default="")
    sign.add_argument(
        "--attest",
        action="append",
        default=[],
        metavar="CHECK_ID=URL@YYYY-MM-DD",
        help="attest a manual check with evidence URL and date (repeatable)",
    )
    sign.add_argument("--replace", action="store_true", help="replace an existing sign-off")
    sign.set_defaults(handler=sign_command)

    verify = subparsers.add_parser("verify", help="check a run's sign-off: trusted signer, location, every entry")
    verify.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, or s3://BUCKET/PREFIX/ENV/RUN_ID")
    verify.add_argument("--allowed-signers", help=trust_help)
    verify.add_argument(
        "--params", metavar="ENV_OR_FILE", help="whose allowed_signers to trust (default: the run's environment folder)"
    )
    verify.set_defaults(handler=verify_command)

    keygen = subparsers.add_parser("keygen", help="create an Ed25519 SSH key pair for signing audits (ssh-keygen)")
    keygen.add_argument("path", metavar="PATH", help="private key path; public key: PATH.pub")
    keygen.add_argument("--principal", required=True, help="your name in allowed_signers, e.g. an e-mail address")
    keygen.add_argument("--no-passphrase", action="store_true", help="no passphrase (default: ssh-keygen asks)")
    keygen.set_defaults(handler=keygen_command)

    diff = subparsers.add_parser("diff", help="new, resolved and persisting findings between two runs")
    diff.add_argument("old_run", metavar="OLD_RUN", help="a run folder, or s3://BUCKET/PREFIX/ENV/RUN_ID")
    diff.add_argument("new_run", metavar="NEW_RUN", help="a run folder, or s3://BUCKET/PREFIX/ENV/RUN_ID")
    diff.add_argument("--json", action="store_true", help="print JSON instead of text")
    diff.set_defaults(handler=diff_command)

    archive = subparsers.add_parser("archive", help="write DIR/index.html listing and verifying every audit")
    archive.add_argument(
        "dir", metavar="DIR", nargs="?", default="audits", help="audits folder, or s3://BUCKET/PREFIX (default: audits)"
    )
    archive.add_argument("--allowed-signers", help="allowed_signers for every environment (default: each one's params)")
    archive.set_defaults(handler=archive_command)


def main(argv: list[str] | None = None) -> int:
    """Run these subcommands on their own (``python -m recsys_audit.signoff_cli``)."""
    parser = argparse.ArgumentParser(prog="recsys-audit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
