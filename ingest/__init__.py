"""The edge: answers the sale pixel at once and publishes raw events to Kafka."""
