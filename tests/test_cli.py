"""The command line as a user runs it: real subprocesses, real ports, real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from processes import get, processes_mentioning
from prometheus_client.parser import text_string_to_metric_families
from sockets import free_port
from sqlalchemy.engine import URL
from subprocesses import (
    assert_one_line_error,
    assert_slow_query_records_only,
    chatter,
    log_records,
    run_cli,
    running,
)

from exporter.demo.embedded import embedded_postgres


def samples(body: str) -> dict[str, float]:
    """Each metric's samples summed over their labels, by sample name."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            sums[s.name] = sums.get(s.name, 0.0) + s.value
    return sums


def env_without_database() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "exporter.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.embedded
def test_demo_serves_live_data_and_stops_cleanly() -> None:
    with running("demo", "--listen", "127.0.0.1:0", env=env_without_database()) as demo:
        directory = demo.wait_for(r"embedded PostgreSQL running in (\S+)").group(1)
        url = demo.wait_for(r"serving (http://\S+)/metrics").group(1)
        seen_active = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, body = get(f"{url}/metrics")
            assert status == 200
            values = samples(body)
            seen_active = max(seen_active, values.get("db_connections_active", 0.0))
            if (
                values.get("query_duration_seconds_count", 0) > 0
                and values.get("db_pool_overflow_total", 0) > 0
                and seen_active > 0
                and values.get("pg_stat_statements_calls_total", 0) > 0
            ):
                break
            time.sleep(0.25)
        assert values["query_duration_seconds_count"] > 0
        assert values["db_pool_overflow_total"] > 0
        assert seen_active > 0
        # The embedded server preloads pg_stat_statements and the demo installs it: the
        # top-statements panel has data on a newcomer's first run.
        assert values["pg_stat_statements_available"] == 1
        assert values["pg_stat_statements_calls_total"] > 0
        deadline = time.monotonic() + 20
        while get(f"{url}/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.25)
        assert get(f"{url}/readyz")[0] == 200, "".join(demo.output)
        assert Path(directory).exists()

        demo.wait_for(r'"kind": "slow_query"')
        assert demo.stop(signal.SIGINT) == 0
    # stdout: slow-query records alone; stderr: log records, the embedded server's quiet.
    assert_slow_query_records_only(demo.out_lines)
    records = log_records(demo.err_lines, "text")
    assert records[-1]["message"] == "stopped"
    assert chatter(records) == []
    assert not Path(directory).exists()
    assert processes_mentioning(directory) == []


def test_serve_survives_an_absent_database_and_connects_when_it_appears(tmp_path: Path) -> None:
    workdir = tempfile.mkdtemp(prefix="dbx-")
    config = write_config(
        tmp_path,
        "databases:\n"
        "  - name: main\n"
        f"    dsn: postgresql://postgres@/postgres?host={workdir}/pgdata\n"
        "    check_interval_seconds: 0.3\n"
        "    check_timeout_seconds: 2\n",
    )
    port = free_port()
    try:
        with running("serve", "--config", config, "--listen", f"127.0.0.1:{port}") as serve:
            url = serve.wait_for(r"serving (http://\S+)/metrics").group(1)
            time.sleep(0.5)
            assert get(f"{url}/healthz")[0] == 200
            status, body = get(f"{url}/readyz")
            assert status == 503
            assert '"main"' in body
            status, body = get(f"{url}/metrics")
            assert status == 200
            assert 'db_up{database="main"} 0.0' in body

            with embedded_postgres(workdir):
                deadline = time.monotonic() + 20
                while get(f"{url}/readyz")[0] != 200 and time.monotonic() < deadline:
                    time.sleep(0.2)
                # The embedded server restarts once while it starts (to preload a library), so
                # a 200 seen at once may predate that; after 3 more check intervals it cannot.
                time.sleep(1.0)
                assert get(f"{url}/readyz") == (
                    200,
                    '{"status": "ready", "databases": {"main": "ok"}}',
                )
                assert 'db_up{database="main"} 1.0' in get(f"{url}/metrics")[1]
                assert serve.stop(signal.SIGTERM) == 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("listen", ["9188", "localhost", "127.0.0.1:99999"])
def test_bad_listen_flag_is_one_clear_line(tmp_path: Path, listen: str) -> None:
    config = write_config(tmp_path, "")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", config, "--listen", listen],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("db-exporter: error: --listen: ")
    assert "expected HOST:PORT" in lines[0]


def test_config_error_has_no_traceback_unless_debug(tmp_path: Path) -> None:
    missing = str(tmp_path / "absent.yaml")
    plain = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", missing],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert plain.returncode == 2
    assert plain.stderr == f"db-exporter: error: {missing}: no such file\n"
    debug = subprocess.run(
        [sys.executable, "-m", "exporter", "--debug", "serve", "--config", missing],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr


def test_demo_with_a_bad_database_url_is_one_clear_line() -> None:
    env = env_without_database() | {"DATABASE_URL": "mysql://root:pw@127.0.0.1/app"}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "demo", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "db-exporter: error: DATABASE_URL: unsupported scheme mysql:// (use one of postgresql://, "
        "postgres://, postgresql+asyncpg://, postgresql+psycopg://)"
    ]
    assert "pw@" not in result.stderr + result.stdout


# --- Configuration from the environment -----------------------------------------------------

SECRET = "canary-s3cret-pw"


def env_without_configuration() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "DATA_SOURCE_NAME", "DB_EXPORTER_"))
    }


