"""The `liteseg` command: all argument parsing, progress bars and printing for users."""
