"""The one configuration schema: the README's tables and deploy/natsrv.toml are what it
generates, every TOML value is type-checked, secrets come from a file or the environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from natsrv.config import (
    SETTINGS,
    ConfigError,
    build_config,
    example_toml,
    load_toml,
    markdown_table,
    settings_from_mapping,
)

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_and_example_file_are_generated_from_the_schema() -> None:
    readme = (ROOT / "README.md").read_text()
    for section in ("server", "turn"):
        assert markdown_table(section).strip() in readme, section
    shipped = (ROOT / "deploy" / "natsrv.toml").read_text()
    assert shipped == example_toml()
    for s in SETTINGS:
        assert f"# {s.key} = " in shipped, s.key
    assert tomllib.loads(shipped) == {}  # all commented: it loads on any host


def test_every_toml_value_is_type_checked(tmp_path: Path) -> None:
    path = tmp_path / "natsrv.toml"
    for text, key in (('auth-secret = ["new", 5]', "auth-secret"),
                      ("users = { bob = 5 }", "users"),
                      ("tcp-idle-timeout = true", "tcp-idle-timeout"),
                      ('log-format = "xml"', "log-format")):  # fmt: skip
        path.write_text(text + "\n")
        with pytest.raises(ConfigError) as caught:
            build_config(load_toml(str(path)), {})
        assert caught.value.key == key, text


def test_auth_secret_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n\nold one\n")  # rotation: one per line, the first signs
    base = {"listen": (("127.0.0.1", 3478),)}
    config = build_config({**base, "auth_secret_file": str(secret)}, {})
    assert config.auth_secret == ("s3cret", "old one") and config.turn_enabled
    with pytest.raises(ConfigError) as caught:
        build_config({**base, "auth_secret_file": str(tmp_path / "missing")}, {})
    assert caught.value.key == "auth-secret-file"
    monkeypatch.setenv("NATSRV_AUTH_SECRET", "from-env")
    assert build_config(base, {}).auth_secret == ("from-env",)
    # In TOML, one secret or a list; an empty one is refused, naming the key.
    path = tmp_path / "natsrv.toml"
    path.write_text('auth-secret = ["new", "old"]\nlisten = ["127.0.0.1"]\n')
    assert build_config(load_toml(str(path)), {}).auth_secret == ("new", "old")
    path.write_text('auth-secret = ["new", ""]\nlisten = ["127.0.0.1"]\n')
    with pytest.raises(ConfigError) as caught:
        build_config(load_toml(str(path)), {})
    assert str(caught.value) == "auth-secret: is empty"


def test_tls_port_without_a_certificate_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"tls_port": 5349}, {})
    assert caught.value.key == "tls-port"


def test_the_readme_production_example_is_a_valid_configuration(tmp_path: Path) -> None:
    """The README's production natsrv.toml loads (its secret file replaced by one here)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    assert blocks
    secret = tmp_path / "auth-secret"
    secret.write_text("s3cret\n")
    for block in blocks:
        values = tomllib.loads(block)
        if "auth-secret-file" in values:
            values["auth-secret-file"] = str(secret)
        config = build_config(settings_from_mapping(values), {})
        assert config.turn_enabled and config.auth_secret is not None
