"""A stand-in for Grafana's HTTP API, for testing the tenant sync.

No Grafana binary can be installed on the machines this suite runs on (Debian, PyPI and
npm carry none), so the sync is tested against this server, which implements the
documented shapes of the endpoints `grafana-client` calls (grafana.com/docs/grafana/
latest/developers/http_api/: org.md, user.md, admin.md, data_source.md, dashboard.md,
preferences.md): basic auth, `X-Grafana-Org-Id` selecting the organization, 404/409
where Grafana answers them, and a new organization getting its creator as Admin. It
keeps state in memory so a test can read and change it as an operator would in Grafana.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class GrafanaState:
    admin: tuple[str, str] = ("admin", "grafana-test-password")
    orgs: dict[int, str] = field(default_factory=lambda: {1: "Main Org."})
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    # org id -> user id -> role
    members: dict[int, dict[int, str]] = field(default_factory=dict)
    # org id -> uid -> datasource
    datasources: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # org id -> uid -> dashboard (with id and version, as Grafana stores it)
    dashboards: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # org id -> its preferences (Grafana's defaults until set)
    preferences: dict[int, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    ids: Any = field(default_factory=lambda: itertools.count(2))

    def __post_init__(self) -> None:
        self.users[1] = {"id": 1, "login": self.admin[0], "email": "admin@localhost"}
        self.members[1] = {1: "Admin"}

    def org_by_name(self, name: str) -> int | None:
        return next((i for i, n in self.orgs.items() if n == name), None)

    def changes(self) -> list[tuple[str, str]]:
        """The writes made so far (method, path), in order."""
        return [(m, p) for m, p, _ in self.calls if m != "GET"]


class _Error(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FakeGrafana:
    def __init__(self) -> None:
        self.state = GrafanaState()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                try:
                    with fake.lock:
                        status, answer = fake.handle(method, self.path, self.headers, body)
                except _Error as exc:
                    status, answer = exc.status, {"message": str(exc)}
                fake.state.calls.append((method, urlparse(self.path).path, status))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API -------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Any, body: Any) -> tuple[int, Any]:
        s = self.state
        expected = "Basic " + base64.b64encode(":".join(s.admin).encode()).decode()
        if headers.get("Authorization") != expected:
            raise _Error(401, "invalid username or password")
        url = urlparse(raw_path)
        path, query = url.path, parse_qs(url.query)
        org = int(headers.get("X-Grafana-Org-Id") or 1)
        if org not in s.orgs:
            raise _Error(401, "user is not a member of the organization")

        if (method, path) == ("GET", "/api/orgs"):
            return 200, [{"id": i, "name": n} for i, n in sorted(s.orgs.items())]
        if (method, path) == ("POST", "/api/orgs"):
            if s.org_by_name(body["name"]) is not None:
                raise _Error(409, "Organization name taken")
            org_id = next(s.ids)
            s.orgs[org_id] = body["name"]
            s.members[org_id] = {1: "Admin"}  # the creator
            return 200, {"orgId": org_id, "message": "Organization created"}
        if m := re.fullmatch(r"/api/orgs/(\d+)", path):
            org_id = self._org(int(m[1]))
            if method == "DELETE":
                del s.orgs[org_id]
                for table in (s.members, s.datasources, s.dashboards, s.preferences):
                    table.pop(org_id, None)
                return 200, {"message": "Organization deleted"}
        if m := re.fullmatch(r"/api/orgs/(\d+)/users", path):
            org_id = self._org(int(m[1]))
            if method == "GET":
                return 200, [
                    {
                        "orgId": org_id,
                        "userId": uid,
                        "email": s.users[uid]["email"],
                        "login": s.users[uid]["login"],
                        "role": role,
                    }
                    for uid, role in sorted(s.members[org_id].items())
                ]
            if method == "POST":
                uid = self._user_id(body["loginOrEmail"])
                if uid in s.members[org_id]:
                    raise _Error(409, "User is already member of this organization")
                s.members[org_id][uid] = body["role"]
                return 200, {"message": "User added to organization", "userId": uid}
        if m := re.fullmatch(r"/api/orgs/(\d+)/users/(\d+)", path):
            org_id, uid = self._org(int(m[1])), int(m[2])
            if uid not in s.members[org_id]:
                raise _Error(404, "user not found")
            if method == "PATCH":
                s.members[org_id][uid] = body["role"]
                return 200, {"message": "Organization user updated"}
            if method == "DELETE":
                del s.members[org_id][uid]
                return 200, {"message": "User removed from organization"}
        if path == "/api/org/preferences":
            prefs = s.preferences.setdefault(
                org, {"theme": "", "homeDashboardUID": "", "timezone": "", "weekStart": ""}
            )
            if method == "GET":
                return 200, prefs
            if method == "PATCH":
                prefs.update(body)
                return 200, {"message": "Preferences updated"}
            if method == "PUT":  # omitted keys go back to their defaults
                s.preferences[org] = {k: body.get(k, "") for k in prefs}
                return 200, {"message": "Preferences updated"}
        if (method, path) == ("GET", "/api/users/lookup"):
            uid = self._user_id(query["loginOrEmail"][0])
            return 200, s.users[uid]
        if (method, path) == ("POST", "/api/admin/users"):
            if any(
                u["login"] == body["login"] or u["email"] == body["email"] for u in s.users.values()
            ):
                raise _Error(412, "User with same email or login already exists")
            uid = next(s.ids)
            s.users[uid] = {"id": uid, "login": body["login"], "email": body["email"]}
            s.members.setdefault(body.get("OrgId", 1), {})[uid] = "Viewer"
            return 200, {"id": uid, "message": "User created"}
        if m := re.fullmatch(r"/api/datasources/uid/([^/]+)", path):
            sources = s.datasources.setdefault(org, {})
            if m[1] not in sources:
                raise _Error(404, "Data source not found")
            if method == "GET":
                return 200, {k: v for k, v in sources[m[1]].items() if k != "secureJsonData"}
            if method == "PUT":
                kept = sources[m[1]].get("secureJsonData")
                sources[m[1]] = {**body, "id": sources[m[1]]["id"], "orgId": org}
                if "secureJsonData" not in body and kept:
                    sources[m[1]]["secureJsonData"] = kept
                return 200, {"message": "Datasource updated", "datasource": body}
        if (method, path) == ("POST", "/api/datasources"):
            sources = s.datasources.setdefault(org, {})
            if body["uid"] in sources or any(d["name"] == body["name"] for d in sources.values()):
                raise _Error(409, "data source with the same name or uid already exists")
            sources[body["uid"]] = {**body, "id": next(s.ids), "orgId": org}
            return 200, {"message": "Datasource added", "datasource": sources[body["uid"]]}
        if m := re.fullmatch(r"/api/dashboards/uid/([^/]+)", path):
            boards = s.dashboards.setdefault(org, {})
            if m[1] not in boards:
                raise _Error(404, "Dashboard not found")
            if method == "GET":
                return 200, {"dashboard": boards[m[1]], "meta": {"slug": m[1]}}
        if (method, path) == ("POST", "/api/dashboards/db"):
            boards = s.dashboards.setdefault(org, {})
            dashboard = body["dashboard"]
            old = boards.get(dashboard["uid"])
            if old is not None and not body.get("overwrite"):
                raise _Error(412, "A dashboard with the same uid already exists")
            version = (old["version"] + 1) if old else 1
            boards[dashboard["uid"]] = {
                **dashboard,
                "id": old["id"] if old else next(s.ids),
                "version": version,
            }
            return 200, {"uid": dashboard["uid"], "status": "success", "version": version}
        raise _Error(404, f"no such endpoint: {method} {path}")

    def _org(self, org_id: int) -> int:
        if org_id not in self.state.orgs:
            raise _Error(404, "Organization not found")
        return org_id

    def _user_id(self, login_or_email: str) -> int:
        for uid, user in self.state.users.items():
            if login_or_email.lower() in (user["login"].lower(), user["email"].lower()):
                return uid
        raise _Error(404, "user not found")
