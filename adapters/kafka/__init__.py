"""Kafka: the event source (kafka-python or confluent-kafka, in-process or in a consumer process), the dead-letter sink, topics, the embedded broker."""
