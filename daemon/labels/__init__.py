"""Delayed labels: the join of unlabelled events (or served predictions) with labels that
arrive later on their own topic."""
