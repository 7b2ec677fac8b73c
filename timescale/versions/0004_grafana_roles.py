"""Grafana's database roles read the same dashboards' SQL, each seeing its own scope.

Dashboards name relations unqualified (`telemetry_1d`, `nodes`, `commands`); the role a
datasource logs in as decides what those names mean through its search_path:
- a tenant's role (`ensure_tenant_role`) gets `search_path = tenant_view, public`: the
  views filtered to its tenant (now including its commands) come first, and `public`
  only lends its functions (`time_bucket`); its tables stay denied to the role;
- `wattfleet_grafana_admin`, for the admin organization, reads the base tables of every
  tenant (never the nodes' command keys), read-only. It is created without LOGIN: the
  operator gives it a password (docs/operations.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TENANT_FILTER = (
    "(SELECT tr.tenant_id FROM public.tenant_roles tr WHERE tr.role_name = current_user)"
)
ADMIN_ROLE = "wattfleet_grafana_admin"
ADMIN_READS = (
    "tenants",
    "node_status",
    "telemetry",
    "telemetry_5m",
    "telemetry_1h",
    "telemetry_1d",
    "optimizer_decisions",
    "node_events",
    "commands",
    "dead_letters",
)
NODE_COLUMNS = "id, tenant_id, display_name, enabled, created_at"


def _ensure_tenant_role(search_path: bool) -> str:
    set_path = (
        "EXECUTE format('ALTER ROLE %I SET search_path = tenant_view, public', p_role);"
        if search_path
        else ""
    )
    return f"""
    CREATE OR REPLACE FUNCTION tenant_view.ensure_tenant_role(
        p_tenant_id bigint, p_role text, p_password text DEFAULT NULL)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $fn$
    DECLARE mapped bigint;
    BEGIN
        SELECT tenant_id INTO mapped FROM public.tenant_roles WHERE role_name = p_role;
        IF mapped IS NOT NULL AND mapped <> p_tenant_id THEN
            RAISE EXCEPTION 'role % already belongs to tenant %', p_role, mapped;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
            EXECUTE format('CREATE ROLE %I LOGIN', p_role);
        END IF;
        IF p_password IS NOT NULL THEN
            EXECUTE format('ALTER ROLE %I PASSWORD %L', p_role, p_password);
        END IF;
        EXECUTE format('ALTER ROLE %I INHERIT', p_role);
        {set_path}
        EXECUTE format('GRANT wattfleet_tenant TO %I', p_role);
        INSERT INTO public.tenant_roles (role_name, tenant_id) VALUES (p_role, p_tenant_id)
            ON CONFLICT (role_name) DO NOTHING;
    END
    $fn$
    """


def upgrade() -> None:
    op.execute("DROP VIEW IF EXISTS tenant_view.commands")
    op.execute(
        "CREATE VIEW tenant_view.commands WITH (security_barrier) AS"
        " SELECT id, node_id, tenant_id, type, params, state, detail, queued, issued_at,"
        f" expires_at, updated_at FROM public.commands WHERE tenant_id = {TENANT_FILTER}"
    )
    op.execute("GRANT SELECT ON tenant_view.commands TO wattfleet_tenant")
    op.execute(_ensure_tenant_role(search_path=True))
    op.execute(
        "REVOKE ALL ON FUNCTION tenant_view.ensure_tenant_role(bigint, text, text) FROM PUBLIC"
    )
    # Roles made before this revision get the search path too.
    op.execute(
        """
        DO $$ DECLARE r record; BEGIN
            FOR r IN SELECT role_name FROM public.tenant_roles LOOP
                EXECUTE format('ALTER ROLE %I SET search_path = tenant_view, public', r.role_name);
            END LOOP;
        END $$
        """
    )
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ADMIN_ROLE}')"
        f" THEN CREATE ROLE {ADMIN_ROLE} NOLOGIN; END IF; END $$"
    )
    op.execute(f"ALTER ROLE {ADMIN_ROLE} SET search_path = public")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ADMIN_ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(ADMIN_READS)} TO {ADMIN_ROLE}")
    op.execute(f"GRANT SELECT ({NODE_COLUMNS}) ON nodes TO {ADMIN_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON nodes, {', '.join(ADMIN_READS)} FROM {ADMIN_ROLE}")
    # The role itself stays: roles are cluster-wide and may serve another database.
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ADMIN_ROLE}")
    op.execute(
        """
        DO $$ DECLARE r record; BEGIN
            FOR r IN SELECT role_name FROM public.tenant_roles LOOP
                EXECUTE format('ALTER ROLE %I RESET search_path', r.role_name);
            END LOOP;
        END $$
        """
    )
    op.execute(_ensure_tenant_role(search_path=False))
    op.execute(
        "REVOKE ALL ON FUNCTION tenant_view.ensure_tenant_role(bigint, text, text) FROM PUBLIC"
    )
    op.execute("DROP VIEW IF EXISTS tenant_view.commands")
