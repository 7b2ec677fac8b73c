"""Building a paho-mqtt v5 client from `MqttSettings`, the same way in every service."""

from __future__ import annotations

import ssl

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract.settings import MqttSettings


def make_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False) -> Client:
    """A v5 client with credentials, TLS and capped reconnect backoff applied.

    The caller connects with `connect_properties()` to keep a persistent session.
    """
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(settings.mqtt_username, settings.mqtt_password.get_secret_value())
    if settings.mqtt_tls:
        context = ssl.create_default_context(cafile=settings.mqtt_ca_file)
        if settings.mqtt_cert_file:
            context.load_cert_chain(settings.mqtt_cert_file, settings.mqtt_key_file)
        client.tls_set_context(context)
    client.reconnect_delay_set(min_delay=1, max_delay=int(settings.mqtt_reconnect_max_s))
    return client


def connect_properties(settings: MqttSettings) -> Properties:
    """CONNECT properties for a persistent session that outlives short disconnects."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.mqtt_session_expiry_s
    return props


def start_persistent(client: Client, settings: MqttSettings) -> None:
    """Connects in the background (retrying with the client's capped backoff) with clean
    start off, so the broker keeps the session and its queued messages across reconnects."""
    client.connect_async(
        settings.mqtt_host,
        settings.mqtt_port,
        keepalive=settings.mqtt_keepalive_s,
        clean_start=False,
        properties=connect_properties(settings),
    )
    client.loop_start()
