"""Import-time economies for the processes that execute and render notebooks.

nbformat (imported by papermill and nbconvert) imports jsonschema, whose format checkers include one for RFC 3987
IRIs when the optional ``rfc3987_syntax`` package is installed (JupyterLab's dependencies install it). Importing that
package compiles a grammar: about 0.7 s, more than a whole section's probes. Notebook validation never uses that
format, so the runner and the report renderer mark the package as absent before nbformat loads; jsonschema then
simply leaves the ``iri`` formats unchecked, as it does where the package is not installed.
"""

from __future__ import annotations

import sys

UNUSED_FORMAT_CHECKERS = ("rfc3987_syntax",)


def skip_unused_format_checkers() -> None:
    """Call before the first import of nbformat; no effect once jsonschema's format checkers are loaded."""
    if "jsonschema._format" in sys.modules:
        return
    for name in UNUSED_FORMAT_CHECKERS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "import fails", the documented marker
