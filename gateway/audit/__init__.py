"""The audit log: structlog set-up, the hash chain, its verification and the readable story."""
