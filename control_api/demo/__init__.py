"""`wattfleet demo`: the whole hub on this machine with simulated sites, for trying it out.

It starts real processes on free ports of 127.0.0.1: TimescaleDB (the embedded one in
`timescale/embedded/` unless `WATTFLEET_DATABASE_URL` names a real server), the
migrations, Mosquitto with this repository's config and fresh accounts, a collector, the
control API with a fresh admin, and simulated sites enrolled through the API, each a
SunSpec simulator read by a real edge agent. The test harness starts the same services
with the same code (`tests/support/`).

It lives in the control API's package because it is a hub operator's tool that needs the
hub's dependencies (the `hub` extra: migrations, database driver) and drives the control
API as an operator would (create-admin, login, enrollment, the broker's dynamic-security
accounts from `control_api.broker_security`); the edge package must stay installable on a
Pi without any of that. It runs from a clone of the repository (an editable install),
because Mosquitto's config and the embedded database's server are read from the clone.
"""
