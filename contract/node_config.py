"""The edge agent's config as a wire contract: every key the agent reads, its type and
bounds, once. The hub validates a CONFIG_PUSH body against `NodeConfig`; the agent's
`edge.config.EdgeSettings` is this model plus how the agent loads it (a YAML file,
`WATTFLEET_EDGE_*` overrides, no example secrets in prod). `edge/config.example.yaml`
documents every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contract.settings import MqttSettings, ServiceSettings
from contract.telemetry import NodeId
from contract.text import refuse_unstorable, storable

# Issued at enrollment and kept on the node: a pushed config never carries them, and the
# agent keeps its own when it applies one.
NODE_HELD_SECRETS = ("node_secret", "mqtt_password")


class NodeConfig(ServiceSettings, MqttSettings):
    """The agent's whole config; unknown keys are refused. Validating one reads nothing
    from the validating process's environment."""

    model_config = SettingsConfigDict(extra="forbid")

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

    @model_validator(mode="before")
    @classmethod
    def _refuse_unstorable_text(cls, data: Any) -> Any:
        # Every key and text value, inherited settings' included: a pushed config is
        # stored as jsonb and echoed in answers (contract/text.py).
        if isinstance(data, dict):
            for key, value in data.items():
                for text in (key, *(value if isinstance(value, list | tuple) else (value,))):
                    try:
                        refuse_unstorable(text)
                    except ValueError as exc:
                        raise ValueError(f"{storable(str(key))}: {exc}") from exc
        return data

    @model_validator(mode="after")
    def _identity_defaults(self) -> NodeConfig:
        self.mqtt_username = self.mqtt_username or self.node_id
        self.mqtt_client_id = self.mqtt_client_id or self.node_id
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # A config is what it says: the hub's own WATTFLEET_* variables must not fill
        # in (or break) the one it validates for a node.
        return (init_settings,)
