"""The interactive matting app: logic in :mod:`diffmatte.app.session` (no UI library needed),
the Gradio page in :mod:`diffmatte.app.ui` (``pip install -e ".[app]"``)."""
