"""The control API: tenants, users, node enrollment, audited signed commands."""
