"""Tests of the masking core: value maskers and PII detectors (pure, no database)."""
