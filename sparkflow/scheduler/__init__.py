"""Scheduling: pure decisions (planner) and the loop that applies them through the store and an executor."""
