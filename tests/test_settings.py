"""Config loading and `db-exporter check-config`: every bad input gives one clear line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main
from exporter.dsn import DsnError, async_url, masked, parse_dsn, sync_url
from exporter.instrumentation.budget import LabelLimits
from exporter.settings import ConfigError, load_settings, settings_from_data

REPO = Path(__file__).resolve().parent.parent
SECRET = "canary-s3cret-pw"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exporter.yaml"
    path.write_text(text)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("db-exporter: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


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


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server:\n  listen: 9188\n", "server.listen: Input should be a valid string"),
        ("server:\n  listen: localhost:http\n", "is not HOST:PORT"),
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
    ],
)
def test_invalid_values_are_named(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text), env={})
    assert fragment in str(error.value)
    assert "\n" not in str(error.value)


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


def test_dsn_ssl_options_are_translated_per_driver() -> None:
    assert async_url("postgresql://h/db?sslmode=require").query == {"ssl": "require"}
    assert sync_url("postgresql+asyncpg://h/db?ssl=require").query == {"sslmode": "require"}


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
