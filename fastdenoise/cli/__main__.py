from fastdenoise.__main__ import main

main()
