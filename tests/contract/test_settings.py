from __future__ import annotations

import pytest
from pydantic import ValidationError

from collector.config import CollectorSettings
from control_api.config import ApiSettings


def test_example_secret_refuses_to_start_outside_dev(monkeypatch):
    monkeypatch.setenv("WATTFLEET_ENV", "prod")
    with pytest.raises(ValidationError, match="WATTFLEET_MQTT_PASSWORD"):
        CollectorSettings()
    monkeypatch.setenv("WATTFLEET_MQTT_PASSWORD", "s3cret-from-vault")
    assert CollectorSettings().mqtt_password.get_secret_value() == "s3cret-from-vault"


def test_settings_come_from_wattfleet_environment(monkeypatch):
    monkeypatch.setenv("WATTFLEET_MQTT_PORT", "18883")
    monkeypatch.setenv("WATTFLEET_DATABASE_PREPARED_STATEMENTS", "false")
    settings = CollectorSettings()
    assert settings.mqtt_port == 18883
    assert settings.prepare_threshold is None
    assert settings.mqtt_client_id.startswith("collector-")


def test_every_hub_service_takes_its_log_format_from_the_environment(monkeypatch):
    monkeypatch.delenv("WATTFLEET_LOG_FORMAT", raising=False)
    assert (CollectorSettings().log_format, ApiSettings().log_format) == ("text", "text")
    monkeypatch.setenv("WATTFLEET_LOG_FORMAT", "json")
    assert (CollectorSettings().log_format, ApiSettings().log_format) == ("json", "json")
    monkeypatch.setenv("WATTFLEET_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        CollectorSettings()
