"""Broker accounts and ACL roles, held by Mosquitto's dynamic security plugin.

The roles are data defined here once: the initial `dynamic-security.json` is rendered
from them, and nodes enrolled at runtime get their own role through the plugin's
`$CONTROL/dynamic-security/v1` API, because the plugin (Mosquitto 2.0) does not
substitute `%u` in ACL topics: node X's role names node X's topics literally.

Accounts: the hub's service accounts (SERVICE_USERNAMES) are written once by the
bootstrap; every other account is a node's, made only by `DynsecClient.add_node`. A
node's account is bound to client id X (the broker refuses it under any other client
id, so no node can take over another client's connection), and enrolment only ever
changes an account that is a node's: one of the same name holding any other role is
left alone (NotANodeAccountError). Names the services use are reserved
(`reserved_node_id`), so no node can be enrolled under one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client, MQTTMessage

from contract import topics

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
PBKDF2_ITERATIONS = 101  # what `mosquitto_ctrl dynsec init` writes
LIST_PAGE = 500  # roles or clients per answer when listing them

ADMIN_ROLE = "dynsec-admin"
COLLECTOR_ROLE = "collector"
API_ROLE = "control-api"
# The service accounts the bootstrap writes (`main`, compose's broker-init, the demo).
ADMIN_USERNAME = "admin"
COLLECTOR_USERNAME = "collector"
API_USERNAME = "control-api"
SERVICE_USERNAMES = (ADMIN_USERNAME, COLLECTOR_USERNAME, API_USERNAME)
# No node id may be one of these or start with one and "-": the services' usernames,
# their roles, and the client ids they connect with (`control-api`, `collector-<host>`,
# compose's `collector-1`), since a node's client id is its id.
_RESERVED_NAMES = (*SERVICE_USERNAMES, ADMIN_ROLE, COLLECTOR_ROLE, API_ROLE)


def reserved_node_id(node_id: str) -> bool:
    """True for an id no node may have (compared without case, against look-alikes)."""
    name = node_id.lower()
    return any(name == r or name.startswith(f"{r}-") for r in _RESERVED_NAMES)


class BrokerSecurityError(Exception):
    """The broker refused or did not answer a dynamic-security command."""


class NotANodeAccountError(BrokerSecurityError):
    """An account of that name exists and is not a node's: it was left unchanged."""


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "allow": True}


def _receive(topic: str, subscribe: str = "subscribeLiteral") -> list[dict[str, Any]]:
    """Subscribe to a filter and receive what it matches. subscribeLiteral admits exactly
    this filter; subscribePattern any filter its wildcards match (one node's acks)."""
    return [_acl(subscribe, topic), _acl("publishClientReceive", topic)]


def collector_role() -> dict[str, Any]:
    """The shared subscription, or the plain one of a single collector (see
    `shared_subscription` in collector/config.py), and the nodes' ingest confirmations."""
    acls = []
    for kind in ("telemetry", "status", "inventory"):
        acls.append(_acl("subscribeLiteral", topics.shared_subscription(kind)))
        acls.append(_acl("subscribeLiteral", topics.all_nodes(kind)))
        acls.append(_acl("publishClientReceive", topics.all_nodes(kind)))
    acls.append(_acl("publishClientSend", topics.all_nodes("ingested")))
    return {"rolename": COLLECTOR_ROLE, "acls": acls}


def api_role() -> dict[str, Any]:
    control = f"{CONTROL_TOPIC}/#"
    return {
        "rolename": API_ROLE,
        "acls": [
            _acl("publishClientSend", topics.all_nodes("commands")),
            _acl("publishClientSend", topics.BROADCAST),
            *_receive(topics.all_nodes("acks"), "subscribePattern"),
            *_receive(topics.all_nodes("logs"), "subscribePattern"),
            *_receive(topics.all_nodes("config"), "subscribePattern"),
            _acl("publishClientSend", CONTROL_TOPIC),
            _acl("subscribePattern", control),
            _acl("publishClientReceive", control),
        ],
    }


def admin_role() -> dict[str, Any]:
    control = f"{CONTROL_TOPIC}/#"
    return {
        "rolename": ADMIN_ROLE,
        "acls": [
            _acl("publishClientSend", control),
            _acl("subscribePattern", control),
            _acl("publishClientReceive", control),
        ],
    }


def node_role_name(node_id: str) -> str:
    return f"node:{node_id}"


def node_role(node_id: str) -> dict[str, Any]:
    """Node X writes only its own status, telemetry, acks, logs, config and inventory,
    reads its commands, its ingest confirmations and the hub's broadcasts."""
    acls = [
        _acl("publishClientSend", topics.node_topic(node_id, kind))
        for kind in ("status", "telemetry", "acks", "logs", "config", "inventory")
    ]
    acls += _receive(topics.commands(node_id)) + _receive(topics.ingested(node_id))
    acls += _receive(topics.BROADCAST)
    return {"rolename": node_role_name(node_id), "acls": acls}


