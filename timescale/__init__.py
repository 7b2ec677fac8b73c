"""TimescaleDB schema migrations (Alembic, raw SQL for TimescaleDB objects)."""
