"""Access: accounts, roles and scope, wall tokens, and the audit log."""
