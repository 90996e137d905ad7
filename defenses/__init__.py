"""Privacy defenses the photo owner applies before upload; one module per method family."""
