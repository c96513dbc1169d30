"""Supervision and assessment (监督考核): metrics, scorecards and exports (a registry of
formats)."""
