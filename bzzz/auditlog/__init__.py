"""The tamper-evident audit log: a signed hash chain per author, on disk, replicated.

- `entry`: an entry, its canonical form, hash and signature.
- `segments`: one author's chain on disk (checksummed records, torn-tail recovery).
- `log`: the writer thread with group commit, and `AuditLog`, this node's own log.
- `replication`: replicas of other nodes' logs over `/bzzz/log/1.0.0`, fork detection.
- `reader`: the layout on disk, read-only access and verification for the CLI.

Submodules are imported directly: a process that only appends need not load libp2p.
"""
