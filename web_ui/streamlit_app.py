"""Entry script for `streamlit run` (what `vera ui` starts)."""

from web_ui.app import run

run()
