"""Training, kept apart from the codec: nothing in the codec imports this package."""
