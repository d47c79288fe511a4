from critwin.cli import main

# Guarded: the demo's worker processes (multiprocessing "spawn") import the main module again.
if __name__ == "__main__":
    main()
