"""Which robots exist and which alerts go to which: `robots.yml`, secrets from the env.

The file names environment variables, never holds URLs or secrets itself:

    robots:
      ops:  {kind: wecom, url_env: ORDERWATCH_WECOM_OPS_URL, message: markdown}
      pay:  {kind: dingtalk, url_env: ORDERWATCH_DINGTALK_PAY_URL,
             secret_env: ORDERWATCH_DINGTALK_PAY_SECRET, keyword: OrderWatch,
             mention_mobiles: ["13800000000"]}
    routes:                      # first match wins; `continue: true` goes on matching
      - {name: critical, match: {severity: critical}, robots: [ops, pay], continue: true,
         group_wait: 10s}
      - {name: default, robots: [ops]}

Each route may set Alertmanager's `group_by`, `group_wait` (30s), `group_interval` (5m)
and `repeat_interval` (4h, 0 for none); see `grouping.py`.

A robot whose URL variable is unset or empty is switched off (and said so at start).
As Alertmanager does with its own file, a key the file does not know is refused: a typo
(`mach:`) or a feature it lacks (`match_re:`) would otherwise route every alert.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

from orderwatch.alerts.grouping import Grouping
from orderwatch.config import LANGUAGES, ConfigError
from orderwatch.durations import parse_duration

KINDS = {"wecom": ("markdown", "text"), "dingtalk": ("markdown", "text", "action_card")}


@dataclass(frozen=True, slots=True)
class RobotConfig:
    name: str
    kind: str
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    keyword: str | None = None
    mention_mobiles: tuple[str, ...] = ()
    message: str = "markdown"
    language: str = "zh"
    dashboard_url: str | None = None  # the actionCard button and message links


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    robots: tuple[str, ...]
    match: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    go_on: bool = False
    grouping: Grouping = field(default_factory=Grouping)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) in values for key, values in self.match.items())


WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


@dataclass(frozen=True, slots=True)
class WeeklySchedule:
    """When the weekly health check goes out, and to which robots (None: all)."""

    weekday: int = 0  # Monday
    hour: int = 10
    minute: int = 0
    robots: tuple[str, ...] | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class RobotsConfig:
    robots: Mapping[str, RobotConfig]
    routes: tuple[Route, ...]
    # configured, but their URL variable is empty: robot → the variable
    disabled: Mapping[str, str] = field(default_factory=dict)
    weekly: WeeklySchedule = field(default_factory=WeeklySchedule)

    def weekly_robots(self) -> tuple[str, ...]:
        """The robots the weekly report goes to: those `weekly:` names (default all) that
        are switched on."""
        return tuple(n for n in self.weekly.robots or self.robots if n in self.robots)

    def switched_off(self) -> str:
        """The robots switched off, and why: "pay ($ORDERWATCH_DINGTALK_PAY_URL is empty)"."""
        return ", ".join(f"{name} (${var} is empty)" for name, var in self.disabled.items())

    def deliveries(self, labels: Mapping[str, str]) -> list[tuple[RobotConfig, Grouping]]:
        """Robots for an alert (labels include `alert` and `severity`), in route order,
        each with the grouping of the first route that named it."""
        chosen: dict[str, Grouping] = {}
        for route in self.routes:
            if route.matches(labels):
                for name in route.robots:
                    chosen.setdefault(name, route.grouping)
                if not route.go_on:
                    break
        return [(self.robots[n], g) for n, g in chosen.items() if n in self.robots]

    def robots_for(self, labels: Mapping[str, str]) -> list[RobotConfig]:
        return [robot for robot, _ in self.deliveries(labels)]

    def route(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: what it found, and where (1-based, as editors count)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


TOP_KEYS = ("robots", "routes", "weekly")
ROBOT_KEYS = ("kind", "url_env", "secret_env", "keyword", "mention_mobiles", "message",
              "language", "dashboard_url")
ROUTE_KEYS = ("name", "match", "robots", "continue", "group_by", "group_wait",
              "group_interval", "repeat_interval")
WEEKLY_KEYS = ("at", "robots")


# The query parameter that names the robot in each service's webhook URL.
URL_CREDENTIAL = {"wecom": "key", "dingtalk": "access_token"}


def _check_webhook_url(url: str, kind: str, where: str) -> None:
    """Refused here rather than retried for minutes at send time: no host (`http://`), a
    bad port, or the URL without the parameter that says which robot it is."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is no number)
    except ValueError as exc:
        raise ConfigError(f"{where} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} is not an http(s) URL with a host")
    credential = URL_CREDENTIAL[kind]
    if not parse_qs(parts.query).get(credential):
        raise ConfigError(f"{where} has no {credential}=… in its query: copy the whole "
                          f"webhook URL the {kind} robot's settings show")


