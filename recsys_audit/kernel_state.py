"""The kernel side of the kernel pool: warm a kernel up once, then give every notebook a fresh start in it.

A pooled kernel executes several notebooks one after another (:mod:`recsys_audit.kernel_pool`). What it keeps
between them is only what costs time and holds no audit state: the interpreter and the third-party modules the checks
import. Before each notebook, :func:`fresh_start` gives it what a new kernel would:

- an empty user namespace and history, execution counts from 1 (IPython's reset);
- the kit's own modules imported anew (every ``recsys_audit`` module but this one is dropped from ``sys.modules``),
  so no module-level state of the kit — registered secrets, caches, open clients — carries over; so are the
  notebooks' own modules (a custom check catalog, say: any module imported since the warm-up from outside the
  Python installation's library folders), which would otherwise keep objects of the kit's previous import;
- the process state of the warmed-up kernel restored: environment variables, working directory, ``sys.path``,
  warning filters, pandas options, no open matplotlib figure.

The only state this module holds is that snapshot, taken once by :func:`warm_up`.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from typing import Any

KEPT = {"recsys_audit", __name__}  # the package itself (three lines, a version) and this module


@dataclass(frozen=True)
class Baseline:
    modules: frozenset[str]
    environ: dict[str, str]
    cwd: str
    path: list[str]
    warning_filters: list[Any]


_baseline: Baseline | None = None


def _library_folders() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple({os.path.join(paths[key], "") for key in ("stdlib", "platstdlib", "purelib", "platlib")})


def _is_library(module: object) -> bool:
    file = getattr(module, "__file__", None)
    return not file or str(file).startswith(_library_folders())


def _notebook_modules() -> list[str]:
    """The kit's modules and those the notebooks imported from outside the library folders since the warm-up."""
    known = _baseline.modules if _baseline else frozenset()
    return [
        name
        for name, module in list(sys.modules.items())
        if name not in KEPT and (name.startswith("recsys_audit.") or (name not in known and not _is_library(module)))
    ]


def _drop_notebook_modules() -> None:
    package = sys.modules.get("recsys_audit")
    for name in _notebook_modules():
        del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if parent == "recsys_audit" and package is not None and hasattr(package, child):
            delattr(package, child)


def warm_up() -> None:
    """Import what the section notebooks import, then snapshot the process state that :func:`fresh_start` restores.

    The kit's modules stay loaded for the kernel's first notebook: they are as a re-import would leave them."""
    global _baseline
    from recsys_audit import catalog

    importlib.import_module("recsys_audit.notebook")
    catalog.sections()  # every check module and the libraries it imports at module level
    gc.collect()
    _baseline = Baseline(frozenset(sys.modules), dict(os.environ), os.getcwd(), list(sys.path), list(warnings.filters))


def fresh_start() -> None:
    """Reset the kernel to its warmed-up state before the next notebook (see the module's docstring)."""
    if _baseline is None:
        raise RuntimeError("fresh_start() before warm_up()")
    shell = _shell()
    if shell is not None:
        shell.reset(new_session=True)
    _drop_notebook_modules()
    os.environ.clear()
    os.environ.update(_baseline.environ)
    os.chdir(_baseline.cwd)
    sys.path[:] = _baseline.path
    warnings.resetwarnings()  # also invalidates the warnings already shown once
    warnings.filters.extend(_baseline.warning_filters)
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")
    if "pandas" in sys.modules:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.modules["pandas"].reset_option("all")
    gc.collect()


def leftovers() -> list[str]:
    """What differs from the warmed-up state right now (empty just after :func:`fresh_start`); for tests."""
    if _baseline is None:
        return ["not warmed up"]
    found = [f"module {name}" for name in _notebook_modules()]
    shell = _shell()
    if shell is not None:
        hidden = shell.user_ns_hidden
        found += [f"name {name}" for name in shell.user_ns if name not in hidden and not name.startswith("_")]
    changed = {k for k in os.environ.keys() | _baseline.environ.keys() if os.environ.get(k) != _baseline.environ.get(k)}
    found += [f"environment variable {name}" for name in sorted(changed)]
    found += ["working directory"] if os.getcwd() != _baseline.cwd else []
    found += ["sys.path"] if sys.path != _baseline.path else []
    found += ["warning filters"] if warnings.filters != _baseline.warning_filters else []
    return found


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - a kernel always has IPython
        return None
    return get_ipython()
