"""One function per batch command: what `facebatch <command>` does, as a library call.

Each takes the command's inputs, a frozen options dataclass of its own settings and a `RunOptions`
(where shards run, how the run resumes), and returns a typed result. The typer command in
`facebatch.cli` parses arguments into these objects, calls the function and prints; `facebatch.project`,
`facebatch.sample`, ... are these functions, so a notebook and the CLI run the same code.
"""
