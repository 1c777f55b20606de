"""Executors run queued task instances: sequential (in-process), local (a process per task)."""
