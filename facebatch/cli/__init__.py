"""The typer command-line interface: parses, validates, calls the library. The library never imports it."""
