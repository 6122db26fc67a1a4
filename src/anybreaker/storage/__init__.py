"""Storages: where breakers keep their state."""
