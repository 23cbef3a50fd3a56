"""The `orderwatch` console script run as a user runs it, and free loopback ports for it to
listen on: for the benchmarks and the tests."""

from __future__ import annotations

import random
import shutil
import socket
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


def free_ports(n: int) -> list[int]:
    """n consecutive TCP ports on loopback that nothing listens on right now.

    They come from below the kernel's ephemeral range, so an outgoing connection (a
    Kafka client's, say) or another bind to port 0 cannot take one between this call
    and the moment the process under test binds it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        start = rng.randrange(10_000, low - n)
        sockets = [socket.socket() for _ in range(n)]
        try:
            for port, s in zip(range(start, start + n), sockets, strict=True):
                s.bind(("127.0.0.1", port))
            return list(range(start, start + n))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports below {low}")
