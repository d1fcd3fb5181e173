"""Entry point for `python -m dropwarden`."""

from dropwarden.cli import main

if __name__ == "__main__":
    main()
