from sparkflow.cli import entry

entry()
