"""Grafana for wattfleet: dashboards generated as code (`python -m grafana.build`),
provisioning files, and the datasource identities they share."""
