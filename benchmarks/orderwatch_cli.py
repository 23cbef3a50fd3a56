"""The `orderwatch` console script, run as a user runs it, for the benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def exe() -> str:
    """The installed console script (the venv's, even when the venv is not on PATH)."""
    return shutil.which("orderwatch") or str(Path(sys.executable).with_name("orderwatch"))


def orderwatch(*args: str) -> str:
    """Run one command; its stdout, or exit with its error."""
    done = subprocess.run([exe(), *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"orderwatch {args[0]} failed: {done.stderr.strip()}")
    return done.stdout
