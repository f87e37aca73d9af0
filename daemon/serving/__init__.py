"""Serving: the publish gate, compressed forms, the immutable snapshot behind one reference, answering requests."""
