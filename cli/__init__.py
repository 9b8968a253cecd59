"""The abstractruntime command line (typer + rich), installed as abstractruntime.cli."""
