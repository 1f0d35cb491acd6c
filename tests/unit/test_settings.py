"""Settings: environment variables, and refusals of contradictory credentials."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.core.messaging.bus import nats_security
from services.core.settings import CoreSettings, DeliverySettings, NatsSettings
from services.registry.config import RegistrySettings


def test_env_vars_configure_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELINE_NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("TUNELINE_DELIVERY_MAX_DELIVER", "7")
    monkeypatch.setenv("TUNELINE_REGISTRY_DATABASE_URL", "postgresql+psycopg://u@h/db")
    settings = RegistrySettings()
    assert settings.core.nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.core.delivery.max_deliver == 7
    assert settings.database_url.startswith("postgresql")


def test_two_credential_kinds_are_refused() -> None:
    with pytest.raises(ValidationError, match="not user/password and token"):
        NatsSettings(user="u", password="p", token="t")


def test_user_without_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="go together"):
        NatsSettings(user="u")


def test_user_password_security() -> None:
    security = nats_security(NatsSettings(user="training", password="s3cret"))
    assert security is not None
    assert security.get_requirement() is not None


def test_backoff_repeats_its_last_step() -> None:
    delivery = DeliverySettings(backoff_s=(1.0, 5.0))
    assert [delivery.backoff_for(n) for n in (1, 2, 3, 9)] == [1.0, 5.0, 5.0, 5.0]


def test_defaults_need_no_environment() -> None:
    assert CoreSettings().nats.url == "nats://127.0.0.1:4222"