def wait_ready(url: str, timeout: float = 20) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while (answer := get(f"{url}/readyz"))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    return answer


def test_serve_watches_database_url_alone_with_the_defaults(database_url: URL) -> None:
    env = env_without_configuration() | {
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "DB_EXPORTER_SERVER__LISTEN": "127.0.0.1:1",  # the --listen flag wins over it
    }
    port = free_port()
    with running("serve", "--listen", f"127.0.0.1:{port}", env=env) as serve:
        url = serve.wait_for(r"serving (http://\S+)/metrics").group(1)
        assert url == f"http://127.0.0.1:{port}"
        assert wait_ready(url) == (200, '{"status": "ready", "databases": {"main": "ok"}}')
        assert 'db_up{database="main"} 1.0' in get(f"{url}/metrics")[1]
        assert serve.stop(signal.SIGTERM) == 0
    assert not [line for line in serve.output if "WARNING" in line]


def test_serve_freezes_what_start_up_loaded(database_url: URL) -> None:
    env = env_without_configuration() | {
        "DATABASE_URL": database_url.render_as_string(hide_password=False)
    }
    listen = f"127.0.0.1:{free_port()}"
    with running("--log-level", "debug", "serve", "--listen", listen, env=env) as serve:
        frozen = int(serve.wait_for(r"froze (\d+) objects that start-up loaded").group(1))
        serve.wait_for(r"serving http://\S+/metrics")  # frozen before it says it serves
        assert serve.stop(signal.SIGTERM) == 0
    assert frozen > 50_000  # modules, functions, classes: ~110,000 here


def test_serve_reads_its_dsn_from_a_secret_file_and_warns_once_about_app_sections(
    database_url: URL, tmp_path: Path
) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(database_url.set(password=SECRET).render_as_string(False) + "\n")
    env = env_without_configuration() | {
        "DATA_SOURCE_NAME_FILE": str(secret),
        "DB_EXPORTER_DATABASES__0__NAME": "wallet",
        "DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS": "250",
        "DB_EXPORTER_INSTRUMENTATION__MAX_LABEL_SETS": "50",
    }
    with running("serve", "--listen", f"127.0.0.1:{free_port()}", env=env) as serve:
        url = serve.wait_for(r"serving (http://\S+)/metrics").group(1)
        ready = wait_ready(url)
        assert ready == (200, '{"status": "ready", "databases": {"wallet": "ok"}}')
        metrics = get(f"{url}/metrics")[1]
        assert 'db_up{database="wallet"} 1.0' in metrics
        assert serve.stop(signal.SIGTERM) == 0
    [warning] = [line for line in serve.output if "WARNING" in line]
    assert "db-exporter serve ignores instrumentation, slow_queries: these settings apply to " \
        "engines instrumented in the application" in warning  # fmt: skip
    assert SECRET not in "".join(serve.output) + ready[1] + metrics


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DB_EXPORTER_SERVER__LISTN": "127.0.0.1:9300"},
            "DB_EXPORTER_SERVER__LISTN (server.listn): unknown key",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__CHECK_TIMEOUT_SECONDS": "soon"},
            "DB_EXPORTER_DATABASES__0__CHECK_TIMEOUT_SECONDS (databases[0].check_timeout_seconds)",
        ),
        (
            {"DB_EXPORTER_SERVER__WEB_CONFIG_FILE_FILE": "/run/secrets/absent"},
            "DB_EXPORTER_SERVER__WEB_CONFIG_FILE_FILE: cannot read '/run/secrets/absent': "
            "No such file or directory",
        ),
        (
            {"DB_EXPORTER_LOG_LEVEL_FILE": "{tmp}"},
            "DB_EXPORTER_LOG_LEVEL_FILE: cannot read '{tmp}': Is a directory",
        ),
        (
            {"DATABASE_URL_FILE": "{tmp}/dsn"},
            "DATABASE_URL and DATABASE_URL_FILE are both set; set one of them",
        ),
        (
            {"DATABASE_URL": None},
            "nothing to watch: give a config file, or set DATABASE_URL (or DATA_SOURCE_NAME)",
        ),
    ],
)
def test_serve_refuses_a_bad_environment_before_starting_anything(
    clean_environment: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    env: dict[str, str | None],
    message: str,
) -> None:
    (tmp_path / "dsn").write_text(f"postgresql://app:{SECRET}@db/app\n")
    clean_environment.setenv("DATABASE_URL", f"postgresql://app:{SECRET}@db/app")
    for name, value in env.items():
        if value is None:
            clean_environment.delenv(name)
        else:
            clean_environment.setenv(name, value.format(tmp=tmp_path))
    threads = threading.enumerate()
    port = free_port()

    code, out, err = run_cli(capsys, "serve", "--listen", f"127.0.0.1:{port}")

    assert_one_line_error(code, err, message.format(tmp=tmp_path))
    assert out == ""
    assert SECRET not in out + err
    assert threading.enumerate() == threads
    with socket.socket() as probe:  # nothing listens on it
        probe.bind(("127.0.0.1", port))


def test_serve_with_no_configuration_at_all_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve"],
        capture_output=True, text=True, timeout=60, env=env_without_configuration(),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        "db-exporter: error: nothing to watch: give a config file, or set DATABASE_URL "
        "(or DATA_SOURCE_NAME)\n"
    )
    assert result.stdout == ""
