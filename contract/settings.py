"""Settings every service shares: environment, MQTT and database connection.

Each service defines its own pydantic-settings class from these mixins and builds it
once in `main()`; nothing here reads the environment at import time.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.process import LogFormat

EXAMPLE_SECRET = "change-me"  # noqa: S105 - the placeholder we refuse in prod
# A TCP port one connects to.
Port = Annotated[int, Field(ge=1, le=65535)]


class ConfigError(Exception):
    """A setting is missing, inconsistent or unsafe for the chosen environment."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTFLEET_", extra="ignore")

    env: Literal["dev", "prod"] = "dev"
    log_level: str = "INFO"
    # json: one object per line (ts, level, logger, message, exception), for log shippers.
    log_format: LogFormat = "text"

    def secrets_to_check(self) -> dict[str, SecretStr | None]:
        """Secret settings that must not keep their example value outside dev."""
        return {}

    @model_validator(mode="after")
    def _refuse_example_secrets(self) -> ServiceSettings:
        if self.env == "dev":
            return self
        for name, value in self.secrets_to_check().items():
            if value is None or value.get_secret_value() in ("", EXAMPLE_SECRET):
                raise ValueError(f"{name} is unset or still the example value; refusing to start")
        return self


class MqttSettings(BaseSettings):
    """`WATTFLEET_MQTT_*`: where the broker is and how to log in to it."""

    model_config = SettingsConfigDict(env_prefix="WATTFLEET_", extra="ignore")

    mqtt_host: str = "127.0.0.1"
    mqtt_port: Port = 1883
    mqtt_username: str = "collector"
    mqtt_password: SecretStr = SecretStr(EXAMPLE_SECRET)
    mqtt_client_id: str = ""
    mqtt_keepalive_s: int = 30
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    mqtt_tls: bool = False
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_reconnect_max_s: float = Field(default=30.0, ge=1)


class DatabaseSettings(BaseSettings):
    """`WATTFLEET_DATABASE_*`: the TimescaleDB connection."""

    model_config = SettingsConfigDict(env_prefix="WATTFLEET_", extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/wattfleet"
    # Off behind PgBouncer in transaction mode and for the embedded test database,
    # where connections share backend sessions and named prepared statements collide.
    database_prepared_statements: bool = True

    @property
    def prepare_threshold(self) -> int | None:
        """psycopg's `prepare_threshold`: None disables server-side prepared statements."""
        return 5 if self.database_prepared_statements else None
