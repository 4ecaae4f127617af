"""modeling_gadms package."""
