"""The edge agent's config as a wire contract: every key the agent reads, its type and
bounds, once. The hub validates a CONFIG_PUSH body against `NodeConfig` before anything
is sent, and the agent validates it again on receipt: its `edge.config.EdgeSettings` is
this model plus how the agent loads it (a YAML file, `WATTFLEET_EDGE_*` overrides, no
example secrets in prod). `edge/config.example.yaml` documents every key.

A pushed config comes from an operator's account on the hub, so its bounds are the
Pi's: numbers in ranges the agent can use, ports it may connect to or listen on (the
status page not on a privileged port), files only where the agent keeps its state, and
software only from an https index or a local folder.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from contract.fields import MAX_ABS_PRICE_PER_KWH
from contract.node_time import NodeTime
from contract.settings import MqttSettings, Port, ServiceSettings
from contract.site_control import StrategyName
from contract.tariff import TariffVersions, TimeZoneName
from contract.telemetry import NodeId
from contract.text import refuse_unstorable, storable

# Issued at enrollment and kept on the node: a pushed config never carries them, and the
# agent keeps its own when it applies one.
NODE_HELD_SECRETS = ("node_secret", "mqtt_password")
# The site's own choice, never the hub's: a CONFIG_PUSH leaves them as the node's file
# has them (edge/config_push.py), so the hub cannot turn remote access on, nor lift the
# site's own safety lock, by itself.
SITE_HELD_KEYS = ("tunnel_enabled", "tunnel_local_port", "safety_lock")
# Where a tunnel leads on the Pi: its own sshd.
SSHD_PORT = 22
# A reported config (below) is a few KiB; the hub reads none larger.
MAX_REPORTED_CONFIG_BYTES = 16 * 1024

# Where the agent's state (buffer_path and the files beside it) may never be: the
# system's own directories. Anywhere else is the operator's choice (the systemd unit
# confines writes to /var/lib/wattfleet as well).
SYSTEM_DIRS = tuple(
    PurePosixPath(d)
    for d in [
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib32",
        "/lib64",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/sys",
        "/usr",
    ]
)


def _plain_absolute(path: str) -> PurePosixPath:
    """The path, when it is absolute and normalized: no `.` or `..` parts, no `//`."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or os.path.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"{path!r} must be an absolute, normalized path (no '.', '..', '//')")
    return pure


def _refuse_system_dirs(pure: PurePosixPath) -> None:
    system = next((d for d in SYSTEM_DIRS if pure.is_relative_to(d)), None)
    if system is not None:
        raise ValueError(f"must not be under {system}")


def _state_file(path: Path) -> Path:
    pure = _plain_absolute(str(path))
    if pure.suffix != ".sqlite3":
        raise ValueError("must name a .sqlite3 file")
    _refuse_system_dirs(pure)
    return path


def _https_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} must be an https:// URL")
    return url


def _ca_file(path: str) -> str:
    _plain_absolute(path)
    return path


def _https_url_or_folder(location: str) -> str:
    if location.startswith("/"):
        _plain_absolute(location)
        return location
    return _https_url(location)


# Text needs no STORABLE here: the model refuses NUL and lone surrogates in every key
# and value first (_refuse_unstorable_text), inherited settings' included.
Text = Annotated[str, StringConstraints(max_length=253)]
Seconds = Annotated[float, Field(gt=0, le=24 * 3600)]
HttpsUrl = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_https_url)]
WheelSource = Annotated[
    str, StringConstraints(max_length=2048), AfterValidator(_https_url_or_folder)
]
# An hour of the day as a boundary: 0 is midnight at the start, 24 at the end.
Hour = Annotated[int, Field(ge=0, le=24)]
Price = Annotated[float, Field(ge=-MAX_ABS_PRICE_PER_KWH, le=MAX_ABS_PRICE_PER_KWH)]


def _device_path(path: str) -> str:
    pure = _plain_absolute(path)
    if not pure.is_relative_to("/dev"):
        _refuse_system_dirs(pure)
    return path


