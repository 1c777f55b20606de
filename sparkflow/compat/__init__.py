"""Compatibility layers that let DAG files written for other orchestrators run on sparkflow unchanged."""
