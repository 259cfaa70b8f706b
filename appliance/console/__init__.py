"""The central console: a Flask app (fleet pages, auth) and the MQTT ingest worker.

`app.create_app(config)` builds the web app; `ingest.Ingest(config, db)` fills the database it
reads. The factory lives in `appliance.console.app`, not here, so that the ingest worker and
every other command importing this package do not load Flask.
"""
