"""The audit log: one typed record per request (trace), written by answering, read by replay,
``traces`` and evaluation."""
