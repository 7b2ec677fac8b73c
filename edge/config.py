"""Edge agent settings: a YAML file (`edge/config.example.yaml` documents every key),
overridden by `WATTFLEET_EDGE_*` environment variables.

This model is also what the hub validates a CONFIG_PUSH against (imported, not copied).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contract.settings import ConfigError, MqttSettings, ServiceSettings
from contract.telemetry import NodeId


class EdgeSettings(ServiceSettings, MqttSettings):
    model_config = SettingsConfigDict(env_prefix="WATTFLEET_EDGE_", extra="forbid")

    node_id: NodeId
    node_secret: SecretStr = SecretStr("change-me")
    # The node's MQTT identity is its node id unless set otherwise.
    mqtt_username: str = ""

    modbus_transport: Literal["tcp", "rtu"] = "tcp"
    modbus_host: str = "127.0.0.1"
    modbus_port: int = 502
    modbus_serial_port: str = "/dev/ttyUSB0"
    modbus_baudrate: int = 9600
    modbus_unit_id: int = Field(default=1, ge=0, le=247)
    modbus_timeout_s: float = 3.0
    # Quiet time between two requests on the bus: some inverters drop back-to-back frames.
    modbus_frame_gap_s: float = 0.05

    poll_interval_s: float = Field(default=5.0, gt=0)
    # After a CONFIG_PUSH, the new config must reach the inverter and the broker within
    # this long, or the agent rolls back to the previous file.
    config_apply_deadline_s: float = Field(default=120.0, gt=0)
    heartbeat_interval_s: float = Field(default=60.0, gt=0)

    # SELF_UPDATE installs wattfleet==<version> with pip from here (default: PyPI);
    # find_links alone (a folder or URL of wheels) means no index at all.
    update_index_url: str | None = None
    update_find_links: str | None = None
    update_timeout_s: float = Field(default=600.0, gt=0)

    buffer_path: Path = Path("/var/lib/wattfleet/buffer.sqlite3")
    # At least 7 days of 5-second samples (120,960).
    buffer_max_samples: int = Field(default=130_000, ge=1)
    buffer_max_age_days: float = Field(default=8.0, gt=0)
    replay_batch_samples: int = Field(default=200, ge=1, le=1000)
    replay_batches_in_flight: int = Field(default=4, ge=1)

    # Tariff used for `grid.current_price` when no optimizer provides one.
    price_per_kwh: float = 0.55
    peak_price_per_kwh: float = 0.85
    peak_hours: tuple[int, int] = (17, 21)

    status_host: str = "0.0.0.0"  # noqa: S104 - the local status page is for the LAN
    status_port: int = 8080

    @model_validator(mode="after")
    def _identity_defaults(self) -> EdgeSettings:
        self.mqtt_username = self.mqtt_username or self.node_id
        self.mqtt_client_id = self.mqtt_client_id or self.node_id
        return self

    @property
    def buffer_max_age(self) -> timedelta:
        return timedelta(days=self.buffer_max_age_days)

    def secrets_to_check(self) -> dict[str, SecretStr | None]:
        return {
            "WATTFLEET_EDGE_MQTT_PASSWORD": self.mqtt_password,
            "WATTFLEET_EDGE_NODE_SECRET": self.node_secret,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML file (passed in as init values).
        return (env_settings, init_settings)

    @classmethod
    def from_file(cls, path: Path) -> EdgeSettings:
        """Loads and validates the YAML file; raises ConfigError saying what is wrong."""
        try:
            data: Any = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        try:
            return cls(**data)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
