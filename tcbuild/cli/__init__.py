"""The command line: the grammar (argparse), the commands (parse, call the library, print), doctor.
The console script is `tcbuild.cli.commands:main`."""
