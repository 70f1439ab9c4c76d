"""The server's routes, one router per domain: page.py (the drawing page), status.py (health, readiness, the
model, metrics), predict.py (single digits, batches), read.py (lines of digits), explain.py (attributions).

Routers import the plumbing below them (http.py, records.py, state.py, metrics.py), never app.py; what they
share (the model, the request threads, the settings) comes from `Depends(state.server_state)`."""
