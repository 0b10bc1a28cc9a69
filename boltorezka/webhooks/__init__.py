"""Webhooks: operators' endpoints, the signed deliveries of events to them, and their outbox."""
