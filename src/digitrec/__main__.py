from digitrec.cli import run

run()
