"""``recsys-audit``: run audits, list the checks, validate params; other command groups plug in via ``register``.

Exit codes of ``run`` (see recsys_audit.judgement): 0 pass, 1 fail, 2 bad params or usage, 3 incomplete, 4 partial,
5 not stored (``--out s3://…``, see recsys_audit.storage_cli); with several environments, the one highest in
precedence: incomplete > fail > partial > pass.
Every error is one clear message on stderr — never a traceback (set RECSYS_AUDIT_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import difflib
import importlib
import json
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from recsys_audit import outputs
from recsys_audit.findings import Severity, Status
from recsys_audit.judgement import ExitCode, counts_by_status, overall_exit_code
from recsys_audit.params import SANDBOX_FOLDER, ParamsError
from recsys_audit.redaction import redact_text
from recsys_audit.storage_cli import add_run_options

if TYPE_CHECKING:
    from recsys_audit.catalog import Section
    from recsys_audit.run import AuditResult

PLUGIN_MODULES = ("recsys_audit.sandbox.cli", "recsys_audit.signoff_cli", "recsys_audit.storage_cli")
REPO_DIR = Path(__file__).resolve().parent.parent


class CliError(Exception):
    """A usage problem reported as one line, exit code 2."""


def _error(message: str) -> None:
    print(f"recsys-audit: {redact_text(message)}", file=sys.stderr)


# --- argument helpers ------------------------------------------------------------------------------------------


def _section_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected section numbers like 0,3 — got {text!r}") from None


def _severity(text: str) -> Severity:
    try:
        return Severity(text.lower())
    except ValueError:
        choices = ", ".join(str(s) for s in Severity)
        raise argparse.ArgumentTypeError(f"unknown severity {text!r} — choose one of {choices}") from None


def resolve_params(env_or_path: str) -> Path:
    """A params file path as given, else the params of environment ``NAME``: ``params/NAME.yaml``, then the sandbox
    instance's ``.sandbox/NAME/params.yaml`` (where ``sandbox up --name NAME`` writes it) — in the current directory,
    then in the repository."""
    given = Path(env_or_path)
    if given.suffix in {".yaml", ".yml"} or given.is_file() or os.sep in env_or_path:
        return given
    folders = list(dict.fromkeys([Path.cwd().resolve(), REPO_DIR]))
    places = [Path("params") / f"{env_or_path}.yaml", Path(SANDBOX_FOLDER) / env_or_path / "params.yaml"]
    for folder in folders:
        for place in places:
            if (folder / place).is_file():
                return folder / place
    known = [path.stem for folder in folders for path in (folder / "params").glob("*.yaml")]
    known += [path.parent.name for folder in folders for path in (folder / SANDBOX_FOLDER).glob("*/params.yaml")]
    close = difflib.get_close_matches(env_or_path, sorted(set(known)), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise CliError(
        f"no params for environment {env_or_path!r}: looked for {' and '.join(map(str, places))} in "
        f"{' and '.join(map(str, folders))} — {hint}create it from params/production.example.yaml, start a sandbox "
        "instance of that name (recsys-audit sandbox up --name NAME), or pass a file path"
    )


def _load_catalog(module: str | None) -> list[Section] | None:
    """A custom catalog: a module exposing ``SECTIONS`` (a list of catalog.Section); None means the built-in one."""
    if not module:
        return None
    try:
        sections = importlib.import_module(module).SECTIONS
    except ImportError as exc:
        raise CliError(f"--catalog {module}: cannot import it ({exc}) — check the module name and PYTHONPATH") from None
    except AttributeError:
        raise CliError(f"--catalog {module}: the module has no SECTIONS list — define SECTIONS = [...]") from None
    return list(sections)


# --- commands --------------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from functools import partial

    from recsys_audit.run import run_many
    from recsys_audit.storage import is_remote

    paths = [resolve_params(item) for item in args.envs]
    run = partial(
        run_many,
        sections=args.sections,
        jobs=args.jobs,
        fresh_kernels=args.fresh_kernels,
        timeout_s=args.timeout,
        notebooks_dir=Path(args.notebooks) if args.notebooks else None,
        fail_on=args.fail_on,
        progress=not args.quiet,
        catalog=_load_catalog(args.catalog),
        formats=_chosen_formats(args.format),
    )
    if is_remote(args.out):
        from recsys_audit.storage_cli import run_into_store

        return run_into_store(
            paths,
            args.out,
            trigger=args.trigger,
            deployed_version=args.deployed_version,
            work_dir=args.work_dir,
            run=run,
            summarise=lambda results: _summarise(results, args.quiet, paths=False),
        )
    if args.trigger or args.deployed_version or args.work_dir:
        raise CliError("--trigger, --deployed-version and --work-dir are for runs stored in S3: add --out s3://…")
    results = run(paths, out_dir=Path(args.out))
    _summarise(results, args.quiet)
    return int(overall_exit_code(result.exit_code for result in results))


def _summarise(results: Sequence[AuditResult], quiet: bool, paths: bool = True) -> None:
    """Per environment on stderr: the verdict line, the unreachable endpoints (one root-cause line) and the failing
    and erroring check ids by severity; the report paths on stdout."""
    for result in results:
        if not quiet:
            print("\n".join(closing_lines(result)), file=sys.stderr)
        if paths:
            print(result.report_path)


def closing_lines(result: AuditResult, width: int = 120) -> list[str]:
    """The closing summary of one environment's audit."""
    counts = counts_by_status(result.findings)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()) if n)
    line = f"{result.env}: {result.verdict} (exit {result.exit_code}; {summary}; score {result.score_text})"
    if result.not_evaluated:
        line += f" — not evaluated: {result.not_evaluated}"
    lines = [line]
    if result.root_cause:
        lines.append(f"  {result.root_cause}")
    groups: dict[tuple[str, str], list[str]] = {}
    for finding in sorted(result.findings, key=lambda f: (f.severity.rank, f.id)):
        if finding.waived:
            groups.setdefault(("waived", ""), []).append(finding.id)
        elif finding.status in {Status.FAIL, Status.ERROR}:
            groups.setdefault((str(finding.status), str(finding.severity)), []).append(finding.id)
    order = {"fail": 0, "error": 1, "waived": 2}
    for (status, severity), ids in sorted(groups.items(), key=lambda item: order[item[0][0]]):
        head = f"  {status:<6} {severity:<8}  "
        lines += textwrap.wrap(
            ", ".join(ids),
            width,
            initial_indent=head,
            subsequent_indent=" " * len(head),
            break_on_hyphens=False,
            break_long_words=False,
        )
    return lines


