"""``python -m agentd``: the command line."""

from agentd.cli import main

if __name__ == "__main__":
    main()
