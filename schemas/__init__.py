"""The contract between the edge and the projector: events, topics, settings helpers, DDL."""
