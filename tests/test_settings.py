"""Config loading and `db-exporter check-config`: every bad input gives one clear line, exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subprocesses import assert_one_line_error, run_cli

from exporter.dsn import DsnError, async_url, masked, parse_dsn, sync_url
from exporter.environment import PREFIX
from exporter.instrumentation.budget import LabelLimits
from exporter.settings import (
    ConfigError,
    DatabaseSettings,
    load_settings,
    settings_from_data,
    sidecar_ignored,
)

REPO = Path(__file__).resolve().parent.parent
SECRET = "canary-s3cret-pw"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exporter.yaml"
    path.write_text(text)
    return path


def test_shipped_default_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = load_settings(REPO / "config" / "exporter.yaml")
    assert settings.server.listen == "0.0.0.0:9188"
    assert [db.name for db in settings.databases] == ["main"]
    assert settings.databases[0].check_interval_seconds == 15


def test_env_expansion_with_and_without_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server:\n  listen: ${LISTEN:-127.0.0.1:9999}\n"
        "databases:\n  - name: main\n    dsn: ${DB_URL}\n",
    )
    settings = load_settings(path, env={"DB_URL": "postgres://u:p@db:5432/app"})
    assert settings.server.listen == "127.0.0.1:9999"
    assert settings.databases[0].dsn == "postgres://u:p@db:5432/app"
    settings = load_settings(path, env={"DB_URL": "postgres://db/app", "LISTEN": "[::1]:1234"})
    assert settings.server.listen == "[::1]:1234"


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "databases:\n  - name: main\n    dsn: ${DB_URL}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert str(error.value) == f"{path}: databases[0].dsn: environment variable DB_URL is not set"


def test_check_config_prints_effective_config_with_password_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f"databases:\n  - name: main\n    dsn: postgresql://app:{SECRET}@db.internal:5432/wallet\n",
    )
    code, out, err = run_cli(capsys, "check-config", str(path))
    assert code == 0, err
    assert SECRET not in out + err
    assert "dsn: postgresql://app:***@db.internal:5432/wallet" in out
    assert "listen: 0.0.0.0:9188" in out
    assert "check_timeout_seconds: 5.0" in out


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code, _, err = run_cli(capsys, "check-config", str(missing))
    assert_one_line_error(code, err, str(missing), "no such file")


def test_yaml_syntax_error_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "server:\n  listen: 0.0.0.0:9188\ndatabases: [\n  {name: main\n")
    code, _, err = run_cli(capsys, "check-config", str(path))
    assert_one_line_error(code, err, f"{path}:5:", "YAML syntax error")


def test_unknown_key_names_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "databases:\n  - name: main\n    dsn: postgresql://h/db\n    dsnn: x\n")
    code, _, err = run_cli(capsys, "check-config", str(path))
    assert_one_line_error(code, err, str(path), "databases[0].dsnn: unknown key")

    path = write(tmp_path, "sever:\n  listen: 0.0.0.0:1\n")
    code, _, err = run_cli(capsys, "check-config", str(path))
    assert_one_line_error(code, err, "sever: unknown key")


def test_unsupported_dsn_scheme_never_echoes_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, f"databases:\n  - name: main\n    dsn: mysql://root:{SECRET}@db:3306/app\n"
    )
    code, _, err = run_cli(capsys, "check-config", str(path))
    assert_one_line_error(code, err, "databases[0].dsn: unsupported scheme mysql://")
    assert SECRET not in err


@pytest.mark.parametrize("listen", [f"postgresql://app:{SECRET}@db:5432/app", f"h:{SECRET}", "h:²"])
def test_a_bad_listen_address_is_not_echoed(listen: str) -> None:
    # A DSN set as the listen address by mistake must not show its password in the error.
    with pytest.raises(ConfigError) as error:
        load_settings(
            env={"DB_EXPORTER_SERVER__LISTEN": listen, "DATABASE_URL": "postgresql://h/d"}
        )
    assert "DB_EXPORTER_SERVER__LISTEN (server.listen): expected HOST:PORT" in str(error.value)
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server:\n  listen: 9188\n", "server.listen: Input should be a valid string"),
        ("server:\n  listen: localhost:http\n", "expected HOST:PORT"),
        ("log_level: LOUD\n", "log_level: Input should be"),
        ("databases:\n  - name: 'bad name'\n    dsn: postgresql://h/d\n", "databases[0].name"),
        ("databases:\n  - name: a\n", "databases[0].dsn: Field required"),
        (
            "databases:\n  - {name: a, dsn: 'postgresql://h/d'}\n  - {name: a, dsn: 'postgresql://h/e'}\n",
            "database names must be unique, repeated: a",
        ),
        (
            "databases:\n  - {name: a, dsn: 'postgresql://h/d', check_interval_seconds: 0}\n",
            "greater than 0",
        ),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("slow_queries:\n  records_per_second: -1\n", "records_per_second must be at least 0"),
        (
            "server:\n  page:\n    grafana_url: 'javascript:alert(1)'\n",
            "server.page.grafana_url: must be an absolute http(s) URL without a #fragment",
        ),
        (
            "server:\n  page:\n    runbook_base_url: 'https://docs/run.md#x'\n",
            "server.page.runbook_base_url: must be an absolute http(s) URL",
        ),
        ("server:\n  page:\n    colour: red\n", "server.page.colour: unknown key"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text), env={})
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


def test_page_links_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  page:\n    grafana_url: https://grafana.example.com\n")
    env = {"DB_EXPORTER_SERVER__PAGE__RUNBOOK_BASE_URL": "https://wiki.example.com/runbooks"}
    page = load_settings(path, env=env).server.page
    assert page.grafana_url == "https://grafana.example.com"
    assert page.runbook_base_url == "https://wiki.example.com/runbooks"
    assert load_settings(env={}).server.page.grafana_url is None


def test_empty_file_gives_defaults() -> None:
    settings = settings_from_data(None, "empty.yaml")
    assert settings.databases == ()
    assert settings.server.listen == "0.0.0.0:9188"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:p@h:5432/db",
        "postgres://u:p@h:5432/db",
        "postgresql+asyncpg://u:p@h:5432/db",
        "postgresql+psycopg://u:p@h:5432/db",
    ],
)
def test_dsn_forms_map_to_each_driver(dsn: str) -> None:
    assert async_url(dsn).render_as_string(hide_password=False) == (
        "postgresql+asyncpg://u:p@h:5432/db"
    )
    assert sync_url(dsn).render_as_string(hide_password=False) == (
        "postgresql+psycopg://u:p@h:5432/db"
    )


def test_dsn_errors_and_masking() -> None:
    with pytest.raises(DsnError, match="not a database URL"):
        parse_dsn("not a url")
    assert masked(parse_dsn(f"postgresql://u:{SECRET}@h/db")) == "postgresql://u:***@h/db"


def test_label_caps_come_from_the_config(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            "instrumentation:\n  max_label_sets: 300\n"
            "  max_label_sets_per_metric: {query_duration_seconds: 900}\n",
        )
    )
    limits = LabelLimits.from_settings(settings.instrumentation)
    assert limits.cap("query_duration_seconds") == 900
    assert limits.cap("anything_else") == 300


def test_a_cap_for_a_metric_without_one_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "instrumentation:\n  max_label_sets_per_metric: {db_up: 5}\n")
    with pytest.raises(
        ConfigError, match=r"instrumentation: max_label_sets_per_metric: 'db_up' has no cap"
    ):
        load_settings(path)


# --- Configuration from the environment -----------------------------------------------------

CANARY_DSN = f"postgresql://app:{SECRET}@db.internal:5432/wallet"


def test_database_url_alone_is_one_database_named_main() -> None:
    for variable in ("DATABASE_URL", "DATA_SOURCE_NAME"):
        settings = load_settings(env={variable: CANARY_DSN})
        assert settings.databases == (DatabaseSettings(name="main", dsn=CANARY_DSN),)
    renamed = load_settings(
        env={"DATA_SOURCE_NAME": CANARY_DSN, "DB_EXPORTER_DATABASES__0__NAME": "wallet"}
    )
    assert [db.name for db in renamed.databases] == ["wallet"]
    assert load_settings(env={}).databases == ()


def test_precedence_defaults_then_file_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server:\n  listen: 127.0.0.1:9300\n"
        "slow_queries:\n  threshold_ms: 150\n  max_sql_length: 500\n"
        "databases:\n  - name: wallet\n    dsn: postgresql://h/wallet\n",
    )
    env = {
        "DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS": "250",
        "DB_EXPORTER_SLOW_QUERIES__PLANS__ANALYZE": "true",
        "DB_EXPORTER_DATABASES__0__CHECK_INTERVAL_SECONDS": "5",
        "DB_EXPORTER_DATABASES__1__NAME": "ledger",
        "DB_EXPORTER_DATABASES__1__DSN": "postgresql://h/ledger",
        "DB_EXPORTER_INSTRUMENTATION__MAX_LABEL_SETS_PER_METRIC__QUERY_DURATION_SECONDS": "90",
        # The file lists databases: DATABASE_URL is the file's to use (${DATABASE_URL}).
        "DATABASE_URL": "postgresql://h/ignored",
    }
    settings = load_settings(path, env=env)
    assert settings.server.listen == "127.0.0.1:9300"  # file
    assert settings.slow_queries.threshold_ms == 250  # environment over file
    assert settings.slow_queries.max_sql_length == 500  # file
    assert settings.slow_queries.plans.analyze is True  # environment over default
    assert settings.slow_queries.n_plus_one_threshold == 10  # default
    assert [(db.name, db.dsn, db.check_interval_seconds) for db in settings.databases] == [
        ("wallet", "postgresql://h/wallet", 5),
        ("ledger", "postgresql://h/ledger", 15),
    ]
    assert settings.instrumentation.max_label_sets_per_metric == {"query_duration_seconds": 90}
    # The file's own `${VAR}` expansion still works beside it.
    expanded = write(tmp_path, "server:\n  listen: ${LISTEN}\n")
    listen = {"LISTEN": "127.0.0.1:1", "DB_EXPORTER_SERVER__LISTEN": "127.0.0.1:2"}
    assert load_settings(expanded, env=listen).server.listen == "127.0.0.1:2"


def test_list_items_are_numbered_not_sorted_as_text() -> None:
    env = {f"DB_EXPORTER_DATABASES__{i}__DSN": f"postgresql://h/d{i}" for i in range(12)}
    env |= {f"DB_EXPORTER_DATABASES__{i}__NAME": f"d{i}" for i in range(12)}
    names = [db.name for db in load_settings(env=env).databases]
    assert names == [f"d{i}" for i in range(12)]


def test_secret_files_give_values_without_their_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(CANARY_DSN + "\n")
    for variable in ("DATABASE_URL_FILE", "DATA_SOURCE_NAME_FILE"):
        [database] = load_settings(env={variable: str(secret)}).databases
        assert database.dsn == CANARY_DSN
    env = {
        "DB_EXPORTER_DATABASES__0__NAME": "wallet",
        "DB_EXPORTER_DATABASES__0__DSN_FILE": str(secret),
    }
    assert load_settings(env=env).databases[0].dsn == CANARY_DSN


def test_keys_whose_name_ends_in_file_are_keys_not_secrets(tmp_path: Path) -> None:
    log_path = tmp_path / "log-path"
    log_path.write_text("/var/log/slow.jsonl\n")
    env = {
        "DB_EXPORTER_SERVER__WEB_CONFIG_FILE": "/etc/db-exporter/web.yml",
        "DB_EXPORTER_SLOW_QUERIES__FILE_FILE": str(log_path),
    }
    settings = load_settings(env=env)
    assert settings.server.web_config_file == "/etc/db-exporter/web.yml"
    assert settings.slow_queries.file == "/var/log/slow.jsonl"


def test_kubernetes_service_links_are_not_settings() -> None:
    # Every pod gets these when a Service is named db-exporter.
    env = {
        "DB_EXPORTER_SERVICE_HOST": "10.0.0.7",
        "DB_EXPORTER_SERVICE_PORT": "9188",
        "DB_EXPORTER_SERVICE_PORT_METRICS": "9188",
        "DB_EXPORTER_PORT": "tcp://10.0.0.7:9188",
        "DB_EXPORTER_PORT_9188_TCP": "tcp://10.0.0.7:9188",
        "DB_EXPORTER_PORT_9188_TCP_PROTO": "tcp",
        "DB_EXPORTER_PORT_9188_TCP_PORT": "9188",
        "DB_EXPORTER_PORT_9188_TCP_ADDR": "10.0.0.7",
    }
    assert load_settings(env=env) == load_settings(env={})


def test_application_sections_set_anywhere_are_reported_for_the_sidecar(tmp_path: Path) -> None:
    assert sidecar_ignored(load_settings(env={"DATABASE_URL": CANARY_DSN})) == []
    from_file = write(tmp_path, "instrumentation:\n  max_label_sets: 10\n")
    assert sidecar_ignored(load_settings(from_file, env={})) == ["instrumentation"]
    env = {"DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS": "5"}
    assert sidecar_ignored(load_settings(from_file, env=env)) == [
        "instrumentation",
        "slow_queries",
    ]
    # The sidecar applies these to what workers hand over to it.
    env = {
        "DB_EXPORTER_SLOW_QUERIES__PLANS__ENABLED": "false",
        "DB_EXPORTER_SLOW_QUERIES__HANDOVER_DIR": str(tmp_path),
    }
    assert sidecar_ignored(load_settings(from_file, env=env)) == ["instrumentation"]


def unreadable_secret(tmp_path: Path) -> str:
    return str(tmp_path)  # a directory


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DB_EXPORTER_SLOW_QUERIES__TRESHOLD_MS": "250"},
            "DB_EXPORTER_SLOW_QUERIES__TRESHOLD_MS (slow_queries.treshold_ms): unknown key",
        ),
        (
            {"DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS": "fast"},
            "DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS (slow_queries.threshold_ms): Input should "
            "be a valid number, unable to parse string as a number",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__CHECK_INTERVAL_SECONDS": "0"},
            "DB_EXPORTER_DATABASES__0__CHECK_INTERVAL_SECONDS "
            "(databases[0].check_interval_seconds): Input should be greater than 0",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__DSN": f"mysql://root:{SECRET}@db/app"},
            "DB_EXPORTER_DATABASES__0__DSN (databases[0].dsn): unsupported scheme mysql://",
        ),
        (
            {"DB_EXPORTER_DATABASES__1__NAME": "ledger"},
            "DB_EXPORTER_DATABASES__1__NAME (databases[1].dsn): Field required",
        ),
        (
            {"DB_EXPORTER_DATABASES__2__NAME": "ledger"},
            "DB_EXPORTER_DATABASES__2__NAME: databases[2] leaves a gap; the next item is [1]",
        ),
        (
            {"DB_EXPORTER_DATABASES__MAIN__NAME": "x"},
            "DB_EXPORTER_DATABASES__MAIN__NAME: databases is a list; give an item's index, "
            "not 'main'",
        ),
        (
            {"DB_EXPORTER_SERVER": "x", "DB_EXPORTER_SERVER__LISTEN": "127.0.0.1:1"},
            "DB_EXPORTER_SERVER__LISTEN: server is a single value, it has no key listen",
        ),
        (
            {"DB_EXPORTER_SERVER____LISTEN": "127.0.0.1:1"},
            "DB_EXPORTER_SERVER____LISTEN: not a key path (keys joined by __",
        ),
        (
            {"DATA_SOURCE_NAME": CANARY_DSN},
            "DATABASE_URL and DATA_SOURCE_NAME are both set; set one of them",
        ),
        (
            {"DATABASE_URL_FILE": "/nonexistent/dsn"},
            "DATABASE_URL and DATABASE_URL_FILE are both set; set one of them",
        ),
        (
            {"DB_EXPORTER_LOG_LEVEL": "INFO", "DB_EXPORTER_LOG_LEVEL_FILE": "/nonexistent"},
            "DB_EXPORTER_LOG_LEVEL and DB_EXPORTER_LOG_LEVEL_FILE are both set",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__DSN_FILE": "/nonexistent/dsn"},
            "DB_EXPORTER_DATABASES__0__DSN_FILE: cannot read '/nonexistent/dsn': "
            "No such file or directory",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__DSN_FILE": "{tmp}"},
            "DB_EXPORTER_DATABASES__0__DSN_FILE: cannot read '{tmp}': Is a directory",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__DSN_FILE": CANARY_DSN},
            "DB_EXPORTER_DATABASES__0__DSN_FILE: expects the path of a file, not a URL",
        ),
        (
            {"DB_EXPORTER_DATABASES__0__DSN_FILE": "{tmp}/latin1"},
            "DB_EXPORTER_DATABASES__0__DSN_FILE: '{tmp}/latin1' is not UTF-8 text",
        ),
    ],
)
def test_bad_environment_is_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (tmp_path / "latin1").write_bytes(b"postgresql://app:mot-de-passe-\xe9t\xe9@h/db\n")
    env = {"DATABASE_URL": CANARY_DSN} | {
        name: value.format(tmp=tmp_path) for name, value in env.items()
    }
    with pytest.raises(ConfigError) as error:
        load_settings(env=env)
    assert str(error.value).startswith(message.format(tmp=tmp_path))
    assert "\n" not in str(error.value)
    assert SECRET not in str(error.value)


def test_an_error_names_the_variable_that_made_its_section_or_else_the_source(
    tmp_path: Path,
) -> None:
    enable = {"DB_EXPORTER_DATABASES__0__COLLECTORS__MIGRATIONS__ENABLED": "true"}
    required = "databases[0].collectors.migrations): script_location is required"
    with pytest.raises(ConfigError, match=re.escape(required)) as error:
        load_settings(env={"DATABASE_URL": CANARY_DSN} | enable)
    assert str(error.value).startswith("DB_EXPORTER_DATABASES__0__COLLECTORS__MIGRATIONS__ENABLED")

    path = write(
        tmp_path,
        "databases:\n  - name: main\n    dsn: postgresql://h/d\n"
        "    collectors: {migrations: {interval_seconds: 60}}\n",
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path, env=enable)
    assert str(error.value) == (
        f"{path}: databases[0].collectors.migrations: script_location is required when the "
        "collector is enabled"
    )
    second = {
        "DB_EXPORTER_DATABASES__1__NAME": "main",
        "DB_EXPORTER_DATABASES__1__DSN": "postgresql://h/e",
    }
    with pytest.raises(ConfigError) as error:
        load_settings(env={"DATABASE_URL": "postgresql://h/d"} | second)
    assert str(error.value) == (
        "environment: (top level): database names must be unique, repeated: main"
    )


# Names under the prefix: keys in either case, digits, separators, and the _FILE suffix.
_SEGMENTS = st.one_of(
    st.sampled_from(["SERVER", "LISTEN", "DATABASES", "0", "1", "DSN", "NAME", "SLOW_QUERIES"]),
    st.sampled_from(["THRESHOLD_MS", "PLANS", "ENABLED", "COLLECTORS", "LOG_LEVEL", "FILE"]),
    st.text(alphabet="ABCdef_019é", max_size=8),
)
_NAMES = st.lists(_SEGMENTS, min_size=0, max_size=5).map(lambda s: PREFIX + "__".join(s))


@settings(max_examples=400, deadline=None, database=None)
@given(
    env=st.dictionaries(
        st.one_of(
            _NAMES,
            _NAMES.map(lambda name: name + "_FILE"),
            st.sampled_from(["DATABASE_URL", "DATA_SOURCE_NAME", "DATABASE_URL_FILE"]),
        ),
        st.one_of(
            st.text(max_size=30),
            st.sampled_from(["true", "0", "250", "127.0.0.1:9", CANARY_DSN, "/dev/null"]),
        ),
        max_size=6,
    )
)
def test_any_environment_gives_settings_or_one_config_error(env: dict[str, str]) -> None:
    try:
        load_settings(env=env)
    except ConfigError as error:
        message = str(error)
    else:
        return
    assert "\n" not in message
    assert SECRET not in message


def test_check_config_without_a_file_shows_the_environment(
    clean_environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_environment.setenv("DATA_SOURCE_NAME", CANARY_DSN)
    clean_environment.setenv("DB_EXPORTER_SLOW_QUERIES__THRESHOLD_MS", "250")
    code, out, err = run_cli(capsys, "check-config")
    assert code == 0, err
    assert out.startswith("# environment: valid; effective configuration (passwords masked)\n")
    assert "- name: main\n  dsn: postgresql://app:***@db.internal:5432/wallet\n" in out
    assert "  threshold_ms: 250.0\n" in out
    assert SECRET not in out + err


def test_check_config_applies_the_environment_over_the_file(
    tmp_path: Path, clean_environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "server:\n  listen: 127.0.0.1:9300\n")
    clean_environment.setenv("DB_EXPORTER_SERVER__LISTEN", "127.0.0.1:9400")
    code, out, err = run_cli(capsys, "check-config", str(path))
    assert code == 0, err
    assert "listen: 127.0.0.1:9400\n" in out
    clean_environment.setenv("DB_EXPORTER_SERVER__LISTEN", "9400")
    code, _, err = run_cli(capsys, "check-config", str(path))
    assert_one_line_error(code, err, "DB_EXPORTER_SERVER__LISTEN (server.listen): ")


def test_check_config_without_a_file_or_a_database_is_the_error_serve_gives(
    clean_environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_environment.setenv("DB_EXPORTER_LOG_LEVEL", "DEBUG")
    code, out, err = run_cli(capsys, "check-config")
    assert_one_line_error(code, err, "nothing to watch: give a config file, or set DATABASE_URL")
    assert out == ""


@settings(max_examples=200, deadline=None, database=None)
@given(value=st.one_of(st.text(max_size=30), st.sampled_from(["default", "postgres_exporter"])))
def test_compatibility_is_one_of_two_names_or_one_clear_line(value: str) -> None:
    env = {"DB_EXPORTER_COMPATIBILITY": value}
    if value in ("default", "postgres_exporter"):
        assert load_settings(env=env).compatibility == value
        return
    with pytest.raises(ConfigError) as error:
        load_settings(env=env)
    assert str(error.value) == (
        "DB_EXPORTER_COMPATIBILITY (compatibility): "
        "Input should be 'default' or 'postgres_exporter'"
    )
