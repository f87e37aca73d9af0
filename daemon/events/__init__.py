"""Events in: decoding and validation, micro-batching, a seeded synthetic stream."""
