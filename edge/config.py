"""Edge agent settings: the node config of the wire contract (`contract/node_config.py`:
every key, its type and bounds, also what the hub validates a CONFIG_PUSH against), read
from a YAML file (`edge/config.example.yaml` documents every key) and overridden by
`WATTFLEET_EDGE_*` environment variables.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from contract.node_config import NodeConfig
from contract.settings import ConfigError


class EdgeSettings(NodeConfig):
    model_config = SettingsConfigDict(env_prefix="WATTFLEET_EDGE_", extra="forbid")

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
        # The environment overrides the YAML file (passed in as init values). Its
        # variables are matched without regard to case (WATTFLEET_EDGE_SAFETY_LOCK), the
        # file's keys as named (NodeConfig).
        return (EnvSettingsSource(settings_cls, case_sensitive=False), init_settings)

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
