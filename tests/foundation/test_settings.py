from __future__ import annotations

import pytest

from xhuma.config import ConfigurationError, Profile, SamlVerify, load_settings


def test_no_configuration_gives_the_embedded_simulator_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.profile is Profile.SIMULATOR
    assert settings.redis_url is None
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.saml_verify is SamlVerify.OPTIONAL


def test_bad_value_is_one_line_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XHUMA_MAX_REQUEST_BYTES", "lots")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("XHUMA_MAX_REQUEST_BYTES:")
    assert "\n" not in message


def test_readme_configuration_table_matches_the_settings() -> None:
    """The README's reference is generated from Settings (`xhuma config reference`); it must not drift."""
    from pathlib import Path

    from xhuma.config import reference_table

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "\n<!-- settings:end -->"
    assert begin in readme and end in readme
    table = readme.split(begin, 1)[1].split(end, 1)[0]
    assert table == reference_table(), "README is stale: run `xhuma config reference` and paste the table"


def test_every_setting_has_a_description() -> None:
    from xhuma.config import Settings

    assert [name for name, info in Settings.model_fields.items() if not info.description] == []