def cmd_checks(args: argparse.Namespace) -> int:
    from recsys_audit import catalog, checklist

    every_section = _load_catalog(args.catalog) or catalog.sections()
    sections = [s for s in every_section if args.section is None or s.number == args.section]
    if not sections:
        raise CliError(f"--section {args.section}: no such section")
    checks = [check for section in every_section for check in section.checks.values()]
    matrix = [row for row in checklist.coverage(checks) if args.section is None or row["section"] == args.section]
    if args.json:
        document = {
            "sections": [
                {
                    "number": s.number,
                    "title": s.title,
                    "notebook": s.notebook,
                    "checks": [c.metadata() for c in s.checks.values()],
                }
                for s in sections
            ],
            "checklist": matrix,
        }
        print(json.dumps(document, indent=2))
        return 0
    for section in sections:
        print(f"[{section.number}] {section.title}  ({section.notebook}.ipynb, {len(section.checks)} checks)")
        for check in section.checks.values():
            print(f"  {check.id:<40} {check.severity!s:<9} {check.evidence!s:<9} {check.title}")
    print("\nChecklist coverage (item → checks, evidence class):")
    for row in matrix:
        print(f"  {row['id']:<34} {row['text']}")
        for covering in row["checks"]:
            print(f"      {covering['id']:<40} {covering['evidence']}")
        if row["covered_by_children"]:
            print(f"      (through its sub-items: {', '.join(row['covered_by_children'])})")
        if not row["checks"] and not row["covered_by_children"]:
            print("      NOT COVERED")
    return 0


def cmd_params_check(args: argparse.Namespace) -> int:
    """Validate a params file, then its waivers and attestations against the catalog: unknown check ids are errors
    (exit 2, nearest id suggested); expired waivers and attestations too old to count are warnings (exit 0)."""
    import datetime as dt

    from recsys_audit import catalog
    from recsys_audit.judgement import review_params
    from recsys_audit.params import load_params

    path = resolve_params(args.file)
    params = load_params(path)
    sections = _load_catalog(args.catalog) or catalog.sections()
    known = {check for section in sections for check in section.checks}
    errors, warnings = review_params(params, known, dt.datetime.now(dt.UTC).date())
    for warning in warnings:
        print(f"recsys-audit: warning: {path}: {warning}", file=sys.stderr)
    if errors:
        raise ParamsError("\n".join(f"{path}: {error}" for error in errors))
    print(
        f"{path}: ok — environment {params.environment.name}, target {params.target.base_url}, "
        f"{len(params.waivers)} waiver(s), {len(params.attestations)} attestation(s), {len(warnings)} warning(s)"
    )
    return 0


def cmd_params_schema(args: argparse.Namespace) -> int:
    from recsys_audit.params_docs import json_schema_text

    sys.stdout.write(json_schema_text())
    return 0


def cmd_params_docs(args: argparse.Namespace) -> int:
    from recsys_audit.params_docs import markdown

    sys.stdout.write(markdown())
    return 0


def _formats(text: str) -> list[str]:
    try:
        return outputs.parse_formats(text)
    except outputs.UnknownFormat as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _chosen_formats(values: list[list[str]] | None) -> list[str]:
    """The formats of every ``--format`` given, in the registry's order; the defaults when none is given."""
    if not values:
        return list(outputs.DEFAULT_FORMATS)
    chosen = {name for value in values for name in value}
    return [name for name in outputs.OUTPUTS if name in chosen]


