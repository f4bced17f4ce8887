from xhuma.cli import main

main()
