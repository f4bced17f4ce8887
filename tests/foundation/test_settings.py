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
