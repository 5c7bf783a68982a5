"""Celery wrappers around Pudato's handlers: one task module per handler queue."""
