from bot.cli import main

if __name__ == "__main__":  # not when a drawing process (multiprocessing "spawn") imports it
    raise SystemExit(main())
