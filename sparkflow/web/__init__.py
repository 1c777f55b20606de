"""The web UI and REST API (FastAPI + Jinja2): thin, reads through metastore.queries (DESIGN.md section 6)."""
