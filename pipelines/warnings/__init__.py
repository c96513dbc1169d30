"""Early warning (研判预警): rules (a registry), the warning lifecycle and the engine that ticks
them."""
