"""The audit log read by what it is asked about: an index per filter of `GET /audit`
(actor, action, outcome, node, time; tenant has one since 0002), each ending in `id` so
a filtered page, newest first, is read from the index alone; and the admin
organization's Grafana role may read the audit log for its "Audit" dashboard.

That role reads the columns that say who did what, when, from where and how it ended,
never `params`: a refused request's query string is whatever its caller sent, and the
hash columns serve only the chain check.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ADMIN_ROLE = "wattfleet_grafana_admin"
ADMIN_COLUMNS = (
    "id, ts, actor_user_id, actor_email, tenant_id, node_id, action, outcome, status_code,"
    " client_addr"
)
INDEXES = {
    "audit_log_actor_user_idx": "(actor_user_id, id)",
    "audit_log_actor_email_idx": "(actor_email, id)",
    "audit_log_action_idx": "(action, id)",
    "audit_log_outcome_idx": "(outcome, id)",
    "audit_log_node_idx": "(node_id, id)",
    "audit_log_ts_idx": "(ts, id)",
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON audit_log {columns}")
    op.execute(f"GRANT SELECT ({ADMIN_COLUMNS}) ON audit_log TO {ADMIN_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON audit_log FROM {ADMIN_ROLE}")
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
