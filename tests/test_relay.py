"""`orderwatch relay` as Alertmanager uses it: a real Alertmanager (Debian package) sends
its webhook to the relay, which posts to the fake robot server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest
from fake_robot import FakeRobots

from conftest import free_ports, orderwatch_exe, raw_post

TOKEN = "relay-test-token"


@pytest.fixture()
def robots(tmp_path):
    fake = FakeRobots(time.time, wecom_keys={"wk"},
                      dingtalk={"dt": {"secret": "SECrelay", "keyword": "OrderWatch"}})
    base = fake.start()
    (tmp_path / "robots.yml").write_text(
        "robots:\n"
        "  ops: {kind: wecom, url_env: OPS_URL}\n"
        "  pay: {kind: dingtalk, url_env: PAY_URL, secret_env: PAY_SECRET, keyword: OrderWatch}\n"
        "routes:\n"
        "  - {name: critical, match: {severity: critical}, robots: [ops, pay]}\n"
        "  - {name: default, robots: [ops]}\n"
        "  - {name: 支付, match: {severity: none}, robots: [pay]}\n")
    env = {"OPS_URL": f"{base}/cgi-bin/webhook/send?key=wk",
           "PAY_URL": f"{base}/robot/send?access_token=dt", "PAY_SECRET": "SECrelay",
           "ORDERWATCH_RELAY_TOKEN": TOKEN}
    yield fake, env
    fake.stop()


def wait_for(predicate, timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def wait_until_answering(url: str, proc: subprocess.Popen, what: str) -> None:
    """Wait for `url` to answer 200, failing at once (with its stderr) if `proc` died."""
    def answering() -> bool:
        try:
            return httpx.get(url).status_code == 200
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read()
            return False
    wait_for(answering, what=what)


@pytest.fixture()
def relay(robots, tmp_path):
    fake, env = robots
    port = free_ports(1)[0]
    proc = subprocess.Popen([orderwatch_exe(), "relay", "--port", str(port), "--robots",
                             str(tmp_path / "robots.yml"), "--state", str(tmp_path / "state")],
                            env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(f"{url}/-/healthy", proc, "the relay")
    yield fake, url
    proc.terminate()
    proc.wait(10)


def test_the_relays_state_directory_holds_the_weekly_reports_too(robots, tmp_path):
    """With --state DIR the outbox went to DIR, the weekly ledger and reports to
    ./data/state."""
    _, env = robots
    proc = subprocess.Popen([orderwatch_exe(), "relay", "--port", str(free_ports(1)[0]),
                             "--robots", str(tmp_path / "robots.yml"), "--state",
                             str(tmp_path / "state")], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        weekly = proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(10)
    assert weekly.startswith("weekly ") and weekly.rstrip().endswith(
        f" and {tmp_path / 'state'}/reports/"), weekly


def am_payload(status: str = "firing", severity: str = "critical") -> dict:
    return {"version": "4", "status": status, "receiver": "r", "groupKey": "{}:{}",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://am", "truncatedAlerts": 0,
            "alerts": [{"status": status,
                        "labels": {"alertname": "OrderWatchCallbackFailureRate",
                                   "severity": severity, "gateway": "alipay"},
                        "annotations": {"summary": "alipay: 7% of notify callbacks failed"},
                        "startsAt": "2026-02-23T02:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": "abc123"}]}


def test_relay_checks_the_token_routes_and_answers_503_while_a_robot_is_down(relay):
    fake, url = relay
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{url}/alertmanager/critical", json=am_payload()).status_code == 401
    assert httpx.post(f"{url}/alertmanager/nope", json=am_payload(), headers=auth
                      ).status_code == 404
    assert httpx.post(f"{url}/alertmanager/critical", json={"version": "3"}, headers=auth
                      ).status_code == 400
    not_a_list = httpx.post(f"{url}/alertmanager/critical", json={"version": "4", "alerts": "x"},
                            headers=auth)
    assert not_a_list.status_code == 400 and "alerts must be a list" in not_a_list.text
    assert httpx.get(f"{url}/-/ready").status_code == 200
    # these used to answer 500 with a traceback on the relay's stderr
    port = int(url.rsplit(":", 1)[1])
    for length in ("abc", "-5"):
        status, text = raw_post(port, "/alertmanager/critical",
                                {**auth, "Content-Length": length})
        assert (status, text) == (400, f"bad Content-Length '{length}'\n")
    status, text = raw_post(port, "/alertmanager/critical",
                            {**auth, "Content-Length": str(64 << 20)})
    assert status == 413 and "payload too large" in text

    # a route named in Chinese: WSGI hands the path over as Latin-1, and it never matched
    payload = am_payload()
    payload["alerts"][0]["fingerprint"] = "pay1"  # not the one the steps below send
    chinese = httpx.post(f"{url}/alertmanager/支付", json=payload, headers=auth)
    assert chinese.status_code == 200, chinese.text
    wait_for(lambda: [r for r in fake.received if r.kind == "dingtalk"], what="the pay robot")
    fake.received.clear()

    fake.fail_until = time.time() + 3600
    down = httpx.post(f"{url}/alertmanager/critical", json=am_payload(), headers=auth)
    assert down.status_code == 503 and fake.received == []
    fake.fail_until = 0
    wait_for(lambda: httpx.post(f"{url}/alertmanager/critical", json=am_payload(),
                                headers=auth).status_code == 200, 90, "the robots to recover")
    wait_for(lambda: len(fake.received) >= 2, what=f"both robots {fake.answers}")
    assert {r.kind for r in fake.received} == {"wecom", "dingtalk"}
    assert all("alipay" in r.text for r in fake.received)
    assert httpx.post(f"{url}/-/reload", headers=auth).status_code == 200


def test_a_real_alertmanager_delivers_through_the_relay_to_the_robot(relay, tmp_path):
    fake, url = relay
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "am.yml").write_text(f"""
route:
  receiver: relay
  group_wait: 1s
  group_interval: 1s
