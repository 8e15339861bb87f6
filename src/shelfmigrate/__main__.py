"""python -m shelfmigrate"""

from .cli import main

main()