# A serial device: usually under /dev (/dev/ttyUSB0, /dev/serial/by-id/...), but a
# socat or udev link may live elsewhere, only never under the other system folders.
SerialDevice = Annotated[str, StringConstraints(max_length=253), AfterValidator(_device_path)]


class NodeConfig(ServiceSettings, MqttSettings):
    """The agent's whole config; unknown keys are refused. Validating one reads nothing
    from the validating process's environment."""

    # NaN and infinities are no setting. Keys are matched as named (see _keys_as_named).
    model_config = SettingsConfigDict(extra="forbid", allow_inf_nan=False, case_sensitive=True)

    @model_validator(mode="before")
    @classmethod
    def _keys_as_named(cls, data: Any) -> Any:
        """Refuses a key in another case than its setting's, saying which. Matched
        without regard to case (pydantic-settings' default), of two keys that differ
        only so the first won: a pushed `SAFETY_LOCK: false` ahead of the file's
        `safety_lock: true` lifted the site's own lock, which the push checks (by exact
        name) had let through."""
        if isinstance(data, dict):
            named = {name.lower(): name for name in cls.model_fields}
            wrong = [
                f"{key} (the setting is {named[key.lower()]})"
                for key in data
                if isinstance(key, str) and key not in cls.model_fields and key.lower() in named
            ]
            if wrong:
                raise ValueError(f"keys are lower case: {', '.join(wrong)}")
        return data

    node_id: NodeId
    node_secret: SecretStr = SecretStr("change-me")
    # The node's MQTT identity is its node id unless set otherwise.
    mqtt_username: Text = ""

    modbus_transport: Literal["tcp", "rtu"] = "tcp"
    modbus_host: Text = "127.0.0.1"
    modbus_port: Port = 502
    modbus_serial_port: SerialDevice = "/dev/ttyUSB0"
    modbus_baudrate: int = Field(default=9600, ge=300, le=921_600)
    modbus_unit_id: int = Field(default=1, ge=0, le=247)
    modbus_timeout_s: float = Field(default=3.0, gt=0, le=60)
    # Quiet time between two requests on the bus: some inverters drop back-to-back frames.
    modbus_frame_gap_s: float = Field(default=0.05, ge=0, le=10)

    poll_interval_s: Seconds = 5.0
    # After a CONFIG_PUSH, the new config must reach the inverter and the broker within
    # this long, or the agent rolls back to the previous file.
    config_apply_deadline_s: Seconds = 120.0
    heartbeat_interval_s: Seconds = 60.0
    # How often to read the device inventory again (contract/inventory.py): a firmware
    # update shows at the hub within this long (or at once, if the inverter restarts).
    inventory_interval_s: Seconds = 300.0

    # SELF_UPDATE installs wattfleet==<version> with pip from here (default: PyPI);
    # find_links alone (an https URL or a local folder of wheels) means no index at all.
    update_index_url: HttpsUrl | None = None
    update_find_links: WheelSource | None = None
    update_timeout_s: Seconds = 600.0

    # The seen command ids go beside it; a pending push or update does not (the agent's
    # --state-dir, which no key may move).
    buffer_path: Annotated[Path, AfterValidator(_state_file)] = Path(
        "/var/lib/wattfleet/buffer.sqlite3"
    )
    # At least 7 days of 5-second samples (120,960).
    buffer_max_samples: int = Field(default=130_000, ge=1, le=100_000_000)
    buffer_max_age_days: float = Field(default=8.0, gt=0, le=3660)
    # A buffered sample is deleted once the hub confirms it committed it; false for hubs
    # that predate confirmations: deleted once the broker acknowledged it (PUBACK).
    ingest_confirmations: bool = True
    # Sent and unconfirmed this long: sent again (doubling while none is confirmed, up
    # to 16 times this).
    confirm_timeout_s: float = Field(default=60.0, ge=1, le=3600)
    # Backlog replay: samples per {"samples": [...]} message, and how many such messages
    # may await confirmation at a time (the window); the hub commits about every second,
    # so the window must hold a second or two of replay.
    replay_batch_samples: int = Field(default=500, ge=1, le=1000)
    replay_batches_in_flight: int = Field(default=8, ge=1, le=100)
    # At most this many replayed samples a second (a week of 5-second samples in about
    # a minute), so a fleet coming back after a broker outage does not flood the hub.
    replay_max_samples_per_s: int = Field(default=2000, ge=1, le=100_000)
    # The HTTPS fallback (docs/edge.md): with the broker unreachable this long, the
    # backlog goes to the hub's ingest endpoint at this URL instead (None: off), in the
    # replay's batches and pace, until the broker is back. `ingest_ca_file`: a CA bundle
    # to trust for it instead of the system's.
    ingest_url: HttpsUrl | None = None
    ingest_ca_file: Annotated[str, AfterValidator(_ca_file)] | None = None
    http_fallback_after_s: Seconds = 300.0

    # The site's time zone and tariffs, as the hub holds them (contract/tariff.py): the
    # hub pushes both whenever either changes. Local days and hours are this zone's.
    timezone: TimeZoneName = "UTC"
    tariffs: TariffVersions = []
    # The price `grid.current_price` falls back to while no version of `tariffs` is in
    # force (an agent the hub has sent no tariff yet): the peak price from the start
    # local hour up to (not including) the end hour, start < end.
    price_per_kwh: Price = 0.55
    peak_price_per_kwh: Price = 0.85
    peak_hours: tuple[Hour, Hour] = (17, 21)

    status_host: Text = "0.0.0.0"  # noqa: S104 - the local status page is for the LAN
    # The agent runs unprivileged, and a low port would shadow the Pi's own services.
    status_port: int = Field(default=8080, ge=1024, le=65535)
    # The coordinator interface (edge/coordinator.py), on 127.0.0.1 only; None: off.
    coordinator_port: int | None = Field(default=None, ge=1024, le=65535)

    # The dynamic strategy (contract/site_control.py), handed to the coordinator: off,
    # it may only keep the inverter in self-consumption, and the agent puts the inverter
    # back there when the strategy is switched off.
    strategy_enabled: bool = True
    strategy: StrategyName = "time_of_use"

    # -- Site-held keys (SITE_HELD_KEYS) ------------------------------------------------
    # The site's own safety lock: while true every control command is refused, whatever
    # the hub says (docs/edge.md); only the file on the Pi sets it.
    safety_lock: bool = False
    # Remote debug access (edge/tunnel.py).
    # Off: OPEN_TUNNEL is refused, and no tunnel key is made.
    tunnel_enabled: bool = False
    # The tunnel forwards to 127.0.0.1 on this port: the Pi's sshd, and nothing else
    # outside env "dev" (where tests point it at a server of their own).
    tunnel_local_port: Port = SSHD_PORT

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
    def _peak_hours_in_order(self) -> NodeConfig:
        start, end = self.peak_hours
        if start >= end:
            raise ValueError(f"peak_hours: the start ({start}) must come before the end ({end})")
        return self

    @model_validator(mode="after")
    def _tunnel_reaches_sshd(self) -> NodeConfig:
        if self.tunnel_local_port != SSHD_PORT and self.env != "dev":
            raise ValueError(f"tunnel_local_port: only {SSHD_PORT} (the Pi's sshd) outside env dev")
        return self

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


class ReportedConfig(BaseModel):
    """What an agent publishes, retained, on `nodes/{node_id}/config` whenever it
    connects: the config it runs (its file with `WATTFLEET_EDGE_*` overrides applied,
    `effective_config`), the version of the last CONFIG_PUSH it confirmed (None before
    any) and when it reported (its clock). At most MAX_REPORTED_CONFIG_BYTES of JSON."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    version: int | None = Field(ge=1)
    ts: NodeTime
    config: dict[str, Any]


def effective_config(config: NodeConfig) -> dict[str, Any]:
    """The config as JSON, the node-held secrets left out."""
    return config.model_dump(mode="json", exclude=set(NODE_HELD_SECRETS))
