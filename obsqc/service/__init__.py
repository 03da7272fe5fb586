"""The service room: settings, FITS ingest and validation, batch ranking, and (later) API and workers."""