# --- parser ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys-audit",
        description="Production-readiness audits of recsys-service deployments.",
        epilog="exit codes of run: 0 pass, 1 fail (unwaived failure at or above --fail-on), 2 bad params or usage, "
        "3 incomplete (a notebook failed or a check was not evaluated), 4 partial (--sections left sections out), "
        "5 the audit ran but could not be stored (--out s3://…); precedence 5 > 3 > 1 > 4 > 0. "
        "verify: 0 valid sign-off by a trusted signer, 1 otherwise.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="audit one or more environments")
    run.add_argument("envs", nargs="+", metavar="ENV_OR_PATH", help="environment name (params/ENV.yaml) or file")
    run.add_argument("--sections", type=_section_list, help="only these sections, e.g. 0,3")
    run.add_argument("--jobs", type=int, help="kernels running notebooks at once (default: one per core)")
    run.add_argument(
        "--fresh-kernels",
        action="store_true",
        help="a new kernel for every notebook instead of a warm pool (slower; same findings)",
    )
    run.add_argument("--timeout", type=float, default=300, help="seconds per notebook (default 300)")
    run.add_argument("--fail-on", type=_severity, default=Severity.HIGH, help="lowest failing severity (high)")
    run.add_argument("--out", default="audits", help="output folder, or s3://BUCKET/PREFIX (default ./audits)")
    run.add_argument("--notebooks", help="section notebooks folder (default: the kit's notebooks/)")
    run.add_argument("--catalog", help="module with a custom SECTIONS list (default: the built-in checks)")
    run.add_argument("--quiet", action="store_true", help="no progress lines; print only the report path")
    run.add_argument(
        "--format",
        type=_formats,
        action="append",
        metavar="FORMATS",
        help=f"outputs to write, comma-separated or repeated: {', '.join(outputs.OUTPUTS)} (default: "
        f"{','.join(outputs.DEFAULT_FORMATS)}); findings.json, the run's record, is always written",
    )
    add_run_options(run)
    run.set_defaults(handler=cmd_run)

    checks = commands.add_parser("checks", help="list the checks and the checklist coverage, running nothing")
    checks.add_argument("--json", action="store_true", help="machine-readable output")
    checks.add_argument("--section", type=int, help="only this section")
    checks.add_argument("--catalog", help="module with a custom SECTIONS list")
    checks.set_defaults(handler=cmd_checks)

    params = commands.add_parser("params", help="params file tools")
    params_commands = params.add_subparsers(dest="params_command", metavar="COMMAND", required=True)
    check = params_commands.add_parser("check", help="validate a params file, its waivers and attestations")
    check.add_argument("file", metavar="ENV_OR_PATH", help="environment name (as for run) or params file")
    check.add_argument("--catalog", help="module with a custom SECTIONS list (default: the built-in checks)")
    check.set_defaults(handler=cmd_params_check)
    schema = params_commands.add_parser("schema", help="print the JSON Schema of a params file (for editors)")
    schema.set_defaults(handler=cmd_params_schema)
    docs = params_commands.add_parser("docs", help="print the reference of every params field (params/README.md)")
    docs.set_defaults(handler=cmd_params_docs)

    for module in PLUGIN_MODULES:
        _register_plugin(module, commands)
    return parser


def _register_plugin(module: str, commands: argparse._SubParsersAction) -> None:
    """Let a companion module add its own subcommands (``register(subparsers)``), if it is installed."""
    try:
        register: Callable[[argparse._SubParsersAction], None] = importlib.import_module(module).register
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return  # not installed: its commands are simply absent
        _error(f"commands of {module} unavailable: {exc}")
        return
    except (ImportError, AttributeError) as exc:
        _error(f"commands of {module} unavailable: {exc}")
        return
    register(commands)


def console() -> NoReturn:
    """The ``recsys-audit`` command: :func:`main`, then exit without tearing the interpreter down object by object
    (a run leaves about a million objects that would be freed one at a time, ~0.3 s for nothing). Exit handlers
    still run and the streams are flushed first."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    atexit._run_exitfuncs()  # type: ignore[attr-defined]  # what the interpreter would run at exit
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    try:
        return int(handler(args))
    except ParamsError as exc:
        _error(str(exc))
        return int(ExitCode.USAGE)
    except CliError as exc:
        _error(str(exc))
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly, as other CLI tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if getattr(exc, "exit_code", None) == ExitCode.USAGE:  # run.UsageError and companions' usage errors
            _error(str(exc))
            return int(ExitCode.USAGE)
        if os.environ.get("RECSYS_AUDIT_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (set RECSYS_AUDIT_DEBUG=1 for the traceback)")
        return int(ExitCode.INCOMPLETE)


if __name__ == "__main__":
    sys.exit(main())