def _defined_role(rolename: str) -> dict[str, Any] | None:
    """The definition of a role `DynsecClient.reconcile` keeps up to date; None for
    any other (the admin's role is the bootstrap's, and needs no more)."""
    if rolename == COLLECTOR_ROLE:
        return collector_role()
    if rolename == API_ROLE:
        return api_role()  # reported configs (nodes/+/config) came after the bootstrap
    prefix = node_role_name("")
    if rolename.startswith(prefix):
        try:
            return node_role(rolename.removeprefix(prefix))
        except ValueError:  # not a node id: not a role enrolment made
            return None
    return None


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password: PBKDF2-SHA512, base64 fields."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": PBKDF2_ITERATIONS,
    }


def _client(username: str, password: str, role: str) -> dict[str, Any]:
    return {"username": username, "roles": [{"rolename": role}], **hash_password(password)}


def initial_config(
    admin: tuple[str, str], collector: tuple[str, str], api: tuple[str, str]
) -> dict[str, Any]:
    """A `dynamic-security.json` with the admin, collector and control-API accounts
    (each a (username, password) pair), every role, and deny-by-default access."""
    return {
        "clients": [
            _client(*admin, ADMIN_ROLE),
            _client(*collector, COLLECTOR_ROLE),
            _client(*api, API_ROLE),
        ],
        "groups": [],
        "roles": [admin_role(), collector_role(), api_role()],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


class DynsecClient:
    """Sends dynamic-security commands over an already connected MQTT client whose
    account holds the admin (or control-API) role, and waits for the answers."""

    def __init__(self, client: Client, timeout_s: float = 5.0, subscribe: bool = True) -> None:
        """With `subscribe=False` the owner of the client subscribes to RESPONSE_TOPIC
        itself (on every connect, for a client that reconnects)."""
        self._client = client
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        client.message_callback_add(RESPONSE_TOPIC, self._on_response)
        if subscribe:
            result, _ = client.subscribe(RESPONSE_TOPIC, qos=1)
            if result != 0:
                raise BrokerSecurityError(f"cannot subscribe to {RESPONSE_TOPIC}: rc={result}")

    def _on_response(self, _client: Client, _userdata: object, msg: MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        for response in responses:
            with self._lock:
                waiting = self._pending.get(response.get("correlationData", ""))
            if waiting is not None:
                waiting[1].append(response)
                waiting[0].set()

    def run(self, command: str, **fields: Any) -> dict[str, Any]:
        """Runs one command; raises BrokerSecurityError with the plugin's error text."""
        correlation = uuid.uuid4().hex
        done = threading.Event()
        answer: list[dict[str, Any]] = []
        with self._lock:
            self._pending[correlation] = (done, answer)
        try:
            body = {"commands": [{"command": command, "correlationData": correlation, **fields}]}
            info = self._client.publish(CONTROL_TOPIC, json.dumps(body), qos=1)
            if info.rc != 0:
                raise BrokerSecurityError(f"{command}: not connected to the broker (rc={info.rc})")
            if not done.wait(self._timeout_s):
                raise BrokerSecurityError(f"{command}: no answer from the broker")
        finally:
            with self._lock:
                self._pending.pop(correlation, None)
        if answer[0].get("error"):
            raise BrokerSecurityError(f"{command}: {answer[0]['error']}")
        return answer[0]

    def _is_node_account(self, node_id: str) -> bool:
        """True when node X's account exists, False when no account has that name.
        NotANodeAccountError when one does and holds anything but node X's role."""
        try:
            answer = self.run("getClient", username=node_id)
        except BrokerSecurityError as exc:
            if "not found" in str(exc):
                return False
            raise
        roles = [r.get("rolename") for r in answer["data"]["client"].get("roles", [])]
        if roles != [node_role_name(node_id)]:
            raise NotANodeAccountError(
                f"broker account {node_id!r} is not a node's (roles {roles}); left unchanged"
            )
        return True

    def _require_node_account(self, node_id: str) -> None:
        if not self._is_node_account(node_id):
            raise BrokerSecurityError(f"no broker account {node_id!r}")

    def add_node(self, node_id: str, password: str) -> None:
        """Creates node X's role and account, bound to client id X. An account of node X
        left from an earlier enrolment gets the password and the binding and is
        enabled; NotANodeAccountError (nothing changed) for an account of that name
        that is not a node's."""
        if self._is_node_account(node_id):
            self._bind(node_id)
            self.run("setClientPassword", username=node_id, password=password)
            self.run("enableClient", username=node_id)
            return
        role = node_role(node_id)
        try:
            self.run("createRole", rolename=role["rolename"], acls=role["acls"])
        except BrokerSecurityError as exc:
            if "already exists" not in str(exc):
                raise
        self.run(
            "createClient",
            username=node_id,
            password=password,
            clientid=node_id,
            roles=[{"rolename": role["rolename"]}],
        )

    def _bind(self, node_id: str) -> None:
        """Only client id X may use node X's account (accounts enrolled before client ids
        were bound get it at their next enrolment or credential rotation)."""
        self.run("setClientId", username=node_id, clientid=node_id)

    def reconcile(self) -> int:
        """Brings the broker's roles and node accounts up to what this module defines
        now: the collector role and every node's role get the ACLs they lack (roles made
        by an earlier version, e.g. before ingest confirmations), and every node account
        is bound to its client id (accounts enrolled before the binding existed). ACLs a
        role has beyond its definition are left as they are. Idempotent; returns how
        many changes it made. Raises BrokerSecurityError as `run`."""
        changes = 0
        for client in self._list("listClients", "clients"):
            username = client["username"]
            client_roles = [r.get("rolename") for r in client.get("roles", [])]
            if client_roles == [node_role_name(username)] and client.get("clientid") != username:
                self._bind(username)
                changes += 1
        roles = list(self._list("listRoles", "roles"))
        # The API's own role last: the broker drops the connections of a role's clients
        # when it changes (this one's included), and this run then ends; the next
        # connect runs it again, with everything else done.
        roles.sort(key=lambda role: role["rolename"] == API_ROLE)
        for role in roles:
            wanted = _defined_role(role["rolename"])
            if wanted is None:
                continue
            have = {(a["acltype"], a["topic"]): a.get("allow") for a in role.get("acls", [])}
            for acl in wanted["acls"]:
                key = (acl["acltype"], acl["topic"])
                if have.get(key) is True:
                    continue
                if key in have:  # the same ACL denying: replaced
                    self.run(
                        "removeRoleACL", rolename=role["rolename"], acltype=key[0], topic=key[1]
                    )
                try:
                    self.run("addRoleACL", rolename=role["rolename"], **acl)
                except BrokerSecurityError as exc:
                    if "already exists" not in str(exc):
                        raise
                    continue  # another run added it
                changes += 1
        return changes

    def _list(self, command: str, key: str) -> Iterator[dict[str, Any]]:
        """Every role or client, in pages: a fleet's in one answer would be megabytes
        parsed on the network thread."""
        offset = 0
        while True:
            page = self.run(command, verbose=True, count=LIST_PAGE, offset=offset)["data"][key]
            yield from page
            if len(page) < LIST_PAGE:
                return
            offset += LIST_PAGE

    def disable_node(self, node_id: str) -> None:
        """Disables the account; the broker disconnects the node at once."""
        self._require_node_account(node_id)
        self.run("disableClient", username=node_id)

    def enable_node(self, node_id: str) -> None:
        self._require_node_account(node_id)
        self.run("enableClient", username=node_id)

    def set_node_password(self, node_id: str, password: str) -> None:
        """New password (and the client id binding), and the node's open connection is
        dropped, so the old password stops working now rather than at the next
        reconnect."""
        self._require_node_account(node_id)
        self._bind(node_id)
        self.run("setClientPassword", username=node_id, password=password)
        self.run("disableClient", username=node_id)
        self.run("enableClient", username=node_id)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Write the broker's initial dynamic-security.json. Passwords come from "
        "WATTFLEET_BROKER_ADMIN_PASSWORD, WATTFLEET_COLLECTOR_MQTT_PASSWORD and "
        "WATTFLEET_API_MQTT_PASSWORD."
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("--chown", metavar="UID:GID", help="hand the file to the broker's user")
    args = parser.parse_args()
    if args.out.exists() and not args.force:
        # The running broker rewrites this file with every enrolled node: never clobber it.
        print(f"{args.out} exists; keeping it")
        return
    names = (
        "WATTFLEET_BROKER_ADMIN_PASSWORD",
        "WATTFLEET_COLLECTOR_MQTT_PASSWORD",
        "WATTFLEET_API_MQTT_PASSWORD",
    )
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        parser.error("missing environment: " + ", ".join(missing))
    admin, collector, api = (os.environ[name] for name in names)
    config = initial_config(
        (ADMIN_USERNAME, admin), (COLLECTOR_USERNAME, collector), (API_USERNAME, api)
    )
    args.out.write_text(json.dumps(config, indent=2))
    args.out.chmod(0o600)
    if args.chown:
        uid, gid = (int(part) for part in args.chown.split(":"))
        os.chown(args.out, uid, gid)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
