"""abstractruntime.integrations.abstractcore."""