def _mapping(value: object, where: str, known: tuple[str, ...], example: str) -> dict:
    """`value` as a mapping with no key outside `known`."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping such as {example}")
    unknown = [str(k) for k in value if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)} (known: {', '.join(known)})")
    return value


def _names(value: object, where: str, what: str) -> tuple[str, ...]:
    """A YAML list of names or numbers, e.g. robots: [ops, pay] or mobiles."""
    if not isinstance(value, list) or not all(
            isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: {what} must be a list such as [a, b], got {value!r}")
    return tuple(str(v) for v in value)


def _robot_names(value: object, where: str, robots: dict) -> tuple[str, ...]:
    """`robots: [ops, pay]` of a route or of `weekly:`: names the file defines."""
    names = _names(value, where, "robots")
    unknown = [n for n in names if n not in robots]
    if unknown:
        raise ConfigError(f"{where}: names unknown robots {unknown}")
    return names


def load_robots(path: str | Path, env: Mapping[str, str] | None = None) -> RobotsConfig:
    env = os.environ if env is None else env
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read robots file {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"robots file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"robots file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("robots"), dict):
        raise ConfigError(f"{path}: needs a `robots:` mapping")
    _mapping(doc, str(path), TOP_KEYS, "{robots: …, routes: […]}")
    robots, disabled = {}, {}
    for name, spec in doc["robots"].items():
        robot = _robot(str(name), spec or {}, env, path)
        if robot is None:
            disabled[str(name)] = spec["url_env"]
        else:
            robots[robot.name] = robot
    specs = doc.get("routes") or [{"robots": list(robots)}]
    if not isinstance(specs, list):
        raise ConfigError(f"{path}: routes must be a list of routes such as "
                          "- {name: default, robots: [ops]}")
    routes = tuple(_route(i, spec, doc["robots"], path) for i, spec in enumerate(specs))
    named = [r.name for r in routes]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:  # the relay posts to a route by name: the second would be unreachable
        raise ConfigError(f"{path}: route names must be unique: {', '.join(twice)}")
    weekly = _weekly(doc.get("weekly") or {}, doc["robots"], path)
    return RobotsConfig(robots, routes, disabled, weekly)


def _weekly(spec: dict, robots: dict, path) -> WeeklySchedule:
    """`weekly: {at: "MON 10:00", robots: [ops]}`; `at: off` switches it off."""
    where = f"{path}: weekly"
    _mapping(spec, where, WEEKLY_KEYS, "{at: MON 10:00}")
    names = spec.get("robots")
    if names is not None:
        names = _robot_names(names, where, robots)
    at = str(spec.get("at", "MON 10:00")).strip().upper()
    if at == "OFF" or spec.get("at") is False:
        return WeeklySchedule(robots=names, enabled=False)
    day, _, clock = at.partition(" ")
    hour, _, minute = clock.partition(":")
    if day not in WEEKDAYS or not (hour.isdigit() and minute.isdigit()) \
            or int(hour) > 23 or int(minute) > 59:
        raise ConfigError(f"{where}: at must look like MON 10:00, got {spec.get('at')!r}")
    return WeeklySchedule(WEEKDAYS.index(day), int(hour), int(minute), names)


def _robot(name: str, spec: dict, env: Mapping[str, str], path) -> RobotConfig | None:
    where = f"{path}: robot {name!r}"
    if isinstance(spec, dict) and ("url" in spec or "secret" in spec):
        raise ConfigError(f"{where}: put the URL and secret in environment variables "
                          "(url_env, secret_env), not in the file")
    _mapping(spec, where, ROBOT_KEYS, "{kind: wecom, url_env: ORDERWATCH_WECOM_OPS_URL}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}")
    url_env = spec.get("url_env")
    if not url_env:
        raise ConfigError(f"{where}: url_env (the variable holding the webhook URL) is missing")
    url = env.get(url_env, "").strip()
    if not url:
        return None
    _check_webhook_url(url, kind, f"{where}: ${url_env}")
    secret = env.get(spec["secret_env"], "").strip() or None if spec.get("secret_env") else None
    if spec.get("secret_env") and not secret:
        raise ConfigError(f"{where}: ${spec['secret_env']} (the signing secret) is empty")
    message = spec.get("message", "markdown")
    if message not in KINDS[kind]:
        raise ConfigError(f"{where}: message must be one of {', '.join(KINDS[kind])}")
    language = spec.get("language", "zh")
    if language not in LANGUAGES:
        raise ConfigError(f"{where}: language must be zh or en")
    mobiles = _names(spec.get("mention_mobiles") or [], where, "mention_mobiles")
    return RobotConfig(name, kind, url, secret, spec.get("keyword"), mobiles, message,
                       language, spec.get("dashboard_url"))


def _route(index: int, spec: object, robots: dict, path) -> Route:
    spec = _mapping(spec, f"{path}: route {index + 1}", ROUTE_KEYS,
                    "{name: default, robots: [ops]}")
    name = str(spec.get("name") or f"route{index + 1}")  # as the errors count them
    where = f"{path}: route {name!r}"
    names = _robot_names(spec.get("robots") or [], where, robots)
    match = spec.get("match") or {}
    if not isinstance(match, dict):
        raise ConfigError(f"{where}: match must be a mapping such as {{severity: critical}}")
    go_on = spec.get("continue", False)
    if not isinstance(go_on, bool):
        raise ConfigError(f"{where}: continue must be true or false, got {go_on!r}")
    return Route(name, names, {str(k): _match_values(v, where, k) for k, v in match.items()},
                 go_on, _grouping(spec, where))


def _match_values(value: object, where: str, label: object) -> tuple[str, ...]:
    """A label value, or a list of them (any one matches). A mapping or `null` used to
    be matched as its Python spelling ("{'a': 1}", "None"), which no label has."""
    if isinstance(value, list):
        return _names(value, where, f"match {label}")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return (str(value),)
    hint = " (quote it: 'true')" if isinstance(value, bool) else ""
    raise ConfigError(f"{where}: match {label} must be a label value or a list of them, "
                      f"got {value!r}{hint}")


def _grouping(spec: dict, where: str) -> Grouping:
    default = Grouping()
    by = spec.get("group_by", list(default.by))
    if not isinstance(by, list) or not all(isinstance(x, str) for x in by):
        raise ConfigError(f"{where}: group_by must be a list of label names")
    def seconds(key: str, default: float) -> float:
        try:
            return parse_duration(spec.get(key, default))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from None

    return Grouping(tuple(by), seconds("group_wait", default.wait_s),
                    seconds("group_interval", default.interval_s),
                    seconds("repeat_interval", default.repeat_s))
