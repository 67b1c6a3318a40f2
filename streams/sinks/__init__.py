"""Where results go: the Redis read model (reader and sink) and Kafka record batches."""
