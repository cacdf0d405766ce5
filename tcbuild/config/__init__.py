"""What the operator writes: the recipe (its model and its reader), the inventory, lock files."""
