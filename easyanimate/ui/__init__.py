"""The gradio web UI: `controller.py` (models, validation, generation) and `app.py` (the page)."""
