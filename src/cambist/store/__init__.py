"""Persistence: SQLite by default, PostgreSQL (+ Redis) when several processes serve."""
