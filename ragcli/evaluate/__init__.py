"""Evaluation: golden sets, running them in process, metrics, the gate, calibration,
perturbations, BEIR, ragas, and what ``ragcli tune`` learns from and decides by."""
