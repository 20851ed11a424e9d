"""PII redaction with Presidio, before anything is stored."""
