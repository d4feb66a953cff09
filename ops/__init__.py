"""Cross-cutting infrastructure: settings, logging, errors, Kafka plumbing, the embedded broker."""
