"""Control API settings (`WATTFLEET_*` environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from contract.settings import DatabaseSettings, MqttSettings, Port, ServiceSettings
from contract.tunnel import BastionHost, BastionUser, SshPublicKey
from control_api.grafana_target import GrafanaTarget


class ApiSettings(ServiceSettings, MqttSettings, DatabaseSettings):
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # A request body above this is refused (413) before it is read whole: the largest
    # legitimate one, a config push, is a few kilobytes.
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Audit routine reads too (a successful GET that reveals no secret: a node list, a
    # command polled). Off, the log keeps changes, refusals, failures and secret reads.
    api_audit_reads: bool = False
    jwt_secret: SecretStr = SecretStr("change-me")
    jwt_ttl_s: int = Field(default=3600, ge=60)
    # Browser origins allowed to call the API (CORS); empty allows none.
    cors_origins: list[str] = []
    # When on, an admin account without TOTP cannot log in.
    require_admin_totp: bool = False

    # Failed logins allowed per account and per client address, as a moving window.
    login_limit_per_account: str = "5/minute"
    login_limit_per_address: str = "30/minute"

    mqtt_username: str = "control-api"
    # Stable across restarts: the broker keeps acks for this session while the API is down.
    mqtt_client_id: str = "control-api"
    # What an enrolled node is told to connect to (the broker's public name).
    node_mqtt_host: str = "localhost"
    node_mqtt_port: int = 8883

    # A command the node has not picked up by then expires; one it has received gets
    # `command_result_grace_s` more to report success or failure.
    command_ttl_s: int = Field(default=300, ge=1)
    command_result_grace_s: int = Field(default=600, ge=0)
    command_check_interval_s: float = Field(default=5.0, gt=0)
    # A command still `pending` this long after it was written is published again (the
    # node drops duplicates by id).
    command_republish_after_s: float = Field(default=10.0, gt=0)
    publish_timeout_s: float = Field(default=5.0, gt=0)

    # Remote debug access (POST /nodes/{id}/tunnel): the bastion nodes open their
    # reverse tunnel to, and its host key (`<type> <base64>`, the nodes trust no
    # other); unset host turns the tunnel routes off.
    tunnel_bastion_host: BastionHost | None = None
    tunnel_bastion_port: Port = 22
    tunnel_bastion_user: BastionUser = "tunnel"
    tunnel_bastion_host_key: SshPublicKey | None = None

    # Grafana tenant sync (control_api/grafana_sync.py); unset URL turns it off.
    grafana_url: str | None = Field(default=None, pattern=r"^https?://")
    grafana_user: str = "admin"
    grafana_password: SecretStr = SecretStr("change-me")
    # How Grafana reaches TimescaleDB, for the tenant organizations' datasources.
    grafana_db_host: str = "timescaledb:5432"
    grafana_db_name: str = "wattfleet"
    grafana_db_sslmode: str = "disable"
    grafana_sync_interval_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _bastion_needs_its_host_key(self) -> ApiSettings:
        if self.tunnel_bastion_host is not None and self.tunnel_bastion_host_key is None:
            raise ValueError(
                "WATTFLEET_TUNNEL_BASTION_HOST_KEY is unset: nodes trust only the pinned"
                " host key of the bastion"
            )
        return self

    def grafana_target(self) -> GrafanaTarget | None:
        if self.grafana_url is None:
            return None
        return GrafanaTarget(
            url=self.grafana_url,
            user=self.grafana_user,
            password=self.grafana_password.get_secret_value(),
            db_host=self.grafana_db_host,
            db_name=self.grafana_db_name,
            db_sslmode=self.grafana_db_sslmode,
        )

    def secrets_to_check(self) -> dict[str, SecretStr | None]:
        secrets: dict[str, SecretStr | None] = {
            "WATTFLEET_JWT_SECRET": self.jwt_secret,
            "WATTFLEET_MQTT_PASSWORD": self.mqtt_password,
        }
        if self.grafana_url is not None:
            secrets["WATTFLEET_GRAFANA_PASSWORD"] = self.grafana_password
        return secrets
