from .tools.cli import app

app(prog_name="tvmconv")
