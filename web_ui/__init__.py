"""The Streamlit dashboard: browse, inspect, compare and train VeRA adapters through the registry's HTTP client."""

from pathlib import Path

#: The file `streamlit run` executes.
ENTRY = Path(__file__).with_name("streamlit_app.py")
