"""Control API: users, node credentials, commands with their events, versioned node
configs, and the append-only, hash-chained audit log.

Command states move `pending -> sent -> received -> succeeded | failed | rejected`, or to
`expired` by the clock; `command_events` keeps every step, including answers that came
too late to change the state (`applied = false`).

The audit log refuses UPDATE, DELETE and TRUNCATE with a trigger; each row's `hash` is
SHA-256 over its content and the previous row's hash (computed by
`control_api.audit`), so an edit made with the trigger disabled is still detectable.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COMMAND_STATES = "'pending','sent','received','succeeded','failed','rejected','expired'"

STATEMENTS = [
    """
    CREATE TABLE IF NOT EXISTS users (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        email text NOT NULL,
        password_hash text NOT NULL,
        role text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
        tenant_id bigint REFERENCES tenants (id),
        totp_secret text,
        totp_enabled boolean NOT NULL DEFAULT false,
        disabled boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        -- Admins see every tenant; everyone else belongs to exactly one.
        CHECK ((role = 'admin') = (tenant_id IS NULL))
    )
    """,
    "CREATE UNIQUE INDEX IF NOT EXISTS users_email_idx ON users (lower(email))",
    # The HMAC key the API signs this node's commands with; never shown after enrollment.
    "ALTER TABLE nodes ADD COLUMN IF NOT EXISTS command_secret text",
    "ALTER TABLE nodes ADD COLUMN IF NOT EXISTS credentials_rotated_at timestamptz",
    f"""
    CREATE TABLE IF NOT EXISTS commands (
        id text PRIMARY KEY,
        node_id text NOT NULL REFERENCES nodes (id),
        tenant_id bigint NOT NULL REFERENCES tenants (id),
        type text NOT NULL,
        params jsonb NOT NULL,
        state text NOT NULL CHECK (state IN ({COMMAND_STATES})),
        detail text NOT NULL DEFAULT '',
        queued boolean NOT NULL DEFAULT false,
        issued_by bigint REFERENCES users (id) ON DELETE SET NULL,
        idempotency_key text,
        issued_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (issued_by, idempotency_key)
    )
    """,
    "CREATE INDEX IF NOT EXISTS commands_node_idx ON commands (node_id, issued_at DESC)",
    "CREATE INDEX IF NOT EXISTS commands_open_idx ON commands (expires_at)"
    " WHERE state IN ('pending', 'sent', 'received')",
    f"""
    CREATE TABLE IF NOT EXISTS command_events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        command_id text NOT NULL REFERENCES commands (id),
        ts timestamptz NOT NULL DEFAULT now(),
        state text NOT NULL CHECK (state IN ({COMMAND_STATES})),
        source text NOT NULL CHECK (source IN ('api', 'node', 'clock')),
        detail text NOT NULL DEFAULT '',
        applied boolean NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS command_events_command_idx ON command_events (command_id, id)",
    """
    CREATE TABLE IF NOT EXISTS node_configs (
        node_id text NOT NULL REFERENCES nodes (id),
        version integer NOT NULL CHECK (version >= 1),
        config jsonb NOT NULL,
        command_id text REFERENCES commands (id),
        created_by bigint REFERENCES users (id) ON DELETE SET NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (node_id, version)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_log (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        ts timestamptz NOT NULL,
        actor_user_id bigint,
        actor_email text,
        tenant_id bigint,
        node_id text,
        action text NOT NULL,
        params jsonb NOT NULL DEFAULT '{}',
        outcome text NOT NULL,
        status_code integer,
        client_addr text,
        prev_hash text NOT NULL,
        hash text NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_log_tenant_idx ON audit_log (tenant_id, id)",
    """
    CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
    END
    $$
    """,
    "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log"
    " FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()",
    "DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log"
    " FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()",
]


TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)


def _nodes_view(columns: str) -> list[str]:
    # Dropped and re-created, never `CREATE OR REPLACE`: a view cannot lose columns,
    # and `SELECT *` would hand tenants the command keys added here.
    return [
        "DROP VIEW IF EXISTS tenant_view.nodes",
        "CREATE VIEW tenant_view.nodes WITH (security_barrier) AS"
        f" SELECT {columns} FROM public.nodes WHERE tenant_id = {TENANT_FILTER}",
        "GRANT SELECT ON tenant_view.nodes TO wattfleet_tenant",
    ]


def upgrade() -> None:
    for statement in STATEMENTS + _nodes_view("id, tenant_id, display_name, enabled, created_at"):
        op.execute(statement)


def downgrade() -> None:
    for statement in (
        "DROP TABLE IF EXISTS audit_log",
        "DROP FUNCTION IF EXISTS audit_log_refuse_change()",
        "DROP TABLE IF EXISTS node_configs",
        "DROP TABLE IF EXISTS command_events",
        "DROP TABLE IF EXISTS commands",
        "DROP VIEW IF EXISTS tenant_view.nodes",
        "ALTER TABLE nodes DROP COLUMN IF EXISTS credentials_rotated_at",
        "ALTER TABLE nodes DROP COLUMN IF EXISTS command_secret",
        "DROP TABLE IF EXISTS users",
        *_nodes_view("*"),  # as revision 0001 made it
    ):
        op.execute(statement)
