"""Command-line tools: convert an upstream checkpoint, write a dataset split file."""
