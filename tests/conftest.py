"""Shared test helpers: contract events written by hand, and paths to the shared contract."""

from __future__ import annotations

import http.client
import itertools
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.exposition import metric_sum
from benchmarks.orderwatch_cli import exe as orderwatch_exe
from benchmarks.orderwatch_cli import free_ports
from orderwatch.events import Event, validate
from orderwatch.timestamps import from_rfc3339, to_rfc3339

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ORDERWATCH_SHARED", REPO.parent / "shared"))
T0 = from_rfc3339("2026-02-23T10:00:00+08:00")
MIN = 60.0
HOUR = 3600.0

_ids = itertools.count(1)


def at(offset_s: float) -> str:
    return to_rfc3339(T0 + offset_s, "Asia/Shanghai")


def order_event(order_no: str, t: float, action: str, status: str, **extra: Any) -> Event:
    data = {"event_id": extra.pop("event_id", f"e{next(_ids)}"), "stream": "order",
            "order_no": order_no, "occurred_at": at(t), "action": action,
            "result": extra.pop("result", "ok"), "status": status,
            "source": extra.pop("source", "oms")}
    if action == "create":
        data.update(user_id="U1", channel="web", amount=199.0,
                    items=[{"sku": "SKU-1", "qty": 1}], grace_period_s=1800)
    data.update(extra)
    return validate(data)


def callback(order_no: str, t: float, kind: str = "notify", trade_status: str = "SUCCESS",
             paid_at: float | None = None, gateway: str = "alipay", **extra: Any) -> Event:
    data = {"event_id": extra.pop("event_id", f"e{next(_ids)}"), "stream": "callback",
            "order_no": order_no, "occurred_at": at(t), "gateway": gateway, "kind": kind,
            "trade_status": trade_status}
    if trade_status == "SUCCESS":
        data["paid_at"] = at(t if paid_at is None else paid_at)
    if kind == "notify":
        data.setdefault("http_status", 200)
        data.setdefault("signature_valid", True)
    data.update(extra)
    return validate(data)


def scan(order_no: str, t: float, waybill_no: str, carrier: str = "ZTO",
         event: str = "picked_up") -> Event:
    return validate({"event_id": f"e{next(_ids)}", "stream": "logistics", "order_no": order_no,
                     "occurred_at": at(t), "carrier": carrier, "waybill_no": waybill_no,
                     "event": event, "via": "poll"})


def ship(order_no: str, t: float, waybill_no: str = "ZT1", carrier: str = "ZTO",
         **extra: Any) -> Event:
    return order_event(order_no, t, "ship", "shipped", prev_status="awaiting_shipment",
                       source="wms", warehouse="WH-EAST", carrier=carrier,
                       waybill_no=waybill_no, **extra)


def lock(key: str, wait_ms: float = 10, held_ms: float | None = 100, ttl_ms: float = 30000,
         acquired: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "acquired": acquired, "wait_ms": wait_ms, "ttl_ms": ttl_ms}
    if held_ms is not None and acquired:
        out["held_ms"] = held_ms
    return out


def events_counted(port: int) -> float:
    """`orderwatch_events_total` on a run's /metrics; 0 until it answers."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
    except httpx.TransportError:
        return 0.0
    return metric_sum(text, "orderwatch_events_total")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    return free_ports(1)[0]


def raw_post(port: int, path: str, headers: dict[str, str], body: bytes = b""
             ) -> tuple[int, str]:
    """A POST with exactly these headers (httpx would correct a bad Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def orderwatch(*args: str, cwd: Path | None = None, timeout: float = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script the way a user does."""
    return subprocess.run([orderwatch_exe(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def shared() -> Path:
    assert (SHARED / "contract" / "events.schema.json").is_file(), \
        f"shared/ not found at {SHARED}; set ORDERWATCH_SHARED"
    return SHARED


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    """The one chDB data path of this test process (chDB allows one per process)."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"
