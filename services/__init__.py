"""Redial's services. Each is its own package and process; none imports
another (checked by import-linter): they meet through events and HTTP."""
