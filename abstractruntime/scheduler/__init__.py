"""abstractruntime.scheduler."""
