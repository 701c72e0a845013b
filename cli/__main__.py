"""`python -m cli` is the `parley` command (the supervisor starts its processes this way)."""

from cli import main

if __name__ == "__main__":
    main()
