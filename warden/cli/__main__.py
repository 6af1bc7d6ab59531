from warden.cli import app

app()
