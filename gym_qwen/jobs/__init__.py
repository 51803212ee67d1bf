"""One entry point per `gym-qwen` command: each parses its typed config, calls the library and prints."""
