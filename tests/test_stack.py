"""docker-compose.yml, the Dockerfile and the provisioning files they mount, checked without
Docker (it cannot run here): every referenced file exists, every port and service lines up, and
the Prometheus config, with the compose mounts applied, passes `promtool check config`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from prom_helpers import DASHBOARDS, ROOT, dashboard_files, needs_promtool, promtool

from exporter.settings import load_settings

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        assert source.startswith("./"), volume
        found[target] = ROOT / source
    return found


def _host_path(mounts: dict[str, Path], container_path: str) -> Path:
    """The host file behind a container path, through the longest mount that contains it."""
    for target in sorted(mounts, key=len, reverse=True):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return mounts[target] / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted")


def _published(service: dict[str, Any]) -> dict[int, int]:
    return {
        int(container): int(host)
        for host, container in (port.split(":") for port in service.get("ports", []))
    }


def test_services_and_dependencies() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "demo", "prometheus", "grafana"}
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
        for target, host in _mounts(service).items():
            assert host.exists(), f"{name}: {host} (mounted at {target}) does not exist"
    assert services["demo"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_preloads_and_creates_pg_stat_statements() -> None:
    postgres = _compose()["services"]["postgres"]
    assert "shared_preload_libraries=pg_stat_statements" in postgres["command"]
    init = [
        host
        for target, host in _mounts(postgres).items()
        if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    assert init
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in init[0].read_text()
    env = postgres["environment"]
    demo_url = _compose()["services"]["demo"]["environment"]["DATABASE_URL"]
    assert demo_url == (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{env['POSTGRES_DB']}"
    )


def test_demo_is_built_here_and_serves_where_prometheus_scrapes() -> None:
    services = _compose()["services"]
    demo = services["demo"]
    assert demo["build"] == "."
    assert (ROOT / demo["build"] / "Dockerfile").exists()
    assert demo["command"][0] == "demo"
    port = int(demo["command"][demo["command"].index("--listen") + 1].rsplit(":", 1)[1])
    assert port in _published(demo)

    prometheus = services["prometheus"]
    mounts = _mounts(prometheus)
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = _host_path(mounts, config_flag.split("=", 1)[1])
    config = yaml.safe_load(config_path.read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"demo:{port}"]}]
    [rules] = config["rule_files"]
    assert _host_path(mounts, rules).resolve() == (DASHBOARDS / "alerts.yml").resolve()
    assert 9090 in _published(prometheus)


@needs_promtool
def test_prometheus_config_passes_promtool_with_the_compose_mounts(tmp_path: Path) -> None:
    prometheus = _compose()["services"]["prometheus"]
    mounts = _mounts(prometheus)
    config = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    config["rule_files"] = [str(_host_path(mounts, path)) for path in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    code, output = promtool("check", "config", str(copy))
    assert code == 0, output
    assert "SUCCESS" in output


def test_grafana_provisions_the_datasource_and_every_dashboard() -> None:
    services = _compose()["services"]
    grafana = services["grafana"]
    mounts = _mounts(grafana)
    assert 3000 in _published(grafana)
    provisioning = _host_path(mounts, "/etc/grafana/provisioning")

    [datasource_file] = (provisioning / "datasources").glob("*.yml")
    [datasource] = yaml.safe_load(datasource_file.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", datasource["url"]).groups()  # type: ignore[union-attr]
    assert host in services
    assert int(port) in _published(services[host])

    [provider_file] = (provisioning / "dashboards").glob("*.yml")
    [provider] = yaml.safe_load(provider_file.read_text())["providers"]
    assert provider["type"] == "file"
    folder = _host_path(mounts, provider["options"]["path"])
    assert folder.resolve() == DASHBOARDS.resolve()
    assert {p.name for p in folder.glob("*.json")} == {p.name for p in dashboard_files()}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert _host_path(mounts, home).exists()


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_dockerfile_is_small_non_root_with_a_healthcheck() -> None:
    instructions = _instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2, "a build stage and a slim runtime stage"
    assert all(stage.split()[0].endswith("-slim") for stage in stages)

    for keyword, rest in instructions:
        if keyword == "COPY" and not rest.startswith("--from="):
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the context"

    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users
    uid, _, gid = users[-1].partition(":")
    assert int(uid) > 0
    assert not gid or int(gid) > 0

    [expose] = [rest for keyword, rest in instructions if keyword == "EXPOSE"]
    [healthcheck] = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert "CMD" in healthcheck
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert f"HEALTHCHECK_URL=http://127.0.0.1:{expose}/healthz" in env

    # The default command is configured from the environment alone (as postgres_exporter's image
    # is) and listens on EXPOSE; the documented config file is in the image for `--config`.
    [cmd] = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert yaml.safe_load(cmd) == ["serve"]
    settings = load_settings(env={"DATA_SOURCE_NAME": "postgresql://u@db:5432/app"})
    assert settings.server.listen.endswith(f":{expose}")
    assert [db.name for db in settings.databases] == ["main"]
    copied = [shlex.split(rest)[-1] for keyword, rest in instructions if keyword == "COPY"]
    assert "/etc/db-exporter/exporter.yaml" in copied


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ".git" in ignored
    assert ".venv*" in ignored
    for keyword, rest in _instructions():  # nothing the Dockerfile copies is ignored
        if keyword == "COPY" and not rest.startswith("--from="):
            for source in shlex.split(rest)[:-1]:
                assert not any(Path(source).match(pattern) for pattern in ignored), source
