"""The `learnd` command line and the demo."""
