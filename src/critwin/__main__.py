from critwin.cli import main

main()
