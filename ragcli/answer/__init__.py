"""Answering: the orchestrator (answering), sentence and span choice (extractive, spans, reading),
prompts, claim checks and guardrails, the answer value, ``ask --batch`` and replay of a record."""
