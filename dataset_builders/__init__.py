"""dataset_builders package."""
