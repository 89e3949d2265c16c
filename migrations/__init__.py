"""Alembic environment and versions (packaged so an installed service can migrate itself)."""