receivers:
  - name: relay
    webhook_configs:
      - url: {url}/alertmanager/default
        send_resolved: true
        http_config:
          authorization:
            credentials_file: {tmp_path / 'token'}
""")
    port = free_ports(1)[0]
    am = subprocess.Popen([shutil.which("prometheus-alertmanager") or "alertmanager",
                           f"--config.file={tmp_path / 'am.yml'}",
                           f"--storage.path={tmp_path / 'am-data'}",
                           f"--web.listen-address=127.0.0.1:{port}",
                           "--cluster.listen-address="],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        api = f"http://127.0.0.1:{port}/api/v2"
        wait_until_answering(f"{api}/status", am, "Alertmanager")
        alert = [{"labels": {"alertname": "OrderWatchLockContention", "severity": "warning",
                             "lock_family": "inventory"},
                  "annotations": {"summary": "inventory: lock wait p95 480 ms"}}]
        assert httpx.post(f"{api}/alerts", json=alert).status_code == 200
        wait_for(lambda: any("OrderWatchLockContention" in r.text for r in fake.received),
                 60, "the robot message")
        (msg,) = [r for r in fake.received if "OrderWatchLockContention" in r.text]
        assert msg.kind == "wecom" and "lock_family=inventory" in msg.text
        assert "480 ms" in msg.text
    finally:
        am.terminate()
        am.wait(10)


def test_relay_refuses_to_listen_off_loopback_without_a_token(tmp_path):
    (tmp_path / "robots.yml").write_text("robots:\n  ops: {kind: wecom, url_env: OPS_URL}\n")
    result = subprocess.run([orderwatch_exe(), "relay", "--host", "0.0.0.0",
                             "--robots", str(tmp_path / "robots.yml"), "--state",
                             str(tmp_path / "s")], capture_output=True, text=True,
                            env={"OPS_URL": "http://127.0.0.1:9/x?key=k"}, timeout=60)
    assert result.returncode == 2 and "ORDERWATCH_RELAY_TOKEN" in result.stderr


def test_replay_sends_its_alerts_to_the_configured_robots(robots, tmp_path):
    import sqlite3

    from conftest import orderwatch

    fake, env = robots
    sim = orderwatch("simulate", "--out", str(tmp_path / "e.jsonl"), "--orders", "300",
                     "--faults", "all", "--seed", "5")
    assert sim.returncode == 0, sim.stderr
    result = orderwatch("replay", str(tmp_path / "e.jsonl"), "--clickhouse",
                        f"chdb://{tmp_path / 'ch'}", "--alerts-out", str(tmp_path / "a.jsonl"),
                        env={**env, "ORDERWATCH_ROBOTS_FILE": str(tmp_path / "robots.yml"),
                             "ORDERWATCH_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 0, result.stderr
    alerts = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(alerts) > 20
    wecom = [r for r in fake.received if r.kind == "wecom"]
    assert 0 < len(wecom) <= 20  # one minute's worth; the rest wait in the outbox
    assert "OrderWatch" in wecom[0].text
    db = sqlite3.connect(tmp_path / "state" / "outbox.sqlite3")
    states = dict(db.execute("SELECT state, count() FROM notices WHERE robot='ops' "
                             "GROUP BY state").fetchall())
    assert states.get("sent", 0) + states.get("pending", 0) == len(alerts)  # none lost


def test_a_reloaded_robots_file_reschedules_the_weekly_report(tmp_path):
    """`POST /-/reload` said "reloaded" while the weekly report kept the old file's
    schedule and robots; a file whose schedule was off never started one at all."""
    from orderwatch.alerts.relay import Relay
    from orderwatch.alerts.weekly_robot import WeeklyRobot
    from orderwatch.config import Settings
    from orderwatch.timestamps import from_rfc3339

    delivered: list = []

    class Recording(WeeklyRobot):  # what the robots and the report would be given
        def deliver(self, week):
            delivered.append((str(week), self.config))

    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\nweekly: {at: 'off'}\n")
    offset = [0.0]
    relay = Relay(path, tmp_path / "state", None)
    weekly = Recording(lambda sql: ([], []), Settings(state_dir=str(tmp_path / "state")),
                       relay.config, lambda: time.time() + offset[0])
    relay.on_reload.append(weekly.reconfigure)
    weekly.start()
    try:
        time.sleep(0.5)
        path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\n"
                        "weekly: {at: 'MON 09:30'}\n")
        offset[0] = from_rfc3339("2026-03-02T09:29:59.5+08:00") - time.time()  # a Monday
        relay.reload()
        deadline = time.monotonic() + 10
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        weekly.stop()
        weekly.join(5)
    assert not weekly.is_alive(), "stop() wakes it"
    assert delivered == [("2026-W09", relay.config)]  # the week that just ended, new file
