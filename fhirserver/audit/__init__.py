"""The audit log: AuditEvents in a keyed chain anchored by checkpoints outside the
database, searches kept without identities, and the access log without them too."""
