"""Settings: environment over the root's config.yml over defaults, and clear errors."""
import pytest

from mlcomp.errors import ConfigError
from mlcomp.settings import Settings


def test_environment_wins_over_the_config_file_and_defaults(tmp_path):
    (tmp_path / "config.yml").write_text("port: 5000\ntoken: from-file\n")
    settings = Settings.from_env({"MLCOMP_ROOT": str(tmp_path), "MLCOMP_PORT": "6000"})
    assert settings.port == 6000
    assert settings.token == "from-file"
    assert settings.host == "127.0.0.1"
    assert settings.db_url == f"sqlite:///{tmp_path / 'mlcomp.db'}"


def test_a_relative_root_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"MLCOMP_ROOT": "here"})
    assert settings.root == tmp_path / "here"
    assert settings.tasks_dir == tmp_path / "here" / "tasks"


@pytest.mark.parametrize("text, message", [
    ("colour: red\n", "unknown setting 'colour'"),
    ("- a\n", "expected a mapping"),
    ("port: eighty\n", "setting port .* 'eighty' is not an integer"),
])
def test_bad_config_files_are_named(tmp_path, text, message):
    (tmp_path / "config.yml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"MLCOMP_ROOT": str(tmp_path)})


def test_ui_operations_settings_read_flags_and_numbers(tmp_path):
    (tmp_path / "config.yml").write_text("cookie_secure: true\nlogin_window: 30\n")
    settings = Settings.from_env({"MLCOMP_ROOT": str(tmp_path), "MLCOMP_TRUSTED_PROXIES": "1",
                                  "MLCOMP_LOGIN_ATTEMPTS": "5"})
    assert (settings.cookie_secure, settings.trusted_proxies, settings.login_attempts, settings.login_window) == (
        True, 1, 5, 30.0)
    assert Settings.from_env({"MLCOMP_ROOT": str(tmp_path), "MLCOMP_COOKIE_SECURE": "No"}).cookie_secure is False
    with pytest.raises(ConfigError, match="setting cookie_secure .* 'maybe' is not true or false"):
        Settings.from_env({"MLCOMP_ROOT": str(tmp_path), "MLCOMP_COOKIE_SECURE": "maybe"})
