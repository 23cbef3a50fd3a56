"""The reference state engine: the canonical order state machine and a traffic simulator."""
