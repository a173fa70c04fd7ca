"""Keep what torch, transformers and optimum print during an export out of the terminal.

An export runs three large libraries that print warnings meant for their own developers (torch's
TracerWarning, transformers' deprecations, optimum's notices), from Python and from C++. The
command line sends all of it to a log file instead, names the file, and shows it as it comes
only with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Captured:
    """Where the block's stderr went, and how many lines it wrote (None: nothing captured)."""

    path: Path | None = None
    lines: int = 0

    def summary(self) -> str | None:
        """The line that names the log, or None if there is nothing to see."""
        if not self.lines:
            return None
        libraries = "torch, transformers and optimum"
        return f"{self.lines} lines of warnings from {libraries}: {self.path} (--verbose shows them)"


@contextlib.contextmanager
def third_party_output(verbose: bool) -> Iterator[Captured]:
    """Send everything written to stderr inside the block to a log file (not with ``verbose``).

    Stderr is redirected at the file descriptor, so C++ messages are caught too. After the block
    an empty log is deleted; if the block raised, the exception gets a note naming the log.
    """
    captured = Captured()
    if verbose:
        yield captured
        return
    handle, name = tempfile.mkstemp(prefix="gist-onnx-export-", suffix=".log")
    captured.path = Path(name)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(handle, 2)
    try:
        with open(handle, "w", encoding="utf-8", closefd=False) as log, contextlib.redirect_stderr(log):
            yield captured
    except BaseException as exc:
        _restore(saved, handle, captured)
        if captured.lines and hasattr(exc, "add_note"):
            exc.add_note(f"the libraries' own messages are in {captured.path}")
        raise
    _restore(saved, handle, captured)


def _restore(saved: int, handle: int, captured: Captured) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(handle)
    if captured.path is not None:
        captured.lines = len(captured.path.read_text(encoding="utf-8", errors="replace").splitlines())
        if not captured.lines:
            captured.path.unlink()
