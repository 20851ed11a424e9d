"""Consumer-group workers: inference, redaction and training."""
