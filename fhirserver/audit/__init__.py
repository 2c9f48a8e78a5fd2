"""The audit log: AuditEvents in a hash chain, and reading them back."""
