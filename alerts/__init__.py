"""Alert notifications and where they go: console, JSON Lines, robots."""
