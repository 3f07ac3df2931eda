"""The simulator: paired gateway processes, fault proxy, scenarios, load, metrics and reports."""
