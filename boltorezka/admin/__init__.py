"""Operator tasks run from the command line against a deployment's own database."""
