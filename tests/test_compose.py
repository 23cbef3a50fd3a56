"""docker-compose.yml as far as it can be checked without a Docker engine: the file, every
file it mounts, every reference between services, the configs with promtool and amtool,
and every OrderWatch command line with OrderWatch's own parser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from orderwatch.cli import build_parser

from conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _mounts(service: dict) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out.append((source, target))
    return out


def test_every_service_has_an_image_and_its_dependencies_exist():
    for name, service in SERVICES.items():
        assert "image" in service or "build" in service, name
        deps = service.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
    assert (REPO / "Dockerfile").is_file()
    assert {"kafka", "clickhouse", "prometheus", "alertmanager", "grafana", "orderwatch",
            "relay", "simulator"} <= set(SERVICES)
    assert SERVICES["simulator"]["profiles"] == ["demo"]


def test_every_mounted_file_exists_and_named_volumes_and_secrets_are_declared():
    for name, service in SERVICES.items():
        for source, _ in _mounts(service):
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in COMPOSE["volumes"], f"{name} uses undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret in COMPOSE["secrets"], f"{name} uses undeclared secret {secret}"


def test_kafka_runs_in_kraft_mode_and_the_topics_are_created():
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "zookeeper" not in str(COMPOSE).lower()
    script = SERVICES["kafka-topics"]["command"][0]
    for topic in ("orders", "callbacks", "logistics", "orderwatch.dead_letters"):
        assert topic in script


def test_orderwatch_command_lines_parse_with_orderwatch_s_own_parser():
    parser = build_parser()
    for name in ("orderwatch", "relay", "simulator"):
        args = parser.parse_args(SERVICES[name]["command"])
        assert args.command == {"orderwatch": "consume", "relay": "relay",
                                "simulator": "simulate"}[name]
    consume = parser.parse_args(SERVICES["orderwatch"]["command"])
    assert consume.brokers == "kafka:9092" and consume.recovery_directory


def _container_path(service: str, path: str) -> Path:
    """Where a file the container sees comes from in this repository."""
    for source, target in _mounts(SERVICES[service]):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return REPO / source / Path(path).relative_to(target) if path != target \
                else REPO / source
    raise AssertionError(f"{service} does not mount {path}")


def _flag(command: list[str], flag: str) -> str:
    return next(c.split("=", 1)[1] for c in command if c.startswith(flag + "="))


def test_prometheus_config_is_valid_and_scrapes_the_orderwatch_service():
    config = _container_path("prometheus", _flag(SERVICES["prometheus"]["command"],
                                                 "--config.file"))
    result = subprocess.run([shutil.which("promtool") or "promtool", "check", "config",
                             str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules found" in result.stdout  # the rule file was found and checked too
    scraped = yaml.safe_load(config.read_text())
    target = scraped["scrape_configs"][0]["static_configs"][0]["targets"][0]
    host, port = target.split(":")
    assert host in SERVICES
    assert str(SERVICES[host]["environment"]["ORDERWATCH_METRICS_PORT"]) == port
    alertmanager = scraped["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert alertmanager.split(":")[0] in SERVICES


def test_alertmanager_config_is_valid_and_delivers_to_the_relay():
    config = _container_path("alertmanager", _flag(SERVICES["alertmanager"]["command"],
                                                   "--config.file"))
    result = subprocess.run([shutil.which("amtool") or "amtool", "check-config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    relay_args = build_parser().parse_args(SERVICES["relay"]["command"])
    for receiver in yaml.safe_load(config.read_text())["receivers"]:
        for hook in receiver["webhook_configs"]:
            url = urlsplit(hook["url"])
            assert url.hostname == "relay" and url.port == relay_args.port
            assert re.fullmatch(r"/alertmanager/[a-z-]+", url.path)
            token = hook["http_config"]["authorization"]["credentials_file"]
            assert token == "/run/secrets/relay_token"


def test_grafana_provisioning_points_at_the_services_and_the_dashboards():
    datasources = yaml.safe_load(_container_path(
        "grafana", "/etc/grafana/provisioning/datasources/orderwatch.yml").read_text())
    hosts = {urlsplit(d["url"]).hostname if "url" in d else d["jsonData"]["host"]
             for d in datasources["datasources"]}
    assert hosts == {"prometheus", "clickhouse"}
    provider = yaml.safe_load(_container_path(
        "grafana", "/etc/grafana/provisioning/dashboards/orderwatch.yml").read_text())
    folder = _container_path("grafana", provider["providers"][0]["options"]["path"])
    assert len(list(folder.glob("*.json"))) == 6


@pytest.mark.parametrize("variable", ["CLICKHOUSE_PASSWORD", "ORDERWATCH_RELAY_TOKEN",
                                      "GRAFANA_ADMIN_PASSWORD"])
def test_secrets_come_from_the_environment_not_the_files(variable):
    text = (REPO / "docker-compose.yml").read_text()
    assert variable in text and variable in (REPO / ".env.example").read_text()
    assert (REPO / ".env").exists() is False or ".env" in (REPO / ".gitignore").read_text()
