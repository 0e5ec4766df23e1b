"""The pipeline definitions (``@dsl.pipeline`` functions); the CLI, compiler and runners that
work on them live one folder up."""
