"""Evaluation: scoring on full utterances and pairs (separation.py, enhancement.py) and the one
report writer (report.py)."""
