"""Counter-attacks: what the platform does to beat a defense; one module per family."""
