"""Single-task finetuning of an encoder directory on one task card (used by evaluation and export)."""
