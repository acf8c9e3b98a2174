from fastdenoise.cli import main

main()
