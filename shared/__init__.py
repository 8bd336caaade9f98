"""Redial's common library: settings, events, database, outbox, consumers, HTTP.

Nothing in this package imports a service; the services build on it.
"""
