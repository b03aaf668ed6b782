"""The agent in the box: an AI coding agent that works an issue in its work tree.

- `tools`: what it can do (files, a sandboxed shell, finish), bounded.
- `loop`: the agent loop over a chat model, its transcript, its prompts.
"""
