"""The command line and what it drives: demo, simulator, producer, what-if, event files."""
