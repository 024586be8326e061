"""``recsys-audit sandbox up | down | status``: run the stand-in recsys-service for the demo and the tests.

The default instance (``sandbox up``) is ``local`` in ``.sandbox/local/`` on fixed ports (service 18080, JWKS 18443,
Prometheus 19090, PostgreSQL 15433), which the committed ``params/local.yaml`` points at; ``up`` never rewrites that
file (what ages lives in ``.sandbox/local/dated-facts.yaml``). Processes are tracked in the instance's ``state.json``
and stopped by PID.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from recsys_audit.sandbox import defects as defect_registry
from recsys_audit.sandbox.harness import (
    DEFAULT_NAME,
    DEFAULT_PORTS,
    SandboxError,
    instance_status,
    start_sandbox,
    stop_instance,
)

DEFAULT_DIR = Path(".sandbox")
PORT_ORDER = ("service", "jwks", "prometheus", "postgres")


def register(subparsers: argparse._SubParsersAction) -> None:
    sandbox = subparsers.add_parser("sandbox", help="the built-in stand-in recsys-service (demo and tests)")
    commands = sandbox.add_subparsers(dest="sandbox_command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="start an instance and write its params file")
    up.add_argument("--profile", default="hardened", choices=defect_registry.PROFILES)
    up.add_argument(
        "--defect",
        action="append",
        default=[],
        metavar="NAME",
        help=f"break one thing (repeatable): {', '.join(defect_registry.DEFECTS)}",
    )
    up.add_argument("--name", default=DEFAULT_NAME, help=f"instance name (default {DEFAULT_NAME})")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="folder of instances (default .sandbox)")
    up.add_argument(
        "--port",
        type=int,
        help="service port; JWKS, Prometheus and PostgreSQL use the next three "
        "(default: 18080… for the 'local' instance, free ports otherwise)",
    )
    up.add_argument("--rows", type=int, default=0, help="exposure_events rows to generate (interactions: twice)")
    up.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="stop an instance")
    down.add_argument("--name", default=DEFAULT_NAME)
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    down.set_defaults(handler=cmd_down)

    status = commands.add_parser("status", help="list instances and whether their processes run")
    status.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    status.set_defaults(handler=cmd_status)


def _ports(args: argparse.Namespace) -> dict[str, int] | None:
    if args.port:
        if not 1024 <= args.port <= 65532:
            raise SandboxError(f"--port {args.port}: choose a port between 1024 and 65532")
        return {name: args.port + offset for offset, name in enumerate(PORT_ORDER)}
    return dict(DEFAULT_PORTS) if args.name == DEFAULT_NAME else None


def _is_default_instance(args: argparse.Namespace) -> bool:
    return (
        args.name == DEFAULT_NAME
        and args.dir == DEFAULT_DIR
        and not args.port
        and args.profile == "hardened"
        and not args.defect
    )


def _mask_dsn(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", dsn)


def cmd_up(args: argparse.Namespace) -> int:
    try:
        instance = start_sandbox(
            args.dir,
            args.profile,
            args.defect,
            ports=_ports(args),
            prometheus=not args.no_prometheus,
            rows=args.rows,
            name=args.name,
            log=lambda message: print(message, file=sys.stderr),
        )
    except (SandboxError, defect_registry.UnknownDefectError) as exc:
        print(f"recsys-audit sandbox: {exc}", file=sys.stderr)
        return 2
    defects = f" + {', '.join(instance.defects)}" if instance.defects else ""
    print(f"sandbox '{instance.name}' is up ({instance.profile}{defects}) in {instance.timings_s['total']:.1f}s")
    print(f"  service     {instance.base_url}")
    print(f"  metrics     {instance.metrics_url}")
    print(f"  prometheus  {instance.prometheus_url or '(not running)'}")
    print(f"  database    {_mask_dsn(instance.dsn)}  (auditor; password in secrets/auditor.dsn)")
    print(f"  params      {instance.params_path}")
    # `run NAME` reads params/NAME.yaml if there is one, else this instance's params: name it when that is this one
    committed = Path("params") / f"{args.name}.yaml"
    if args.name == DEFAULT_NAME:
        by_name = _is_default_instance(args) and committed.is_file()
    else:
        by_name = args.dir == DEFAULT_DIR and not committed.exists()
    run_target = args.name if by_name else instance.params_path
    print(f"run the audit:  recsys-audit run {run_target}")
    print(f"stop it:        recsys-audit sandbox down --name {instance.name} --dir {args.dir}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    directory = args.dir / args.name
    if instance_status(directory) is None:
        print(f"recsys-audit sandbox: no instance '{args.name}' in {args.dir}", file=sys.stderr)
        return 2
    stopped = stop_instance(directory)
    print(f"sandbox '{args.name}' stopped" + (f" ({', '.join(stopped)})" if stopped else " (nothing was running)"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    found = False
    for directory in sorted(p for p in args.dir.glob("*") if p.is_dir()):
        status = instance_status(directory)
        if status is None:
            continue
        found = True
        state = "running" if status["running"] else ("stopped" if not any(status["alive"].values()) else "degraded")
        defects = f" + {', '.join(status['defects'])}" if status.get("defects") else ""
        alive = ", ".join(f"{name} {'up' if up else 'down'}" for name, up in status["alive"].items())
        print(f"{status['name']}: {state} ({status['profile']}{defects}) — {alive}")
        if status["running"]:
            print(f"  service http://127.0.0.1:{status['ports']['service']}  params {directory / 'params.yaml'}")
    if not found:
        print(f"no sandbox instances in {args.dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recsys-audit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
