"""Robots against the local fake WeCom/DingTalk server: bodies, signatures, limits,
digests under the 20/min limit, outages and restarts, driven by one shared fake clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import Counter
from urllib.parse import quote_plus

import orjson
import pytest
from fake_robot import FakeRobots

from orderwatch.alerts.notice import Notice
from orderwatch.alerts.outbox import Outbox
from orderwatch.alerts.robot_config import RobotConfig, load_robots
from orderwatch.alerts.robots import Robot, dingtalk_signature
from orderwatch.config import ConfigError

T0 = 1_771_812_000.0  # 2026-02-23 10:00 +08:00


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock():
    return Clock()


@pytest.fixture()
def fake(clock):
    robots = FakeRobots(clock, wecom_keys={"wk"},
                        dingtalk={"dt": {"secret": "SECabc", "keyword": "OrderWatch"}})
    base = robots.start()
    robots.base = base
    yield robots
    robots.stop()


def notice(i: int, status: str = "firing", severity: str = "critical", summary: str = "",
           alert: str = "callback_lost") -> Notice:
    return Notice(f"k{i}:{status}", alert, status, severity,
                  {"order_no": f"T{i:04d}", "gateway": "alipay"}, T0 - 600,
                  None if status == "firing" else T0,
                  summary or f"paid at 09:50 but still pending_payment, order #{i}; " * 3)


def wecom(fake, **kw) -> Robot:
    return Robot(RobotConfig("ops", "wecom", f"{fake.base}/cgi-bin/webhook/send?key=wk", **kw))


def dingtalk(fake, secret: str = "SECabc", **kw) -> Robot:
    return Robot(RobotConfig("pay", "dingtalk", f"{fake.base}/robot/send?access_token=dt",
                             secret=secret, keyword="OrderWatch", **kw))


def run(outbox: Outbox, clock: Clock, until: float, step: float = 1.0) -> None:
    while clock.now < until:
        outbox.pump()
        clock.now += step


def notices_in(fake) -> Counter:
    return Counter(m for r in fake.received for m in re.findall(r"order_no=(T\d{4})", r.text))


def test_dingtalk_signature_matches_the_documented_recipe():
    # HMAC-SHA256 keyed by the secret over "timestamp\nsecret", base64, then URL-encoded
    mac = hmac.new(b"SECabc", b"1700000000000\nSECabc", hashlib.sha256).digest()
    sign = quote_plus(base64.b64encode(mac).decode())
    assert dingtalk_signature("SECabc", 1_700_000_000_000) == \
        f"timestamp=1700000000000&sign={sign}"
    assert "%2B" in sign or "%2F" in sign or "%3D" in sign  # the encoding mattered


def test_dingtalk_markdown_is_signed_has_the_keyword_and_mentions_that_ping(fake, clock,
                                                                             tmp_path):
    robot = dingtalk(fake, mention_mobiles=("13800000000",))
    outbox = Outbox(tmp_path / "o.db", {"pay": robot}, clock=clock)
    outbox.enqueue("pay", notice(1))
    outbox.pump()
    assert fake.answers == [0]
    (msg,) = fake.received
    assert msg.payload["msgtype"] == "markdown"
    assert msg.payload["at"]["atMobiles"] == ["13800000000"]
    assert "@13800000000" in msg.text  # DingTalk pings only if the text has it too
    assert "OrderWatch" in msg.payload["markdown"]["title"]
    assert "支付回调丢失" in msg.text and "T0001" in msg.text  # Chinese by default


def test_english_on_request_and_wecom_text_mentions(fake, clock, tmp_path):
    robot = wecom(fake, message="text", language="en", mention_mobiles=("13900000000",))
    outbox = Outbox(tmp_path / "o.db", {"ops": robot}, clock=clock)
    outbox.enqueue("ops", notice(2))
    outbox.pump()
    (msg,) = fake.received
    assert msg.payload["text"]["mentioned_mobile_list"] == ["13900000000"]
    assert "FIRING" in msg.text and "callback_lost" in msg.text and "告警" not in msg.text


def test_http_200_with_an_errcode_is_a_failure_and_nothing_is_marked_sent(fake, clock,
                                                                         tmp_path):
    outbox = Outbox(tmp_path / "o.db", {"pay": dingtalk(fake, secret="SECwrong")}, clock=clock)
    outbox.enqueue("pay", notice(3))
    outbox.pump()
    assert fake.answers == [310000] and fake.received == []
    assert outbox.state_of("pay", "k3:firing") == "failed"


def test_an_oversized_message_keeps_its_headline_and_says_what_was_cut(fake, clock):
    robot = wecom(fake)
    huge = [notice(i, summary="很长的说明" * 60) for i in range(40)]
    payload = robot.payload(huge)
    content = payload["markdown"]["content"]
    assert len(content.encode()) <= 4096
    assert content.startswith("### OrderWatch 40 条告警")
    shown = len(re.findall(r"order_no=T\d{4}", content))
    assert 0 < shown < 40 and f"另有 {40 - shown} 条未显示" in content


def test_a_burst_of_500_reaches_the_robot_as_digests_within_the_rate_limit(fake, clock,
                                                                            tmp_path):
    outbox = Outbox(tmp_path / "o.db", {"ops": wecom(fake)}, clock=clock)
    for i in range(500):
        outbox.enqueue("ops", notice(i))
    run(outbox, clock, T0 + 600)
    assert notices_in(fake) == Counter({f"T{i:04d}": 1 for i in range(500)})
    assert 1 < len(fake.received) < 100  # digests, not 500 messages
    assert 45009 not in fake.answers  # the limit was never hit: OrderWatch kept to it
    times = [r.at for r in fake.received]
    assert max(sum(1 for t in times if s <= t < s + 60) for s in times) <= 20
    assert all(len(r.text.encode()) <= 4096 for r in fake.received)
    assert outbox.pending() == 0


def test_a_robot_down_for_five_minutes_loses_nothing(fake, clock, tmp_path):
    outbox = Outbox(tmp_path / "o.db", {"pay": dingtalk(fake)}, clock=clock)
    fake.fail_until = T0 + 300
    for i in range(60):  # alerts keep coming during the outage
        outbox.enqueue("pay", notice(i))
        run(outbox, clock, clock.now + 5)
    assert 500 in fake.answers
    run(outbox, clock, T0 + 900)
    assert notices_in(fake) == Counter({f"T{i:04d}": 1 for i in range(60)})


def test_a_restart_in_the_middle_resends_nothing_twice(fake, clock, tmp_path):
    path = tmp_path / "o.db"
    first = Outbox(path, {"ops": wecom(fake)}, clock=clock)
    for i in range(500):
        first.enqueue("ops", notice(i))
    first.pump()  # one minute's budget goes out
    sent_before = sum(notices_in(fake).values())
    assert 0 < sent_before < 500
    first.close()

    second = Outbox(path, {"ops": wecom(fake)}, clock=clock)
    assert second.enqueue("ops", notice(0)) is False  # the resumed dataflow offers it again
    second.pump()  # same minute: the stored window holds it back
    assert sum(notices_in(fake).values()) == sent_before
    run(second, clock, T0 + 600)
    assert notices_in(fake) == Counter({f"T{i:04d}": 1 for i in range(500)})


def test_wecom_image_is_base64_with_md5_and_checked_by_the_robot(fake, clock):
    import httpx

    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    robot = wecom(fake)
    answer = httpx.post(robot.url(), json=robot.image_payload(png)).json()
    assert answer["errcode"] == 0
    with pytest.raises(ValueError):
        robot.image_payload(b"\x89PNG" + b"\x00" * (2 * 1024 * 1024))


def test_robots_file_takes_secrets_from_the_environment_only(tmp_path):
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: OPS_URL}\n"
                    "  pay: {kind: dingtalk, url_env: PAY_URL, secret_env: PAY_SECRET}\n"
                    "routes:\n  - {name: critical, match: {severity: critical}, "
                    "robots: [ops, pay]}\n  - {name: default, robots: [ops]}\n")
    config = load_robots(path, {"OPS_URL": "https://example.invalid/x?key=1"})
    assert set(config.robots) == {"ops"} and config.disabled == {"pay": "PAY_URL"}
    assert config.switched_off() == "pay ($PAY_URL is empty)"
    assert [r.name for r in config.robots_for({"severity": "warning"})] == ["ops"]
    assert "key=1" not in repr(config.robots["ops"])  # never in logs
    # refused at start, not retried for minutes at send time (was: exit 1 "Invalid port")
    for url, said in (("http://", "with a host"), ("http://[::1", "not a valid URL"),
                      ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send", "no key=…"),
                      ("https://x.test/send?key=", "no key=…")):
        with pytest.raises(ConfigError, match=said):
            load_robots(path, {"OPS_URL": url})
    with pytest.raises(ConfigError, match="no access_token=…"):
        load_robots(path, {"OPS_URL": "https://x.test/send?key=1", "PAY_SECRET": "SEC1",
                           "PAY_URL": "https://oapi.dingtalk.com/robot/send?key=1"})
    path.write_text("robots:\n  ops: {kind: wecom, url: https://x}\n")
    with pytest.raises(ConfigError, match="environment"):
        load_robots(path, {})


def test_a_broken_robots_file_is_refused_in_one_line_saying_where(tmp_path):
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: OPS_URL\n")
    with pytest.raises(ConfigError) as broken:
        load_robots(path, {"OPS_URL": "https://example.invalid/x?key=1"})
    assert "\n" not in str(broken.value) and "line 3, column 1" in str(broken.value)
    path.write_bytes(b"\xff\xfe robots")
    with pytest.raises(ConfigError, match="not UTF-8"):  # was a bare UnicodeDecodeError
        load_robots(path, {})


@pytest.mark.parametrize(("body", "said"), [
    # each of these used to be accepted as if it were not there, or to fail with a bare
    # Python error ('int' object has no attribute 'get')
    ("  - {name: a, match_re: {alert: callback_.*}, robots: [ops]}",  # every alert to a
     "route 1: unknown key match_re"),
    ("  - {name: a, mach: {severity: critical}, robots: [ops]}", "unknown key mach"),
    ("  - {name: a, robots: ops}", "route 'a': robots must be a list"),  # was o, p, s
    ("  - {name: a, match: [severity], robots: [ops]}", "match must be a mapping"),
    ("  - {name: a, robots: [ops], continue: 'no'}", "continue must be true or false"),
    ("  - {name: a, robots: [ops]}\n  - {name: a, robots: [ops]}",
     "route names must be unique: a"),
    ("  - 5", "route 1: must be a mapping"),
    # matched as "None" and "{'a': 1}", so the route took nothing
    ("  - {name: a, match: {severity: null}, robots: [ops]}", "match severity must be a label"),
    ("  - {name: a, match: {alert: {a: 1}}, robots: [ops]}", "match alert must be a label"),
    ("  - {name: a, match: {paid: true}, robots: [ops]}", "quote it"),
    # the second route, unnamed, was 'route1' here and "route 2" in shape errors
    ("  - {robots: [ops]}\n  - {robots: [ops], continue: 1}", "route 'route2': continue"),
])
def test_a_routes_mistake_is_refused_not_read_as_match_everything(tmp_path, body, said):
    path = tmp_path / "robots.yml"
    path.write_text(f"robots:\n  ops: {{kind: wecom, url_env: U}}\nroutes:\n{body}\n")
    with pytest.raises(ConfigError, match=said) as refused:
        load_robots(path, {"U": "https://example.test/hook?key=k"})
    assert str(refused.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("text", "said"), [
    ("robots:\n  ops: 5\n", "robot 'ops': must be a mapping"),
    ("robots:\n  ops: {kind: wecom, url_env: U, mobiles: [1]}\n", "unknown key mobiles"),
    ("robots:\n  ops: {kind: wecom, url_env: U, mention_mobiles: 138}\n",
     "mention_mobiles must be a list"),
    ("robots:\n  ops: {kind: wecom, url_env: U}\nroutes: 5\n", "routes must be a list"),
    ("robots:\n  ops: {kind: wecom, url_env: U}\nroute: []\n", "unknown key route"),
    ("robots:\n  ops: {kind: wecom, url_env: U}\nweekly: {day: FRI}\n",
     "weekly: unknown key day"),
    ("robots:\n  ops: {kind: wecom, url_env: U}\nweekly: {robots: ops}\n",
     "weekly: robots must be a list"),
])
def test_a_robots_or_weekly_mistake_is_refused_in_one_line(tmp_path, text, said):
    path = tmp_path / "robots.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=said) as refused:
        load_robots(path, {"U": "https://example.test/hook?key=k"})
    assert "\n" not in str(refused.value)


def _dispatcher(fake, clock, tmp_path):
    from orderwatch.alerts.dispatch import Dispatcher
    from orderwatch.alerts.robot_config import RobotsConfig, Route
    from orderwatch.alerts.silences import Silences

    robot = wecom(fake)
    config = RobotsConfig({"ops": robot.config}, (Route("default", ("ops",)),))
    outbox = Outbox(tmp_path / "o.db", {"ops": robot}, clock=clock)
    silences = Silences(tmp_path / "s.db", clock=clock)
    return Dispatcher(config, outbox, silences), outbox, silences


def test_silences_mute_matching_notices_until_they_expire(fake, clock, tmp_path):
    from orderwatch.alerts.silences import parse_matcher

    dispatcher, outbox, silences = _dispatcher(fake, clock, tmp_path)
    s = silences.add([parse_matcher("alert=callback_lost"), parse_matcher("gateway=~ali.*")],
                     3600, "alipay maintenance")
    assert dispatcher.offer(notice(1)) == "silenced"
    other = Notice("w1", "callback_lost", "firing", "critical",
                   {"order_no": "T0900", "gateway": "wechat"}, T0, None, "lost")
    assert dispatcher.offer(other) == "queued"
    clock.now += 3600  # the silence ran out
    assert dispatcher.offer(notice(2)) == "queued"
    with pytest.raises(ConfigError, match="already ended"):
        silences.expire(s.id)
    with pytest.raises(ConfigError, match="duration above 0"):  # over before it starts
        silences.add([parse_matcher("alert=callback_lost")], 0, "nothing")
    run(outbox, clock, clock.now + 35)  # the route's group_wait (30 s)
    assert set(notices_in(fake)) == {"T0900", "T0002"}


@pytest.mark.parametrize("matchers", [["alert=~.*"], ["alert="], ["gateway!=alipay"],
                                      ["alert!~callback_.*"], ["gateway=", "alert=~.*"]])
def test_a_silence_that_would_mute_every_alert_is_refused(clock, tmp_path, matchers):
    from orderwatch.alerts.silences import Silences, parse_matcher

    silences = Silences(tmp_path / "s.db", clock=clock)
    with pytest.raises(ConfigError, match="must not match the empty string"):
        silences.add([parse_matcher(m) for m in matchers], 3600, "maintenance")
    assert silences.active() == []
    # one matcher an alert must carry is enough, as in Alertmanager
    silences.add([parse_matcher(m) for m in matchers] + [parse_matcher("alert=~.+")],
                 3600, "maintenance")


def test_alertmanager_users_alertname_silences_and_routes_like_alert(fake, clock, tmp_path):
    from orderwatch.alerts.silences import parse_matcher

    dispatcher, _, silences = _dispatcher(fake, clock, tmp_path)
    silences.add([parse_matcher("alertname=callback_lost")], 3600, "alipay maintenance")
    assert dispatcher.offer(notice(1)) == "silenced"  # was "queued": no label alertname
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\nroutes:\n"
                    "  - {match: {alertname: callback_lost}, robots: [ops], group_by: [alertname]}\n")
    config = load_robots(path, {"U": "https://example.test/hook?key=k"})
    ((robot, grouping),) = config.deliveries(notice(2).route_labels)
    assert robot.name == "ops" and grouping.key(notice(2)) == "alertname=callback_lost"


def test_a_failing_gateway_groups_its_lost_callbacks_into_one_line(fake, clock, tmp_path):
    dispatcher, outbox, _ = _dispatcher(fake, clock, tmp_path)
    rate = Notice("r1", "callback_failure_rate", "firing", "critical", {"gateway": "alipay"},
                  T0, None, "alipay: 9% of notify callbacks failed")
    assert dispatcher.offer(rate) == "queued"
    assert [dispatcher.offer(notice(i)) for i in range(30)] == ["inhibited"] * 30
    run(outbox, clock, clock.now + 35)
    (msg,) = fake.received  # one message: the gateway alert and the orders it explains
    assert "支付回调失败率高" in msg.text
    (grouped,) = [x for x in msg.text.split("\n") if "× 30 单" in x]
    assert all(f"T{i:04d}" in grouped for i in range(30))
    restarted, _, _ = _dispatcher(fake, clock, tmp_path)  # the same outbox file
    assert restarted.offer(notice(98)) == "inhibited"  # the gateway alert still fires
    resolved = Notice("r1", "callback_failure_rate", "resolved", "critical",
                      {"gateway": "alipay"}, T0, T0 + 600, "recovered")
    dispatcher.offer(resolved)
    assert dispatcher.offer(notice(99)) == "queued"  # no longer inhibited
    assert restarted.offer(notice(97)) == "queued"


def test_a_packed_digest_is_never_cut_even_with_mentions_appended(fake):
    from orderwatch.alerts.message_text import pack

    robot = dingtalk(fake, mention_mobiles=("13800000000", "13900000000"))
    notices = [notice(i, summary="说明" * 200) for i in range(300)]
    groups = pack(notices, robot.fits)
    assert len(groups) > 1
    for group in groups:
        text = robot.payload(group)["markdown"]["text"]
        assert "未显示" not in text and text.endswith("@13800000000 @13900000000")
        assert len(orjson.dumps(robot.payload(group))) <= 20_000


def test_alerts_are_queued_while_a_slow_robot_is_being_sent_to(fake, clock, tmp_path):
    import threading

    outbox = Outbox(tmp_path / "o.db", {"ops": wecom(fake)}, clock=clock)
    outbox.enqueue("ops", notice(1))
    fake.gate = threading.Event()
    pumping = threading.Thread(target=outbox.pump)
    pumping.start()
    assert fake.in_flight.wait(10)
    assert outbox.enqueue("ops", notice(2))  # the dataflow is not held up by the robot
    assert pumping.is_alive()  # the request was still in flight
    fake.gate.set()
    pumping.join(10)
    run(outbox, clock, clock.now + 5)
    assert notices_in(fake) == Counter({"T0001": 1, "T0002": 1})


def _grouped(fake, clock, tmp_path, path: str = "o.db"):
    from orderwatch.alerts.grouping import Grouping

    outbox = Outbox(tmp_path / path, {"ops": wecom(fake)}, clock=clock)
    return outbox, Grouping(wait_s=30, interval_s=300, repeat_s=4 * 3600)


def lost(i: int, gateway: str = "alipay", status: str = "firing") -> Notice:
    return Notice(f"g{i}:{status}", "callback_lost", status, "critical",
                  {"order_no": f"T{i:04d}", "gateway": gateway}, T0,
                  None if status == "firing" else T0 + 3600, f"order {i} lost")


def test_group_wait_collects_a_new_group_then_group_interval_spaces_its_updates(
        fake, clock, tmp_path):
    outbox, grouping = _grouped(fake, clock, tmp_path)
    outbox.enqueue("ops", lost(1), grouping)
    run(outbox, clock, T0 + 20)
    outbox.enqueue("ops", lost(2), grouping)
    run(outbox, clock, T0 + 29)
    assert fake.received == []  # still inside group_wait
    run(outbox, clock, T0 + 31)
    assert len(fake.received) == 1 and notices_in(fake) == Counter({"T0001": 1, "T0002": 1})

    outbox.enqueue("ops", lost(3), grouping)  # the group was sent at T0+30
    outbox.enqueue("ops", lost(4, gateway="wechat"), grouping)  # a new group: its own wait
    run(outbox, clock, T0 + 62)
    assert len(fake.received) == 2 and "T0004" in fake.received[1].text
    run(outbox, clock, T0 + 329)
    assert "T0003" not in notices_in(fake)  # waits for group_interval after the last send
    run(outbox, clock, T0 + 332)
    assert notices_in(fake)["T0003"] == 1 and len(fake.received) == 3


def test_repeat_interval_reminds_of_what_still_fires_and_stops_once_resolved(
        fake, clock, tmp_path):
    outbox, grouping = _grouped(fake, clock, tmp_path)
    outbox.enqueue("ops", lost(1), grouping)
    outbox.enqueue("ops", lost(2), grouping)
    run(outbox, clock, T0 + 31)
    assert len(fake.received) == 1
    outbox.enqueue("ops", lost(2, status="resolved"), grouping)
    run(outbox, clock, T0 + 31 + 300 + 2)  # the resolution, after group_interval
    assert len(fake.received) == 2 and "恢复" in fake.received[1].text
    assert outbox._next_due("ops", clock.now) == pytest.approx(4 * 3600 - 2, abs=2)
    clock.now = T0 + 331 + 4 * 3600 + 1
    outbox.pump()
    reminder = fake.received[2].text
    assert "仍未恢复" in reminder and "T0001" in reminder and "T0002" not in reminder
    outbox.enqueue("ops", lost(1, status="resolved"), grouping)
    clock.now += 301
    outbox.pump()
    assert len(fake.received) == 4
    assert outbox._next_due("ops", clock.now) is None  # nothing fires: the group is gone
    clock.now += 5 * 3600
    outbox.pump()
    assert len(fake.received) == 4  # no reminder of resolved alerts
    outbox.enqueue("ops", lost(5), grouping)  # a fresh group waits group_wait again
    outbox.pump()
    assert len(fake.received) == 4
    run(outbox, clock, clock.now + 31)
    assert len(fake.received) == 5 and "T0005" in fake.received[4].text


def test_group_timers_survive_a_restart(fake, clock, tmp_path):
    first, grouping = _grouped(fake, clock, tmp_path)
    first.enqueue("ops", lost(1), grouping)
    run(first, clock, T0 + 31)
    first.enqueue("ops", lost(2), grouping)
    first.close()
    second, _ = _grouped(fake, clock, tmp_path)
    run(second, clock, T0 + 200)
    assert notices_in(fake) == Counter({"T0001": 1})  # still inside group_interval
    run(second, clock, T0 + 335)
    assert notices_in(fake) == Counter({"T0001": 1, "T0002": 1})


def test_stopping_flushes_every_pending_group_without_waiting(fake, clock, tmp_path):
    from orderwatch.alerts.outbox import OutboxWorker

    outbox, grouping = _grouped(fake, clock, tmp_path)
    outbox.enqueue("ops", lost(1), grouping)
    worker = OutboxWorker(outbox)
    worker.start()
    worker.stop()
    assert notices_in(fake) == Counter({"T0001": 1})


def test_routes_carry_alertmanager_style_timers(tmp_path):
    path = tmp_path / "robots.yml"
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\nroutes:\n"
                    "  - {name: fast, match: {severity: critical}, robots: [ops],"
                    " group_by: [alert], group_wait: 5s, group_interval: 1m,"
                    " repeat_interval: 0}\n  - {name: default, robots: [ops]}\n")
    config = load_robots(path, {"U": "https://example.test/hook?key=k"})
    ((_, fast),) = config.deliveries({"alert": "x", "severity": "critical"})
    ((_, default),) = config.deliveries({"alert": "x", "severity": "warning"})
    assert (fast.by, fast.wait_s, fast.interval_s, fast.repeat_s) == (("alert",), 5, 60, 0)
    assert (default.wait_s, default.interval_s, default.repeat_s) == (30, 300, 4 * 3600)
    path.write_text("robots:\n  ops: {kind: wecom, url_env: U}\nroutes:\n"
                    "  - {robots: [ops], group_wait: soon}\n")
    with pytest.raises(ConfigError, match="group_wait"):
        load_robots(path, {"U": "https://example.test/hook?key=k"})
