"""learnd's adapters: everything that touches the outside world (Kafka, sockets, HTTP, disk)."""
