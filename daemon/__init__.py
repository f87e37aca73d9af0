"""learnd's core: validation, online learning, drift monitoring, snapshots. No I/O lives here."""
